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
        raise HVPLError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise HVPLError(f"{path}: expected a mapping at the top level")
    return data


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


REQUIRED_SCENARIO_KEYS = ("name", "dataset", "num_classes", "base", "increment", "model", "prompts_per_task",
                          "logit_deltas", "detections_per_video", "train", "input", "split", "data")


# Values checked after loading and after --set: dotted key -> (kind, bound). Kinds: "int" integer >= bound,
# "num" number >= bound, "pos" number > 0, "pos?" null or number > 0, "frac" number in (0, 1], "unit" number in
# [0, 1], "bool" true/false, "ints" a non-empty list of integers >= bound, "ints?" null or such a list. Absent keys pass.
SCENARIO_VALUE_RULES = {
    "num_classes": ("int", 1), "base": ("int", 1), "increment": ("int", 1), "prompts_per_task": ("int", 1),
    "detections_per_video": ("int", 1), "train.step0_iters": ("int", 1), "train.inc_iters": ("int", 1),
    "train.step0_lr_drop": ("int", 0), "train.lr": ("pos", None), "train.weight_decay": ("num", 0),
    "train.backbone_lr_mult": ("num", 0), "train.clip_grad": ("pos?", None), "train.batch_size": ("int", 1),
    "train.frames_step0": ("int", 1), "train.frames_inc": ("int", 1), "train.frame_range": ("int", 0),
    "train.ogc_threshold": ("frac", None), "train.ogc_samples": ("int", 1), "train.checkpoint_period": ("int", 0),
    "train.log_period": ("int", 1),
    "input.min_size_train": ("ints", 1), "input.max_size_train": ("int", 1), "input.min_size_test": ("int", 1),
    "input.max_size_test": ("int", 1), "input.aug_resize": ("ints?", 1), "input.aug_max_size": ("int", 1),
    "input.aug_prob": ("unit", None), "input.crop": ("ints?", 1),
}
MODEL_VALUE_RULES = {
    "hidden_dim": ("int", 1), "classifier_layers": ("int", 1), "backbone.freeze_at": ("int", 0),
    "pixel_decoder.num_layers": ("int", 0), "pixel_decoder.num_heads": ("int", 1),
    "pixel_decoder.num_points": ("int", 1), "pixel_decoder.ffn_dim": ("int", 1),
    "frame_decoder.num_layers": ("int", 1), "frame_decoder.num_heads": ("int", 1),
    "frame_decoder.ffn_dim": ("int", 1), "frame_decoder.num_queries": ("int", 1),
    "frame_decoder.mask_mlp_layers": ("int", 1), "video_decoder.num_queries": ("int", 1),
    "video_decoder.enc_layers": ("int", 0), "video_decoder.dec_layers": ("int", 1),
    "video_decoder.num_heads": ("int", 1), "video_decoder.ffn_dim": ("int", 1),
    "video_decoder.num_frame_layers_train": ("int", 1), "video_decoder.tree_scan.d_state": ("int", 1),
    "video_decoder.tree_scan.expand": ("int", 1), "video_decoder.tree_scan.mlp_ratio": ("pos", None),
    "video_decoder.tree_scan.drop_path": ("unit", None), "loss.class_weight": ("num", 0),
    "loss.mask_weight": ("num", 0), "loss.dice_weight": ("num", 0), "loss.sim_weight": ("num", 0),
    "loss.no_object_weight": ("num", 0), "loss.num_points": ("int", 1), "loss.oversample_ratio": ("num", 1),
    "loss.importance_sample_ratio": ("unit", None), "inference.chunk_frames": ("int", 1),
    "inference.authors_compat": ("bool", None),
}
_KIND_TEXT = {"int": "an integer >= {}", "num": "a number >= {}", "pos": "a number > 0",
              "pos?": "null or a number > 0", "frac": "a number in (0, 1]", "unit": "a number in [0, 1]",
              "ints": "a non-empty list of integers >= {}", "ints?": "null or a non-empty list of integers >= {}",
              "bool": "true or false"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value_ok(value: Any, kind: str, bound) -> bool:
    if kind.endswith("?") and value is None:
        return True
    if kind == "bool":
        return isinstance(value, bool)
    if kind.startswith("ints"):
        return isinstance(value, list) and bool(value) and all(_value_ok(v, "int", bound) for v in value)
    if not _is_number(value) or (kind == "int" and not isinstance(value, int)):
        return False
    if kind in ("int", "num"):
        return value >= bound
    if kind == "unit":
        return 0 <= value <= 1
    return 0 < value <= 1 if kind == "frac" else value > 0


def check_values(cfg: dict, rules: dict, where: str) -> None:
    """HVPLError naming ``where`` and the key for the first value of ``cfg`` breaking ``rules``."""
    for dotted, (kind, bound) in rules.items():
        node = cfg
        *sections, key = dotted.split(".")
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and key in node and not _value_ok(node[key], kind, bound):
            raise HVPLError(f"{where}: {dotted} = {node[key]!r}: expected {_KIND_TEXT[kind].format(bound)}")


def check_scenario(scenario: dict, where: str) -> None:
    """Required keys, value kinds/ranges (SCENARIO_VALUE_RULES), numeric logit_deltas and B-I consistency;
    HVPLError naming ``where`` and the key."""
    missing = [k for k in REQUIRED_SCENARIO_KEYS if k not in scenario]
    if missing:
        raise HVPLError(f"{where}: missing keys {missing}")
    check_values(scenario, SCENARIO_VALUE_RULES, where)
    deltas = scenario["logit_deltas"]
    if not isinstance(deltas, list) or not deltas or not all(_is_number(d) for d in deltas):
        raise HVPLError(f"{where}: logit_deltas = {deltas!r}: expected a non-empty list of numbers")
    crop = (scenario.get("input") or {}).get("crop")
    if isinstance(crop, list) and (len(crop) != 2 or crop[0] > crop[1]):
        raise HVPLError(f"{where}: input.crop = {crop!r}: expected null or [min, max] with min <= max")
    rest = scenario["num_classes"] - scenario["base"]
    if rest < 0 or rest % scenario["increment"]:
        raise HVPLError(f"{where}: num_classes - base must be a non-negative multiple of increment "
                        f"(got K={scenario['num_classes']}, B={scenario['base']}, I={scenario['increment']})")


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
    check_values(model, MODEL_VALUE_RULES, str(path))
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
        set_by_path(cfg, key.strip(), yaml.safe_load(raw))
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
        check_values(cfg["model"], MODEL_VALUE_RULES, f"model '{cfg['model'].get('name')}' with --set model.")
    return cfg


def num_steps(scenario: dict) -> int:
    """N = 1 + (K - B) / I."""
    return 1 + (scenario["num_classes"] - scenario["base"]) // scenario["increment"]


def classes_per_step(scenario: dict) -> list[int]:
    return [scenario["base"]] + [scenario["increment"]] * (num_steps(scenario) - 1)
