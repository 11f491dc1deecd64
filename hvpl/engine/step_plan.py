"""What one continual step trains: its plan (method, iterations, classes), its data and its model.

``plan_step`` checks the step's training JSON against the scenario and the previous step's model;
``build_step_model`` builds (step 0, joint) or rebuilds and grows (step t >= 1) the model and applies the
method's trainable set (hvpl.continual.growth).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hvpl.continual.methods import Method, get_method
from hvpl.data.splits import coco_file_name
from hvpl.engine.init_weights import load_init_weights
from hvpl.engine.model_file import rebuild_model
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import read_json
from hvpl.utils.logging import log


@dataclass
class StepPlan:
    method: Method
    step: int
    iters: int
    num_frames: int
    lr_drop: bool                 # step-0 schedule (one LR drop) vs constant LR
    classes_per_task: list[int]   # of the model this step trains
    class_order: list[int]        # category ids of every seen class (contiguous label = index)
    new_classes: list[int]        # category ids this step learns


def new_class_ids(train_json: Path, step: int, joint: bool) -> list[int]:
    """This step's category ids: from the sibling classes.json (split folder) or the JSON's categories."""
    sibling = train_json.parent / "classes.json"
    if sibling.is_file():
        classes = read_json(sibling)
        if joint:
            return list(classes["class_order"])
        if not 0 <= step < len(classes["steps"]):
            raise HVPLError(f"{sibling}: entry 'steps' has {len(classes['steps'])} steps, no step {step}")
        return list(classes["steps"][step])
    return [c["id"] for c in read_json(train_json).get("categories", [])]


# Model-config sections that do not shape the network (read by the criterion / at inference / only at step 0).
NOT_ARCHITECTURE = ("name", "loss", "inference", "backbone.weights")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def check_prev_settings(cfg: dict, prev: dict) -> None:
    """Step t >= 1 rebuilds the network from step t-1's file, so this run's scenario, prompts per task and model
    architecture must be that file's: a different ``--set model.*`` / ``--model`` would be recorded but not used."""
    where, scenario, before = prev["_path"], cfg["scenario"], prev["scenario"]
    if before.get("name") != scenario["name"]:
        raise HVPLError(f"{where}: a model of scenario '{before.get('name')}', not '{scenario['name']}'")
    if before.get("prompts_per_task") != scenario["prompts_per_task"]:
        raise HVPLError(f"{where}: prompts_per_task is {before.get('prompts_per_task')} there, "
                        f"{scenario['prompts_per_task']} here; the model's settings come from step 0")
    mine, theirs = (
        {k: v for k, v in _flat(m).items() if not k.startswith(NOT_ARCHITECTURE)}
        for m in (cfg["model"], prev["model_config"]))
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if differ:
        shown = ", ".join(f"model.{k}: {theirs.get(k)} there, {mine.get(k)} here" for k in differ[:4])
        raise HVPLError(f"{where}: {shown}; the network is rebuilt from the previous step, so --model / "
                        "--set model.* must be the same at every step (loss and inference settings may differ)")


def make_plan(cfg: dict, step: int, train_json: Path, prev: dict | None) -> StepPlan:
    from hvpl.config import classes_per_step, num_steps

    scenario, method = cfg["scenario"], get_method(cfg["method"])
    train = scenario["train"]
    if not 0 <= step < num_steps(scenario):
        raise HVPLError(f"scenario '{scenario['name']}': step {step} out of range 0..{num_steps(scenario) - 1}")
    new = new_class_ids(train_json, step, method.joint)
    if method.joint or step == 0:
        if prev is not None:
            raise HVPLError(f"{prev['_path']}: step {step} of '{method.name}' starts from scratch; "
                            "no --prev-model is used")
        cpt, order = [len(new)], list(new)
    else:
        if prev is None:
            raise HVPLError(f"step {step} of '{method.name}' needs --prev-model (step {step - 1}'s model_final.pth)")
        if int(prev["step"]) != step - 1:
            raise HVPLError(f"{prev['_path']}: entry 'step' is {prev['step']}, step {step} needs step {step - 1}")
        check_prev_settings(cfg, prev)
        cpt, order = list(prev["classes_per_task"]) + [len(new)], list(prev["class_order"]) + list(new)
    expected = [scenario["num_classes"]] if method.joint else classes_per_step(scenario)[:step + 1]
    if cpt != expected:
        raise HVPLError(f"{train_json}: classes per task {cpt} disagree with scenario '{scenario['name']}' "
                        f"({expected}); is this the step-{step} training JSON?")
    first = step == 0 or method.joint
    return StepPlan(method, step, int(train["step0_iters" if first else "inc_iters"]),
                    int(train["frames_step0" if first else "frames_inc"]), first, cpt, order, new)


def plan_step(cfg: dict, step: int, train_json: Path, prev: dict | None, seed: int):
    """(StepPlan, training dataset) of one step; checks the JSON's classes against the plan. With
    ``data.use_coco`` the dataset mixes in the step's COCO pseudo-videos (:func:`coco_json_for`)."""
    from hvpl.data.clip_dataset import ClipDataset

    plan = make_plan(cfg, step, train_json, prev)
    dataset = ClipDataset(train_json, *_clip_args(cfg, plan), train=True, seed=seed, class_order=plan.class_order)
    ids = {c["id"] for c in dataset.data["categories"]}
    wrong = [c for c in plan.new_classes if dataset.label.get(c) != plan.class_order.index(c)]
    if ids != set(plan.new_classes) or wrong:
        raise HVPLError(f"{train_json}: categories {sorted(ids)} are not step {step}'s classes "
                        f"{plan.new_classes} in class order {plan.class_order}")
    return plan, _with_coco(cfg, plan, Path(train_json), dataset, seed)


def _clip_args(cfg: dict, plan: StepPlan) -> tuple:
    train = cfg["scenario"]["train"]
    return plan.num_frames, int(train["frame_range"]), cfg["scenario"]["input"]


def coco_json_for(train_json: Path, step: int, joint: bool) -> Path:
    """The COCO pseudo-video file of a step, written by the split next to its training JSON."""
    return Path(train_json).parent / coco_file_name(step, joint)


def _with_coco(cfg: dict, plan: StepPlan, train_json: Path, videos, seed: int):
    """``videos`` alone, or joined with the step's COCO pseudo-videos sampled image:video = 1 : ``data.coco_ratio``
    when ``data.use_coco`` is set (a step none of whose classes has a COCO image trains on videos only)."""
    from hvpl.data.clip_dataset import ClipDataset
    from hvpl.data.joint_dataset import IMAGE_SEED_OFFSET, JointClipDataset

    data_cfg = cfg["scenario"].get("data") or {}
    if not data_cfg.get("use_coco"):
        return videos
    path = coco_json_for(train_json, plan.step, plan.method.joint)
    if not path.is_file():
        raise HVPLError(f"{path}: not found; scenario.data.use_coco is set, so `hvpl split` writes it next to "
                        f"{train_json} (split again with this scenario)")
    images = ClipDataset(path, *_clip_args(cfg, plan), train=True, seed=seed + IMAGE_SEED_OFFSET,
                         class_order=plan.class_order, allow_empty=True)
    if len(images) == 0:
        log(f"step {plan.step}: {path.name} holds no COCO image of this step's classes: videos only")
        return videos
    extra = sorted({c["id"] for c in images.data["categories"]} - set(plan.new_classes))
    if extra:
        raise HVPLError(f"{path}: categories {extra} are not step {plan.step}'s classes {plan.new_classes}")
    ratio = float(data_cfg.get("coco_ratio", 0.0))
    joint = JointClipDataset(videos, images, ratio)   # checks the ratio
    log(f"step {plan.step}: joint training with {len(images)} COCO pseudo-videos ({path.name}), "
        f"image:video sampling 1:{ratio:g}")
    return joint


def build_step_model(cfg: dict, plan: StepPlan, prev: dict | None):
    """The model step ``plan.step`` trains, on CPU, trainable set applied."""
    from hvpl.continual.growth import grow_for_step, set_trainable
    from hvpl.model.hvpl import HVPLModel

    if prev is None:
        model = HVPLModel(cfg["model"], plan.method, cfg["scenario"]["prompts_per_task"], plan.classes_per_task)
        init = cfg["scenario"]["train"].get("init_weights")
        if init:
            load_init_weights(model, init)
    else:
        model = rebuild_model(prev, plan.method)
        grow_for_step(model, plan.method, plan.classes_per_task[-1])
    set_trainable(model, plan.method, plan.step)
    return model
