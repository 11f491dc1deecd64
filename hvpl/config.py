"""Scenario and model configuration: YAML files in ``config/``, merged into one run config.

A run config is a plain dict::

    {"scenario": {...config/scenarios/NAME.yaml...},
     "model":    {...config/models/<scenario.model>.yaml...},
     "method":   "hvpl"}

``--set a.b.c=value`` overrides any key (value parsed as YAML), e.g. ``--set scenario.train.inc_iters=50``.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from hvpl.utils.errors import HVPLError

REPO_CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def config_dir() -> Path:
    """``$HVPL_CONFIG_DIR`` if set, else the repository's ``config/``."""
    return Path(os.environ.get("HVPL_CONFIG_DIR", REPO_CONFIG_DIR))


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise HVPLError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HVPLError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise HVPLError(f"{path}: expected a mapping at the top level")
    return data


def _resolve(name_or_path: str, kind: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    path = config_dir() / kind / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (config_dir() / kind).glob("*.yaml"))
        raise HVPLError(f"unknown {kind[:-1]} '{name_or_path}' (no {path}); known: {', '.join(known)}")
    return path


REQUIRED_SCENARIO_KEYS = ("name", "dataset", "num_classes", "base", "increment", "model", "prompts_per_task",
                          "logit_deltas", "detections_per_video", "train", "input", "split", "data")


def load_scenario(name_or_path: str) -> dict:
    path = _resolve(name_or_path, "scenarios")
    scenario = load_yaml(path)
    missing = [k for k in REQUIRED_SCENARIO_KEYS if k not in scenario]
    if missing:
        raise HVPLError(f"{path}: missing keys {missing}")
    rest = scenario["num_classes"] - scenario["base"]
    if scenario["base"] <= 0 or scenario["increment"] <= 0 or rest < 0 or rest % scenario["increment"]:
        raise HVPLError(f"{path}: num_classes - base must be a non-negative multiple of increment "
                        f"(got K={scenario['num_classes']}, B={scenario['base']}, I={scenario['increment']})")
    return scenario


def load_model_config(name_or_path: str) -> dict:
    return load_yaml(_resolve(name_or_path, "models"))


def set_by_path(cfg: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = cfg
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            raise HVPLError(f"--set {dotted}: '{key}' is not a config section")
        node = node[key]
    if keys[-1] not in node:
        raise HVPLError(f"--set {dotted}: unknown key '{keys[-1]}'")
    node[keys[-1]] = value


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    cfg = copy.deepcopy(cfg)
    for item in overrides or ():
        if "=" not in item:
            raise HVPLError(f"--set {item}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        set_by_path(cfg, key.strip(), yaml.safe_load(raw))
    return cfg


def load_run_config(scenario: str, method: str = "hvpl", model: str | None = None,
                    overrides: Iterable[str] = ()) -> dict:
    """Scenario + its model size (or ``model``) + method, with ``--set`` overrides applied."""
    from hvpl.continual.methods import get_method

    get_method(method)
    sc = load_scenario(scenario)
    cfg = {"scenario": sc, "model": load_model_config(model or sc["model"]), "method": method}
    return apply_overrides(cfg, overrides)


def num_steps(scenario: dict) -> int:
    """N = 1 + (K - B) / I."""
    return 1 + (scenario["num_classes"] - scenario["base"]) // scenario["increment"]


def classes_per_step(scenario: dict) -> list[int]:
    return [scenario["base"]] + [scenario["increment"]] * (num_steps(scenario) - 1)
