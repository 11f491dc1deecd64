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
from hvpl.utils.schema import check_schema

REPO_CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


def config_dir() -> Path:
    """``$HVPL_CONFIG_DIR`` if set, else the repository's ``config/``."""
    return Path(os.environ.get("HVPL_CONFIG_DIR", REPO_CONFIG_DIR))


def config_dirs() -> list[Path]:
    """Where scenario and model files are looked up, in order: ``$HVPL_CONFIG_DIR`` (if set), then the
    repository's ``config/`` (so a folder of one's own scenarios still finds the shipped models and scenarios)."""
    return list(dict.fromkeys([config_dir(), REPO_CONFIG_DIR]))


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise HVPLError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HVPLError(f"{path}: invalid YAML: {yaml_error_text(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise HVPLError(f"{path}: invalid YAML (not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset "
                        f"{exc.start})") from exc
    if not isinstance(data, dict):
        raise HVPLError(f"{path}: expected a mapping at the top level")
    return data


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """A PyYAML error in one line: what is wrong and where (1-based line and column)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def _resolve(name_or_path: str, kind: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    paths = [d / kind / f"{name_or_path}.yaml" for d in config_dirs()]
    for path in paths:
        if path.is_file():
            return path
    known = sorted({p.stem for d in config_dirs() for p in (d / kind).glob("*.yaml")})
    raise HVPLError(f"unknown {kind[:-1]} '{name_or_path}' (no {' or '.join(map(str, paths))}); "
                    f"known: {', '.join(known)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_scenario(scenario: dict, where: str) -> None:
    """The scenario schema (hvpl/schemas/scenario.schema.yaml: keys, kinds, ranges) and what it cannot say:
    class_order lists num_classes ids, input.crop is [min, max] with min <= max, num_classes - base is a
    non-negative multiple of increment. HVPLError naming ``where`` and the key."""
    check_schema(scenario, "scenario", where)
    order = scenario.get("class_order")
    if order is not None and len(order) != scenario["num_classes"]:
        raise HVPLError(f"{where}: class_order lists {len(order)} category ids, num_classes is "
                        f"{scenario['num_classes']}")
    crop = (scenario.get("input") or {}).get("crop")
    if isinstance(crop, list) and crop[0] > crop[1]:
        raise HVPLError(f"{where}: input.crop = {crop!r}: expected null or [min, max] with min <= max")
    rest = scenario["num_classes"] - scenario["base"]
    if rest < 0 or rest % scenario["increment"]:
        raise HVPLError(f"{where}: num_classes - base must be a non-negative multiple of increment "
                        f"(got K={scenario['num_classes']}, B={scenario['base']}, I={scenario['increment']})")


def check_model_config(model: dict, where: str) -> None:
    """The model schema (hvpl/schemas/model.schema.yaml); HVPLError naming ``where`` and the key."""
    check_schema(model, "model", where)


def load_scenario(name_or_path: str) -> dict:
    path = _resolve(name_or_path, "scenarios")
    scenario = load_yaml(path)
    check_scenario(scenario, str(path))
    if scenario["name"] != path.stem:
        # results, split files and checkpoints are named after `name`: a copied file keeping its old name
        # would run (and record) the other scenario's name
        raise HVPLError(f"{path}: entry 'name' is '{scenario['name']}'; it must be the file name '{path.stem}'")
    return scenario


def load_model_config(name_or_path: str) -> dict:
    path = _resolve(name_or_path, "models")
    model = load_yaml(path)
    check_model_config(model, str(path))
    return model


def set_by_path(cfg: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = cfg
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            raise HVPLError(f"--set {dotted}: '{key}' is not a config section")
        node = node[key]
    if keys[-1] not in node:
        raise HVPLError(f"--set {dotted}: unknown key '{keys[-1]}'")
    current = node[keys[-1]]
    if isinstance(current, float) and not isinstance(current, bool) and isinstance(value, str):
        value = _yaml11_float(value)
    if not _same_kind(current, value):
        raise HVPLError(f"--set {dotted}={value!r}: expected {_kind_name(current)} like the current value "
                        f"{current!r}")
    node[keys[-1]] = value


def _yaml11_float(text: str) -> float | str:
    """``1e-4`` as a number: YAML 1.1 (PyYAML) reads exponents without a dot as strings."""
    try:
        return float(text)
    except ValueError:
        return text


def _kind_name(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if _is_number(value):
        return "an integer" if isinstance(value, int) else "a number"
    return {str: "a string", list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def _same_kind(current: Any, value: Any) -> bool:
    """Whether ``value`` may replace ``current``: null either way (optional keys), else the same YAML kind (an
    integer where a float is)."""
    if current is None or value is None:
        return True
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, float):
        return _is_number(value)
    return type(value) is type(current)


def apply_overrides(cfg: dict, overrides: Iterable[str]) -> dict:
    cfg = copy.deepcopy(cfg)
    for item in overrides or ():
        if "=" not in item:
            raise HVPLError(f"--set {item}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise HVPLError(f"--set {item}: the value is not valid YAML: {yaml_error_text(exc)}") from exc
        set_by_path(cfg, key.strip(), value)
    return cfg


def load_run_config(scenario: str, method: str = "hvpl", model: str | None = None,
                    overrides: Iterable[str] = ()) -> dict:
    """Scenario + its model size (or ``model``) + method, with ``--set`` overrides applied."""
    from hvpl.continual.methods import get_method

    get_method(method)
    sc = load_scenario(scenario)
    cfg = {"scenario": sc, "model": load_model_config(model or sc["model"]), "method": method}
    cfg = apply_overrides(cfg, overrides)
    if overrides:
        check_scenario(cfg["scenario"], f"scenario '{sc['name']}' with --set")
        check_model_config(cfg["model"], f"model '{cfg['model'].get('name')}' with --set model.")
    return cfg


def num_steps(scenario: dict) -> int:
    """N = 1 + (K - B) / I."""
    return 1 + (scenario["num_classes"] - scenario["base"]) // scenario["increment"]


def classes_per_step(scenario: dict) -> list[int]:
    return [scenario["base"]] + [scenario["increment"]] * (num_steps(scenario) - 1)
