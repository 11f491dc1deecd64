"""The ``model_final.pth`` format (docs/DESIGN.md): its file names, its entries, reading one, rebuilding its model.

Written by the trainer for every finished step; read back for step t+1 (hvpl.engine.step_plan), OGC's memory
collection (hvpl.continual.ogc), prediction (hvpl.engine.predict) and step-0 initialisation
(hvpl.engine.init_weights).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from hvpl.continual.methods import Method, get_method
from hvpl.model.hvpl import HVPLModel, without_weight_files
from hvpl.utils.errors import HVPLError
from hvpl.utils.safe_load import load_torch_file

if TYPE_CHECKING:
    from hvpl.engine.step_plan import StepPlan

FINAL_NAME = "model_final.pth"
LOG_NAME = "train_log.jsonl"
REQUIRED_KEYS = ("model", "model_config", "scenario", "method", "step", "classes_per_task", "class_order")


def model_file_dict(cfg: dict, plan: StepPlan, model: nn.Module) -> dict:
    """The entries of ``REQUIRED_KEYS``, in that order, for ``model`` as step ``plan`` of the run config ``cfg``
    trained it: a CPU copy of its state dict, the config's model and scenario sections, the plan's method name,
    step, classes per task and class order. (The trainer adds its statistics; benchmarks use it as is.)"""
    return {"model": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
            "model_config": cfg["model"], "scenario": cfg["scenario"], "method": plan.method.name, "step": plan.step,
            "classes_per_task": list(plan.classes_per_task), "class_order": list(plan.class_order)}


def read_checkpoint(path: str | Path):
    """The object a torch file holds, on CPU, tensors, numpy arrays and plain data only (nothing in the file can
    run code); HVPLError naming ``path`` if missing, unreadable or code-carrying."""
    path = Path(path)
    if not path.is_file():
        raise HVPLError(f"{path}: model file not found")
    return load_torch_file(path, "model file", numpy=True)


def check_model_file(ckpt, path: str | Path) -> dict:
    """``ckpt`` as a ``model_final.pth`` dict (DESIGN.md) with its ``_path``; HVPLError naming what is missing."""
    if not isinstance(ckpt, dict):
        raise HVPLError(f"{path}: expected a model_final.pth dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise HVPLError(f"{path}: missing entries {missing} (not a model_final.pth of hvpl train; an authors' "
                        "detectron2 checkpoint is read with the run's scenario: see `hvpl convert --help`)")
    ckpt["_path"] = str(path)
    return ckpt


def load_model_file(path: str | Path) -> dict:
    """Read a ``model_final.pth`` dict (DESIGN.md) to CPU; a missing/foreign file raises HVPLError naming it."""
    return check_model_file(read_checkpoint(path), path)


def rebuild_model(ckpt: dict, method: Method | str | None = None) -> HVPLModel:
    """The HVPLModel of a loaded ``model_final.pth``, weights loaded (strict), on CPU.

    ``method`` (name or Method) overrides the recorded one: a shared step-0 model of one method continues as
    another method with the same base variant. Backbone weight files are not re-read (the state dict holds them).
    """
    where = ckpt.get("_path", "checkpoint")
    recorded = get_method(ckpt["method"])
    method = recorded if method is None else get_method(method)
    if method.name != recorded.name and (int(ckpt["step"]) > 0 or method.base_variant != recorded.base_variant):
        raise HVPLError(f"{where}: a step-{ckpt['step']} '{recorded.name}' model cannot continue as "
                        f"'{method.name}' (only a step-0 model of the same base variant, "
                        f"'{recorded.base_variant}', is shared between methods)")
    prompts = ckpt["scenario"].get("prompts_per_task")
    if prompts is None:
        raise HVPLError(f"{where}: missing entry 'scenario.prompts_per_task'")
    model = HVPLModel(without_weight_files(ckpt["model_config"]), method, prompts, list(ckpt["classes_per_task"]))
    try:
        model.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as exc:
        raise HVPLError(f"{where}: weights do not match a '{method.name}' model with classes per task "
                        f"{ckpt['classes_per_task']}: {exc}") from exc
    model.set_step_mode(len(ckpt["classes_per_task"]) - 1 if method.frame_prompts else 0)
    return model
