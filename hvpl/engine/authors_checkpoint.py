"""The authors' HVPL checkpoints (JiahuaDong/HVPL's detectron2 ``model_final.pth`` of step t) as our step-t model.

Such a file is a dict whose ``model`` entry is the state dict of their ``HVPL`` meta-architecture (plus
``iteration`` and the like); no scenario, class order or model size is recorded, so the run's config supplies them
and the file's class heads are checked against it: head ``cls[k]`` (k >= 1) of ``class_embed`` has task k-1's
classes, so the file is a step-(number of heads - 2) model. Every tensor is renamed and reshaped by
:func:`hvpl.engine.init_weights.match_state`; the conversion fails (HVPLError) unless every tensor of our step-t
model comes from the file, except the documented ones (docs/DESIGN.md "Authors' checkpoints").

Entry points: :func:`load_model_or_authors` (``hvpl predict --model``, ``train --prev-model``, ``ogc-memory
--prev-model``) and :func:`convert_file` (``hvpl convert``).
"""
from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from hvpl.continual.methods import get_method
from hvpl.engine.init_weights import DETECTRON2_HEADS, match_state, report_match, state_of
from hvpl.engine.model_file import REQUIRED_KEYS, check_model_file, model_file_dict, read_checkpoint
from hvpl.model.backbone import read_weight_file
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import read_json
from hvpl.utils.logging import log

METHOD = "hvpl"   # the authors' checkpoints are HVPL models (ECLIPSE's frame prompts + video prompts + tree scan)
_FRAME_HEADS = re.compile(r"sem_seg_head\.predictor\.class_embed\.cls\.(\d+)\.layers\.(\d+)\.weight")
_FRAME_PROMPTS = "sem_seg_head.predictor.prompt_feat.0.weight"
# the file's tensors with no counterpart here: the criteria's no-object class weights (ours: loss.no_object_weight)
NO_COUNTERPART = (r"(criterion|vita_criterion)\.empty_weight",)


def is_authors_checkpoint(ckpt) -> bool:
    """A detectron2 checkpoint of VITA/Mask2Former/HVPL (``{"model": state}`` or a bare state dict, names maybe
    prefixed by DistributedDataParallel's ``module.``)?"""
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    return isinstance(state, dict) and any(re.sub(r"^module\.", "", str(k)).startswith(DETECTRON2_HEADS)
                                           for k in state)


def read_any(path: str | Path):
    """The object a weights file holds (a detectron2 ``.pkl`` pickle or a torch file)."""
    path = Path(path)
    return read_weight_file(path, "model") if path.suffix == ".pkl" else read_checkpoint(path)


def authors_tasks(state: dict, where) -> tuple[list[int], int | None]:
    """(classes per task, prompts per task or None) of an authors' state dict, from its frame class heads
    (``class_embed.cls[k]``: k = 0 no-object, k >= 1 task k-1; the last layer has one row per class)."""
    last: dict[int, tuple[int, int]] = {}
    for name, value in state.items():
        m = _FRAME_HEADS.fullmatch(name)
        if m:
            k, layer = int(m[1]), int(m[2])
            if layer >= last.get(k, (-1, 0))[0]:
                last[k] = (layer, int(value.shape[0]))
    heads = sorted(k for k in last if k >= 1)
    if not heads:
        raise HVPLError(f"{where}: sem_seg_head.predictor.class_embed.cls: no incremental class heads (a VITA/"
                        "Mask2Former checkpoint? use it as scenario.train.init_weights of step 0)")
    if 0 not in last or heads != list(range(1, len(heads) + 1)):
        raise HVPLError(f"{where}: sem_seg_head.predictor.class_embed.cls: heads {sorted(last)}, expected 0 "
                        "(no-object) and 1..T")
    prompts = state.get(_FRAME_PROMPTS)
    return [last[k][1] for k in heads], None if prompts is None else int(prompts.shape[0])


def default_class_order(cfg: dict, classes_json: Path | None = None) -> list[int]:
    """Category ids in class order: a split's classes.json, else the scenario's ``class_order``, else ascending ids
    1..num_classes (YouTube-VIS and OVIS number their categories so; the authors' label = id - 1)."""
    if classes_json is not None and Path(classes_json).is_file():
        return list(read_json(classes_json)["class_order"])
    scenario = cfg["scenario"]
    return list(scenario.get("class_order") or range(1, int(scenario["num_classes"]) + 1))


def _check_tasks(cfg: dict, cpt: list[int], prompts: int | None, step: int | None, where) -> int:
    from hvpl.config import classes_per_step

    scenario = cfg["scenario"]
    file_step = len(cpt) - 1
    if step is not None and step != file_step:
        raise HVPLError(f"{where}: sem_seg_head.predictor.class_embed.cls: {len(cpt)} task heads {cpt}, a step-"
                        f"{file_step} model, not step {step}")
    expected = classes_per_step(scenario)[:file_step + 1]
    if cpt != expected:
        raise HVPLError(f"{where}: sem_seg_head.predictor.class_embed.cls: classes per task {cpt}, scenario "
                        f"'{scenario['name']}' has {expected} at step {file_step}")
    if prompts is not None and prompts != scenario["prompts_per_task"]:
        raise HVPLError(f"{where}: sem_seg_head.predictor.prompt_feat: {prompts} prompts per task, scenario "
                        f"'{scenario['name']}' has {scenario['prompts_per_task']}")
    return file_step


def convert_state(state: dict, cfg: dict, step: int | None, class_order: list[int], where) -> dict:
    """An authors' state dict -> our ``model_final.pth`` dict of its step (``step``: checked if given) for the run
    config ``cfg`` (scenario, model sizes); ``class_order``: category ids in class order (the first classes of
    the file's tasks are kept). HVPLError if a tensor of ours is not in the file, a file tensor has
    another shape, or the file holds a tensor this model has no place for (other than ``NO_COUNTERPART``)."""
    from hvpl.model.hvpl import HVPLModel, without_weight_files

    cpt, prompts = authors_tasks(state, where)
    step = _check_tasks(cfg, cpt, prompts, step, where)
    if len(class_order) < sum(cpt):
        raise HVPLError(f"{where}: class order has {len(class_order)} classes, the file's heads {sum(cpt)}")
    class_order = list(class_order[:sum(cpt)])   # the classes seen up to this step
    model = HVPLModel(without_weight_files(cfg["model"]), METHOD, cfg["scenario"]["prompts_per_task"], cpt)
    own = model.state_dict()
    match = match_state(state, own, detectron2=True)
    extra = [k for k in match.unused if not any(re.fullmatch(p, k) for p in NO_COUNTERPART)]
    missing = match.not_loaded(own) + match.partial
    for problem, names in (("have another shape than model "
                            f"'{cfg['model'].get('name')}' ({'; '.join(match.mismatched[:3])})", match.mismatched),
                           ("have no place in this model", extra), ("of this model are missing", missing)):
        if names:
            raise HVPLError(f"{where}: {len(names)} tensors {problem}: {', '.join(names[:6])}")
    if hasattr(model.backbone, "set_stride_in_1x1"):
        model.backbone.set_stride_in_1x1(False)   # detectron2's ResNet (STRIDE_IN_1X1: False)
    model.load_state_dict(match.values, strict=False)
    report_match(where, match, own, f"the authors' HVPL checkpoint of step {step}")
    plan = SimpleNamespace(method=get_method(METHOD), step=step, classes_per_task=cpt, class_order=class_order)
    return model_file_dict(cfg, plan, model)


def load_model_or_authors(path: str | Path, cfg: dict | None = None, step: int | None = None,
                          classes_json: Path | None = None) -> dict:
    """A ``model_final.pth`` dict from ``path``: ours as stored, or an authors' checkpoint converted for the run
    config ``cfg`` (required then; ``step`` checked if given; class order from :func:`default_class_order`)."""
    ckpt = read_any(path)
    ours = isinstance(ckpt, dict) and all(k in ckpt for k in REQUIRED_KEYS)
    if ours or not is_authors_checkpoint(ckpt):
        return check_model_file(ckpt, path)
    if cfg is None:
        raise HVPLError(f"{path}: an authors' detectron2 checkpoint: its scenario must be given (--scenario; "
                        "--model-size if not the scenario's model)")
    state = state_of(ckpt, path, "model")
    out = convert_state(state, cfg, step, default_class_order(cfg, classes_json), path)
    out["converted_from"] = {"file": str(path), "iteration": ckpt.get("iteration") if isinstance(ckpt, dict) else None}
    out["_path"] = str(path)
    return out


def convert_file(src: Path, cfg: dict, out: Path, step: int | None = None, classes_json: Path | None = None) -> dict:
    """``hvpl convert``: write the authors' checkpoint ``src`` as our ``model_final.pth`` ``out`` (atomically)."""
    from hvpl.utils.io import atomic_torch_save

    ckpt = load_model_or_authors(src, cfg, step, classes_json)
    if "converted_from" not in ckpt:
        raise HVPLError(f"{src}: already a model_final.pth of hvpl (nothing to convert)")
    ckpt.pop("_path", None)
    atomic_torch_save(out, ckpt)
    log(f"{out}: step-{ckpt['step']} model of scenario '{cfg['scenario']['name']}', classes per task "
        f"{ckpt['classes_per_task']}")
    return ckpt
