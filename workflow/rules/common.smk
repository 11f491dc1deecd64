# Shared helpers: the validated config turned into runs, and the path functions every rule uses.
#
# Nothing here runs a job. Everything is computed once at parse time from config/config.yaml (or the
# --configfile given) and the scenario YAML files in config/scenarios/.

import hashlib
import json
import os
import re
import shlex
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(workflow.basedir)))  # the repository's hvpl package, even without `pip install -e`

from hvpl.config import load_run_config, load_scenario, num_steps
from hvpl.continual.growth import check_model_builds
from hvpl.continual.methods import METHODS, get_method
from hvpl.data.splits import coco_annotation_path
from hvpl.utils.errors import HVPLError


RESULTS = config["results_dir"].rstrip("/")
# logs and benchmark TSVs live beside the results they belong to: runs with their own results_dir do not
# overwrite each other's
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
BASE_PREFIX = "_base_"
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
    return num_steps(SCENARIOS[scenario])


def run_steps(scenario, method):
    """Step indices a run has: every step, or only the final one for joint training."""
    n = n_steps(scenario)
    return [n - 1] if method_of(method).joint else list(range(n))


def check_target(wildcards, step=None):
    """A requested file outside what the config can make (a scenario not configured, a step the scenario does
    not have, joint at a step other than its one) stops the plan with a message naming it, instead of a
    traceback in an input function or jobs that fail later."""
    sc = wildcards.scenario
    if sc not in SCENARIOS:
        raise WorkflowError(f"scenario '{sc}' is not configured (config scenarios: {', '.join(SCENARIOS)})")
    method = method_of(wildcards.method)
    step = int(wildcards.step) if "step" in wildcards.keys() else step
    if step is not None:
        allowed = run_steps(sc, wildcards.method)
        if step not in allowed:
            raise WorkflowError(f"{sc}/{wildcards.method}: no step {step} (its steps: "
                                f"{', '.join(map(str, allowed))})")
    return method


def runs():
    """Every configured (scenario, method, seed)."""
    return [(sc, m, s) for sc in SCENARIOS for m in METHOD_NAMES for s in SEEDS]


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


def run_outputs(scenario, method, seed):
    """The per-step metrics and the run's forgetting.json: what `all` asks for per run."""
    steps = run_steps(scenario, method)
    metrics = [f"{step_dir(scenario, method, seed, t)}/metrics.json" for t in steps]
    return metrics + [f"{run_dir(scenario, method, seed)}/forgetting.json"]


# ---------------------------------------------------------------- rule inputs and arguments

# Overrides that only the first step (step 0, joint's one step) or only incremental steps (and the OGC memory)
# read: left out of the other steps' commands, so that e.g. a new inc_iters does not retrain step 0 (the
# params rerun trigger compares the command's arguments).
FIRST_STEP_ONLY = ("scenario.train.step0_iters", "scenario.train.step0_lr_drop", "scenario.train.frames_step0")
INCREMENTAL_ONLY = ("scenario.train.inc_iters", "scenario.train.frames_inc", "scenario.train.ogc_threshold",
                    "scenario.train.ogc_samples")


# What `hvpl ogc-memory` reads of the scenario (the network comes from step t-1's file).
OGC_READS = ("scenario.train.ogc_", "scenario.input.", "model.")


def unused_keys(method, step):
    """The step-specific keys step ``step`` of ``method`` does not read."""
    return INCREMENTAL_ONLY if int(step) == 0 or method_of(method).joint else FIRST_STEP_ONLY


def hvpl_config_args(scenario, method, step, ogc=False):
    """`--scenario/--method/--model/--set` arguments of `hvpl train` (or, ``ogc``, `hvpl ogc-memory`) for step
    ``step``: only the overrides that command reads at that step."""
    args = ["--scenario", scenario, "--method", method_of(method).name]
    if config.get("model"):
        args += ["--model", config["model"]]
    unused = unused_keys(method, step)
    for key, value in _override_items(scenario):
        if key in unused or (ogc and not key.startswith(OGC_READS)):
            continue
        args += ["--set", set_item(key, value)]
    return " ".join(shlex.quote(a) for a in args)


# Settings read from the scenario and model files, as params: editing a file reruns the jobs that read what
# changed (Snakemake's params trigger), as an override in the config does. Data-side keys rerun the split (and so
# everything); the rest reruns training from the first step whose command reads it.
SPLIT_KEYS = ("name", "dataset", "num_classes", "base", "increment", "class_order", "split", "data")


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def synth_settings(wildcards):
    """The synthetic settings a generated-data folder is made with: the scenario file's (NAME), or with this
    config's overrides applied (NAME@DIGEST)."""
    scenario = synth_scenario(wildcards.variant)
    sc = SCENARIOS[scenario] if "@" in wildcards.variant else load_scenario(scenario)
    return _digest([sc["num_classes"], sc.get("synthetic")])


def split_settings(wildcards):
    sc = SCENARIOS[wildcards.scenario]
    return _digest({k: sc.get(k) for k in SPLIT_KEYS})


def train_settings(wildcards):
    """Scenario (less the synthetic data and the keys this step does not read) and model settings."""
    cfg, unused = RUN_CONFIGS[wildcards.scenario], unused_keys(wildcards.method, wildcards.step)
    scenario = {k: v for k, v in cfg["scenario"].items() if k != "synthetic"}
    scenario["train"] = {k: v for k, v in scenario["train"].items() if f"scenario.train.{k}" not in unused}
    return _digest([scenario, cfg["model"]])


def ogc_settings(wildcards):
    """What the OGC memory reads of the scenario file: the test-size input and the ogc_* training keys."""
    sc = SCENARIOS[wildcards.scenario]
    return _digest([sc["input"], {k: v for k, v in sc["train"].items() if k.startswith("ogc_")}])


def compute_args():
    return f"--device {shlex.quote(config['device'])}"


def synth_args(wildcards):
    """`hvpl synth` flags of a generated-data folder: the overrides of a NAME@DIGEST folder, none for NAME."""
    scenario = synth_scenario(wildcards.variant)
    items = dict(synth_overrides(scenario)) if "@" in wildcards.variant else {}
    return " ".join(f"--{flag} {int(items[k])}" for k, flag in SYNTH_FLAGS.items() if k in items)


def split_args(scenario):
    items = dict(_override_items(scenario))
    return " ".join(f"--{flag} {int(items[k])}" for k, flag in SPLIT_FLAGS.items() if k in items)


def split_inputs(scenario):
    """What `hvpl split` reads, so that a newer dataset file reruns the split: the generated synthetic train.json,
    else the dataset's train JSON and paper split files as found now (none if the dataset is not found: the
    split job then reports where it looked)."""
    if generates_data(scenario):
        return [f"{synth_root(scenario)}/train.json"]
    from hvpl.data.ytvis import resolve_layout

    try:
        layout = resolve_layout(SCENARIOS[scenario]["dataset"], data_root(scenario))
    except HVPLError:
        return []
    coco = []
    if uses_coco(scenario):
        try:
            coco = [str(coco_annotation_path(layout.root))]
        except HVPLError:
            pass   # the split job reports where it looked
    return [str(layout.train_json), *(str(p) for p in layout.split_files or ()), *coco]


def train_inputs(wildcards):
    """The scenario's split; for t >= 1 step t-1's model and (OGC methods) step t's basis."""
    sc, t = wildcards.scenario, int(wildcards.step)
    method = check_target(wildcards)
    inputs = {"split": split_dir(sc)}
    if t >= 1 and not method.joint:
        inputs["prev_model"] = f"{step_dir(sc, wildcards.method, wildcards.seed, t - 1)}/model_final.pth"
        if method.ogc:
            inputs["ogc_basis"] = f"{step_dir(sc, wildcards.method, wildcards.seed, t)}/ogc_basis.pt"
    return inputs


def train_json(wildcards):
    """Step t's training JSON in the split (joint: every class's); `hvpl train` finds the step's COCO
    pseudo-videos next to it."""
    name = "train_all.json" if method_of(wildcards.method).joint else f"train_step{wildcards.step}.json"
    return split_file(wildcards.scenario, name)


def optional_args(input, **flags):
    """`--flag path` for every named input that this job has."""
    return " ".join(f"--{flag} {shlex.quote(str(input[name]))}" for name, flag in flags.items()
                    if name in input.keys())


def ogc_inputs(wildcards):
    """Step t-1's model and training data, and step t-1's basis when t-1 >= 1."""
    sc, t = wildcards.scenario, int(wildcards.step)
    check_target(wildcards)
    if t < 1:
        raise WorkflowError(f"ogc_memory: step {t} has no previous step")
    prev = step_dir(sc, wildcards.method, wildcards.seed, t - 1)
    inputs = {"prev_model": f"{prev}/model_final.pth", "split": split_dir(sc)}
    if t - 1 >= 1:
        inputs["prev_basis"] = f"{prev}/ogc_basis.pt"
    return inputs


def base_step0(wildcards):
    """The shared step 0 of this method's base variant."""
    check_target(wildcards, step=0)
    variant = get_method(wildcards.method).base_variant
    d = step_dir(wildcards.scenario, BASE_PREFIX + variant, wildcards.seed, 0)
    return {"model": f"{d}/model_final.pth", "train_log": f"{d}/train_log.jsonl"}


def evaluate_inputs(wildcards):
    """Step t's model and the scenario's split."""
    check_target(wildcards)
    return {"model": f"{step_dir(wildcards.scenario, wildcards.method, wildcards.seed, wildcards.step)}/"
                     "model_final.pth", "split": split_dir(wildcards.scenario)}


def forgetting_inputs(wildcards):
    sc = wildcards.scenario
    check_target(wildcards)
    metrics = [f"{step_dir(sc, wildcards.method, wildcards.seed, t)}/metrics.json"
               for t in run_steps(sc, wildcards.method)]
    return {"metrics": metrics, "split": split_dir(sc)}


def summary_inputs():
    """Every run's metrics, forgetting.json and training logs, and each scenario's split."""
    files = []
    for sc, m, s in runs():
        files += run_outputs(sc, m, s)
        files += [f"{step_dir(sc, m, s, t)}/train_log.jsonl" for t in run_steps(sc, m)]
    for sc in SCENARIOS:
        files.append(split_dir(sc))
    return files
