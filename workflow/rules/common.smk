# Shared helpers: the validated config turned into runs, and the path functions every rule uses (the rules'
# input functions and command arguments: inputs.smk).
#
# Nothing here runs a job. Everything is computed once at parse time from config/config.yaml (or the
# --configfile given) and the scenario YAML files in config/scenarios/.

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(workflow.basedir)))  # the repository's hvpl package, even without `pip install -e`

from hvpl.config import load_run_config, num_steps
from hvpl.continual.growth import check_model_builds
from hvpl.continual.methods import METHODS, get_method
from hvpl.utils.errors import HVPLError


RESULTS = config["results_dir"].rstrip("/")
# logs and benchmark TSVs live beside the results they belong to: runs with their own results_dir do not
# overwrite each other's
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
BASE_PREFIX = "_base_"
# Results of class order k >= 1 of scenario NAME live under NAME@order{k} (results/NAME@order1/..., the split in
# results/data/NAME@order1/); order 0, the scenario's own order, keeps the plain NAME, so results made before
# orders existed are order 0's and are not redone. "@" cannot appear in a scenario name (config schema).
ORDER_SEP = "@order"
# Scenario keys that `hvpl synth` / `hvpl split` take on their command line (the rest of the data-side
# keys cannot be overridden from the workflow: make a new scenario file instead).
SYNTH_FLAGS = {f"scenario.synthetic.{k}": k.replace("_", "-")
               for k in ("num_videos", "num_frames", "height", "width", "seed")}
SPLIT_FLAGS = {"scenario.split.seed": "seed"}
FIXED_DATA_KEYS = ("scenario.name", "scenario.dataset", "scenario.num_classes", "scenario.base",
                   "scenario.increment", "scenario.class_order", "scenario.split.", "scenario.synthetic.",
                   "scenario.data.")

wildcard_constraints:
    scenario=r"[^/]+",
    method=r"[^/]+",
    seed=r"\d+",
    step=r"\d+",


def config_error(key, message):
    """Stop before any job, naming the config key."""
    raise WorkflowError(f"config key '{key}': {message}")


def _override_items(scenario):
    """The per-scenario `overrides` of the config as (dotted key, value) pairs."""
    items = (config.get("overrides") or {}).get(scenario) or {}
    for key in items:
        if not key.startswith(("scenario.", "model.")):
            config_error(f"overrides.{scenario}.{key}", "must start with 'scenario.' or 'model.'")
        fixed = key not in SYNTH_FLAGS and key not in SPLIT_FLAGS and key.startswith(FIXED_DATA_KEYS)
        if fixed:
            config_error(f"overrides.{scenario}.{key}", "changes the data or split, which `hvpl synth/split` "
                         "cannot take on the command line; write a new scenario file in config/scenarios/")
    return list(items.items())


def set_item(key, value):
    """`KEY=VALUE` for `hvpl --set`, the value in YAML flow style (as the config wrote it)."""
    return f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"


def _digest(obj):
    """A short content digest of a JSON-able object (folder names, params rerun triggers)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_scenarios():
    """{name: effective run config {"scenario", "model", ...}} for every configured scenario (overrides applied)."""
    loaded = {}
    for name in config["scenarios"]:
        sets = [set_item(k, v) for k, v in _override_items(name)]
        try:
            cfg = load_run_config(name, "hvpl", config.get("model"), sets)
        except HVPLError as exc:
            key = f"overrides.{name}" if sets and "--set" in str(exc) else "scenarios"
            config_error(key, str(exc))
        if any(item.startswith("model.") for item in sets):
            try:
                check_model_builds(cfg)
            except HVPLError as exc:
                config_error(f"overrides.{name}", str(exc))
        loaded[name] = cfg
    return loaded


def _check_per_scenario_keys():
    """`overrides` and `data_roots` may only name scenarios listed under `scenarios` (a typo would be ignored)."""
    for section in ("overrides", "data_roots"):
        for name in config.get(section) or {}:
            if name not in config["scenarios"]:
                config_error(f"{section}.{name}", f"'{name}' is not one of the configured scenarios "
                             f"{config['scenarios']}")


_check_per_scenario_keys()
RUN_CONFIGS = _load_scenarios()
SCENARIOS = {name: cfg["scenario"] for name, cfg in RUN_CONFIGS.items()}
SEEDS = [int(s) for s in config["seeds"]]
ORDERS = [int(k) for k in config.get("orders") or [0]]


def split_key(scenario, order):
    """The results folder name of (scenario, class order): NAME for order 0, NAME@order{k} otherwise."""
    return scenario if int(order) == 0 else f"{scenario}{ORDER_SEP}{int(order)}"


# {folder name: (scenario, order)} of every configured split
SPLITS = {split_key(sc, k): (sc, k) for sc in SCENARIOS for k in ORDERS}


def scenario_of(key):
    """The scenario name of a results folder name (see split_key)."""
    return key.split(ORDER_SEP, 1)[0]


def order_of(key):
    """The class order of a results folder name (see split_key)."""
    return int(key.split(ORDER_SEP, 1)[1]) if ORDER_SEP in key else 0
METHOD_NAMES = list(dict.fromkeys(config["methods"]))


def base_method(variant):
    """The method whose name trains the shared step 0 of a base variant (first in registry order)."""
    names = [m.name for m in METHODS.values() if m.base_variant == variant and not m.joint]
    if not names:
        variants = sorted({m.base_variant for m in METHODS.values() if not m.joint})
        raise WorkflowError(f"{BASE_PREFIX}{variant}: no method trains a shared step 0 of variant '{variant}' "
                            f"(variants: {', '.join(variants)})")
    return names[0]


def method_of(name):
    """The Method of a results folder name: a method, or `_base_<variant>` for a shared step 0."""
    if name.startswith(BASE_PREFIX):
        return get_method(base_method(name[len(BASE_PREFIX):]))
    return get_method(name)


def n_steps(scenario):
    return num_steps(SCENARIOS[scenario_of(scenario)])


def run_steps(scenario, method):
    """Step indices a run has: every step, or only the final one for joint training."""
    n = n_steps(scenario)
    return [n - 1] if method_of(method).joint else list(range(n))


def check_target(wildcards, step=None):
    """A requested file outside what the config can make (a scenario not configured, a step the scenario does
    not have, joint at a step other than its one) stops the plan with a message naming it, instead of a
    traceback in an input function or jobs that fail later."""
    sc = wildcards.scenario
    if sc not in SPLITS:
        raise WorkflowError(f"scenario '{sc}' is not configured (config scenarios and orders: {', '.join(SPLITS)})")
    method = method_of(wildcards.method)
    step = int(wildcards.step) if "step" in wildcards.keys() else step
    if step is not None:
        allowed = run_steps(sc, wildcards.method)
        if step not in allowed:
            raise WorkflowError(f"{sc}/{wildcards.method}: no step {step} (its steps: "
                                f"{', '.join(map(str, allowed))})")
    return method


def runs():
    """Every configured (scenario folder, method, seed): one per (scenario, order, method, seed), see split_key."""
    return [(key, m, s) for key in SPLITS for m in METHOD_NAMES for s in SEEDS]


# ---------------------------------------------------------------- paths

def split_dir(scenario):
    return f"{RESULTS}/data/{scenario}"


def run_dir(scenario, method, seed):
    return f"{RESULTS}/{scenario}/{method}/seed{seed}"


def step_dir(scenario, method, seed, step):
    return f"{run_dir(scenario, method, seed)}/step{step}"


def ckpt_dir(scenario, method, seed, step):
    """Periodic training checkpoints: NOT a declared output, so an interrupted step resumes from them."""
    return f"{run_dir(scenario, method, seed)}/checkpoints/step{step}"


def default_synth_root(scenario):
    """Where the workflow generates a synthetic scenario with its file's own settings (the file's data.root)."""
    return f"resources/synth/{scenario}"


def synth_overrides(scenario):
    """The config's `scenario.synthetic.*` overrides of ``scenario`` as sorted (key, value) pairs."""
    return sorted((k, v) for k, v in _override_items(scenario) if k in SYNTH_FLAGS)


def synth_variant(scenario):
    """The folder name of the data this config generates for ``scenario``: the scenario's name, or with synthetic
    overrides NAME@DIGEST, so that configs (and their results_dirs) asking for other synthetic settings each keep
    their own data instead of regenerating a shared folder and putting each other's runs out of date."""
    items = synth_overrides(scenario)
    return f"{scenario}@{_digest(items)}" if items else scenario


def synth_root(scenario):
    return f"resources/synth/{synth_variant(scenario)}"


def synth_scenario(variant):
    """The scenario of a generated-data folder name (see synth_variant); a NAME@DIGEST this config does not
    produce stops the plan instead of generating data with settings nobody asked for."""
    scenario = variant.split("@", 1)[0]
    if "@" in variant and variant != synth_variant(scenario):
        raise WorkflowError(f"resources/synth/{variant}: made for synthetic overrides of '{scenario}' that this "
                            f"config does not set (its data: resources/synth/{synth_variant(scenario)})")
    return scenario


def data_root(scenario):
    """The dataset root `hvpl split` reads: config `data_roots`, else generated synthetic data, else the
    scenario's data.root, else $DATASETS_ROOT."""
    roots = config.get("data_roots") or {}
    if roots.get(scenario):
        if not os.path.isdir(roots[scenario]):
            config_error(f"data_roots.{scenario}", f"{roots[scenario]} is not a folder (relative paths start at "
                         f"the working directory {os.getcwd()})")
        return str(roots[scenario])
    sc = SCENARIOS[scenario]
    if sc["dataset"] == "synthetic":
        return synth_root(scenario)
    root = (sc.get("data") or {}).get("root") or os.environ.get("DATASETS_ROOT")
    if not root:
        config_error(f"data_roots.{scenario}", "no dataset root: set it in the config, in the scenario's "
                     "data.root, or in the DATASETS_ROOT environment variable")
    return str(root)


def generates_data(scenario):
    """True when the workflow synthesises this scenario's dataset itself (synthetic, no `data_roots` entry)."""
    return SCENARIOS[scenario]["dataset"] == "synthetic" and not (config.get("data_roots") or {}).get(scenario)


def _check_synthetic_roots():
    """A generated dataset's data.root (what a hand-run `hvpl split` reads) must be where the workflow generates
    it: a file copied from another synthetic scenario would otherwise name that scenario's data."""
    for name in SCENARIOS:
        root = (SCENARIOS[name].get("data") or {}).get("root")
        if generates_data(name) and root and os.path.normpath(root) != default_synth_root(name):
            raise WorkflowError(f"scenario '{name}' (synthetic): data.root is {root}, but the workflow generates "
                                f"its data in {default_synth_root(name)}; set data.root to that folder, or give data made "
                                f"before in the config's data_roots")


_check_synthetic_roots()


def split_file(scenario, name):
    """A file inside the split rule's output folder (rules list the folder as input, the file in the command)."""
    return f"{split_dir(scenario)}/{name}"


def uses_coco(scenario):
    """Whether the scenario trains with COCO pseudo-videos (scenario.data.use_coco)."""
    return bool((SCENARIOS[scenario].get("data") or {}).get("use_coco"))


def tensorboard_flag():
    """` --tensorboard <run folder>/tensorboard` for the train and evaluate commands (config `tensorboard`, default
    true; `--config tensorboard=false` turns it off): one TensorBoard run per (scenario, order, method, seed).
    Part of the command text, not of the params, so switching it reruns no finished job."""
    if str(config.get("tensorboard", True)).lower() == "false":
        return ""
    return f" --tensorboard {run_dir('{wildcards.scenario}', '{wildcards.method}', '{wildcards.seed}')}/tensorboard"


# Report categories of the plots by file name prefix (hvpl/evaluation/plots.py, curves.py); the rest: "Plots".
PLOT_CATEGORIES = {"task_matrix_": "Task matrices", "loss_curves_": "Training curves"}


def plot_category(wildcards):
    """The report category of one plot (``wildcards.name``: its file name without .png)."""
    return next((cat for prefix, cat in PLOT_CATEGORIES.items() if wildcards.name.startswith(prefix)), "Plots")


def run_outputs(scenario, method, seed):
    """The per-step metrics and the run's forgetting.json and matrix.csv: what the summary reads per run."""
    steps = run_steps(scenario, method)
    metrics = [f"{step_dir(scenario, method, seed, t)}/metrics.json" for t in steps]
    return metrics + [f"{run_dir(scenario, method, seed)}/{name}" for name in RUN_FILES]


STEP_FILES = ("model_final.pth", "train_log.jsonl", "predictions.json", "metrics.json")
RUN_FILES = ("forgetting.json", "matrix.csv")


def run_files(scenario, method, seed):
    """Every file a run folder reports (docs/workflow.md): per step the model, its training log, predictions and
    metrics, the OGC basis of an OGC step >= 1; the run's forgetting.json and matrix.csv. `all` asks for each of
    them, so a deleted one is made again (and only what needs it: a rebuilt model is restored from its finished
    record, hvpl.engine.checkpoint, when its inputs and configuration are those it was trained with)."""
    m = method_of(method)
    files = []
    for t in run_steps(scenario, method):
        d = step_dir(scenario, method, seed, t)
        files += [f"{d}/{name}" for name in STEP_FILES]
        if m.ogc and not m.joint and t >= 1:
            files.append(f"{d}/ogc_basis.pt")
    return files + [f"{run_dir(scenario, method, seed)}/{name}" for name in RUN_FILES]
