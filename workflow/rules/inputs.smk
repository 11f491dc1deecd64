# Rule inputs and arguments: input functions, `hvpl` command arguments, settings digests (params rerun triggers).
# Included right after common.smk, whose config, runs and path functions it uses.

import shlex

from hvpl.config import load_scenario
from hvpl.data.splits import coco_annotation_path


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
    scenario = scenario_of(scenario)
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


def synth_settings(wildcards):
    """The synthetic settings a generated-data folder is made with: the scenario file's (NAME), or with this
    config's overrides applied (NAME@DIGEST)."""
    scenario = synth_scenario(wildcards.variant)
    sc = SCENARIOS[scenario] if "@" in wildcards.variant else load_scenario(scenario)
    return _digest([sc["num_classes"], sc.get("synthetic")])


def split_settings(wildcards):
    sc = SCENARIOS[scenario_of(wildcards.scenario)]
    return _digest({k: sc.get(k) for k in SPLIT_KEYS})


def train_settings(wildcards):
    """Scenario (less the synthetic data and the keys this step does not read) and model settings."""
    cfg, unused = RUN_CONFIGS[scenario_of(wildcards.scenario)], unused_keys(wildcards.method, wildcards.step)
    scenario = {k: v for k, v in cfg["scenario"].items() if k != "synthetic"}
    scenario["train"] = {k: v for k, v in scenario["train"].items() if f"scenario.train.{k}" not in unused}
    return _digest([scenario, cfg["model"]])


def ogc_settings(wildcards):
    """What the OGC memory reads of the scenario file: the test-size input and the ogc_* training keys."""
    sc = SCENARIOS[scenario_of(wildcards.scenario)]
    return _digest([sc["input"], {k: v for k, v in sc["train"].items() if k.startswith("ogc_")}])


def compute_args():
    return f"--device {shlex.quote(config['device'])}"


def synth_args(wildcards):
    """`hvpl synth` flags of a generated-data folder: the overrides of a NAME@DIGEST folder, none for NAME."""
    scenario = synth_scenario(wildcards.variant)
    items = dict(synth_overrides(scenario)) if "@" in wildcards.variant else {}
    return " ".join(f"--{flag} {int(items[k])}" for k, flag in SYNTH_FLAGS.items() if k in items)


def split_args(key):
    """`hvpl split` flags of a split folder: the seed override, and `--order K` for class order K >= 1 (none for
    order 0, whose command, and so params, are those of the splits made before orders existed)."""
    items = dict(_override_items(scenario_of(key)))
    flags = [f"--{flag} {int(items[k])}" for k, flag in SPLIT_FLAGS.items() if k in items]
    return " ".join(flags + ([f"--order {order_of(key)}"] if order_of(key) else []))


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
    for key in SPLITS:
        files.append(split_dir(key))
    return files


# ---------------------------------------------------------------- visualize (workflow/rules/visualize.smk)

VISUALS = f"{RESULTS}/visuals"


def visual_videos():
    return int(config.get("visual_videos", 0) or 0)


def visual_main_method():
    """The method drawn across its steps: hvpl when configured, else the first configured method."""
    return "hvpl" if "hvpl" in METHOD_NAMES else METHOD_NAMES[0]


def visual_inputs(wildcards):
    """Final-step predictions of every method, and every step's of the main method."""
    sc, seed = wildcards.scenario, wildcards.seed   # a split folder name: scenario, or scenario@order{k}
    if sc not in SPLITS:
        raise WorkflowError(f"scenario '{sc}' is not configured (config scenarios: {', '.join(SCENARIOS)})")
    final = n_steps(sc) - 1
    main = visual_main_method()
    return {"final": [f"{step_dir(sc, m, seed, final)}/predictions.json" for m in METHOD_NAMES],
            "steps": [f"{step_dir(sc, main, seed, t)}/predictions.json" for t in run_steps(sc, main)],
            "split": split_dir(sc)}


def visual_outputs():
    """The visuals folders `all` asks for, one pair per (scenario, class order, seed) (none with visual_videos: 0)."""
    if visual_videos() <= 0:
        return []
    return [f"{VISUALS}/{key}/seed{s}/{kind}" for key in SPLITS for s in SEEDS for kind in ("methods", "steps")]
