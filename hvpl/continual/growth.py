"""Growing the model between continual steps and choosing what trains (method.md Sections 3 and 5).

- :func:`grow_for_step`: append one task (class heads + prompt groups initialised from the base queries,
  the rules live in ``FrameDecoder.add_group`` / ``VideoDecoder.add_group`` / ``IncrementalClassifier.add_task``).
- :func:`set_trainable`: the trainable set of a step for a method (everything else frozen).
- :func:`count_parameters`: (trainable, total) of the model a step trains, built on the meta device.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from hvpl.continual.methods import Method, get_method
from hvpl.utils.errors import HVPLError


def grow_for_step(model, method: Method | str, step_classes: int | Sequence[int]):
    """Grow ``model`` (an HVPLModel) for the next step.

    ``step_classes``: the number of classes the new step introduces (one task is added), or the full
    classes-per-task list (tasks are added until the model has them all). Returns the model.
    """
    method = get_method(method)
    if method.frame_prompts != model.method.frame_prompts or method.video_prompts != model.method.video_prompts:
        raise HVPLError(f"method '{method.name}' does not match the model's method '{model.method.name}'")
    if isinstance(step_classes, int):
        model.add_task(step_classes)
        return model
    target = list(step_classes)
    have = model.classes_per_task
    if target[:len(have)] != have:
        raise HVPLError(f"classes per task {target} do not extend the model's {have}")
    for n in target[len(have):]:
        model.add_task(n)
    return model


def _set(modules: Iterable[nn.Module | nn.Parameter | None], flag: bool = True) -> None:
    for m in modules:
        if m is None:
            continue
        params = [m] if isinstance(m, nn.Parameter) else m.parameters()
        for p in params:
            p.requires_grad_(flag)


def _refreeze_backbone(model) -> None:
    """Re-apply the backbone's own freezing (e.g. detectron2's ``freeze_at`` stem) after a blanket unfreeze."""
    freeze = getattr(model.backbone, "freeze", None)
    if callable(freeze):
        freeze(int(model.model_cfg["backbone"].get("freeze_at", 0)))


def set_trainable(model, method: Method | str, step: int) -> None:
    """Set ``requires_grad`` for step ``step`` of ``method`` and the model's training group.

    Step 0, finetune and joint: everything (except what the backbone itself keeps frozen). Prompt methods at
    step >= 1: the newest class heads and the shared no-object heads (both levels), the newest frame prompt
    group (content, positional prompts, mask MLP) and, with video prompts, the newest video prompt group
    (content, positional prompts, ``fq_pos``, mask MLP); everything else frozen.
    """
    method = get_method(method)
    model.set_step_mode(step)
    full = step == 0 or method.finetune or method.joint or not method.frame_prompts
    _set([model], full)
    if full:
        _refreeze_backbone(model)
        return
    if len(model.frame_decoder.prompts) < step:
        raise HVPLError(f"step {step}: the model has {len(model.frame_decoder.prompts)} prompt groups; "
                        "grow it before choosing the trainable set")
    for clf in (model.frame_classifier, model.video_classifier):
        _set([clf.heads[step], clf.no_object])
    _set([model.frame_decoder.prompts[step - 1]])
    if method.video_prompts:
        _set([model.video_decoder.prompts[step - 1]])


def count_trainable(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts of a module."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def count_parameters(cfg: dict, step: int) -> tuple[int, int]:
    """(trainable, total) of the model that step ``step`` of the run config ``cfg`` trains.

    Built on the meta device (no memory, no weight loading); called by ``hvpl params``.
    """
    from hvpl.config import classes_per_step, num_steps
    from hvpl.model.hvpl import HVPLModel, without_weight_files

    scenario, method = cfg["scenario"], get_method(cfg["method"])
    last = num_steps(scenario) - 1
    if not 0 <= step <= last:
        raise HVPLError(f"scenario '{scenario['name']}': step {step} out of range 0..{last} "
                        f"for method '{method.name}'")
    # joint trains one all-class model, whichever step index it runs as (the workflow: the last one)
    classes = [scenario["num_classes"]] if method.joint else classes_per_step(scenario)[:step + 1]
    with torch.device("meta"):
        model = HVPLModel(without_weight_files(cfg["model"]), method, scenario["prompts_per_task"], classes)
    set_trainable(model, method, 0 if method.joint else step)
    return count_trainable(model)


def check_model_builds(cfg: dict) -> None:
    """Build step 0's model of ``cfg`` on the meta device; a model config that cannot be built (e.g. a width
    not divisible by the heads or norm groups, after ``--set model.*``) -> HVPLError naming the model."""
    try:
        count_parameters(cfg, 0)
    except HVPLError:
        raise
    except Exception as exc:  # noqa: BLE001 - any construction error is a bad model config
        raise HVPLError(f"model config '{cfg['model'].get('name')}' cannot be built: {type(exc).__name__}: {exc}"
                        ) from exc
