"""AdamW parameter groups, the LR schedule and gradient clipping (protocol.md Section 2).

- Only parameters with ``requires_grad`` are optimised.
- Backbone parameters (``backbone.*``) use ``lr * backbone_lr_mult``.
- No weight decay on normalisation layers and embeddings (protocol.md: "0 on norms and embeddings"): ``nn.Embedding``
  and the parameters a module lists in its class attribute ``no_weight_decay`` — the prompt groups' learned query
  embeddings (content, positional, video ``fq_pos``; their mask MLPs decay like the base mask MLP). The tree scan's
  ``A_log``/``D`` decay, as in the authors' trainer (Mamba exempts them; the authors' build_optimizer does not).
  Biases decay, as in Mask2Former.
- Step 0 (and joint training): the LR drops x0.1 once at ``step0_lr_drop``; incremental steps: constant LR.
- Gradient-norm clipping (``clip_grad``) over the full model (one norm over every trainable parameter).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from hvpl.utils.errors import HVPLError

LR_DROP_FACTOR = 0.1   # protocol.md: "step 0 drops LR x0.1 once"
BACKBONE_PREFIX = "backbone."
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)


def _decay_free(module: nn.Module, local_name: str) -> bool:
    """Norm layers (by type: a class merely named ``*Norm*``, e.g. the backbone's ``ConvNorm``, is a convolution),
    embeddings and what a module lists in ``no_weight_decay``."""
    return (isinstance(module, (*_NORM_TYPES, nn.Embedding))
            or local_name in getattr(module, "no_weight_decay", ()))


def _named_trainable(model: nn.Module) -> Iterable[tuple[str, nn.Module, str, nn.Parameter]]:
    """(full name, owning module, local name, parameter) of every trainable parameter, each once."""
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        for local, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            yield (f"{mod_name}.{local}" if mod_name else local), module, local, param


def _require(train_cfg: dict, key: str):
    if key not in train_cfg:
        raise HVPLError(f"scenario config: missing entry 'train.{key}'")
    return train_cfg[key]


def param_groups(model: nn.Module, train_cfg: dict) -> list[dict]:
    """Split the trainable parameters into up to four AdamW groups (backbone or not) x (decay or not).

    Each group dict has ``params``, ``lr``, ``weight_decay`` and ``names`` (for logging/tests).
    """
    lr = float(_require(train_cfg, "lr"))
    wd = float(_require(train_cfg, "weight_decay"))
    bb_mult = float(train_cfg.get("backbone_lr_mult", 1.0))
    groups: dict[tuple[bool, bool], dict] = {}
    for name, module, local, param in _named_trainable(model):
        key = (name.startswith(BACKBONE_PREFIX), _decay_free(module, local))
        if key not in groups:
            groups[key] = {"params": [], "names": [], "lr": lr * (bb_mult if key[0] else 1.0),
                           "weight_decay": 0.0 if key[1] else wd}
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, train_cfg: dict) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; raises HVPLError when nothing is trainable."""
    groups = param_groups(model, train_cfg)
    if not groups:
        raise HVPLError("the model has no trainable parameters for this step (check the method's trainable set)")
    # fused: one kernel per group instead of a Python loop over ~200 tensors (the CPU default)
    return torch.optim.AdamW(groups, lr=float(train_cfg["lr"]), fused=True)


def lr_factor(iteration: int, lr_drop: int | None) -> float:
    """LR multiplier for 0-based ``iteration``: 1 before ``lr_drop``, LR_DROP_FACTOR from it on."""
    if lr_drop is None or iteration < lr_drop:
        return 1.0
    return LR_DROP_FACTOR


def build_scheduler(optimizer: torch.optim.Optimizer, train_cfg: dict, *, drop: bool) -> torch.optim.lr_scheduler.LambdaLR:
    """Step-0 schedule (``drop=True``: one x0.1 drop at ``step0_lr_drop``) or a constant LR (``drop=False``).

    Call ``scheduler.step()`` once after every optimizer step.
    """
    lr_drop = int(_require(train_cfg, "step0_lr_drop")) if drop else None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, lr_drop))


def clip_gradients(params: Iterable[nn.Parameter], max_norm: float | None) -> float | None:
    """Clip the global gradient norm over ``params`` to ``max_norm`` (skip if None or <= 0).

    Returns the total norm before clipping (None when skipped).
    """
    if not max_norm or max_norm <= 0:
        return None
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return 0.0
    return float(torch.nn.utils.clip_grad_norm_(with_grad, float(max_norm)))
