"""Incremental classifier (one MLP head per task + a shared no-object head) and ECLIPSE-style logit
manipulation (method.md Section 1, "Incremental classifier" and "Logit manipulation").

Also home of :class:`MLP`, the small multi-layer perceptron used by every head of the model.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

# Probabilities are clamped to [LOGIT_EPS, 1 - LOGIT_EPS] before logit() (method.md "Logit manipulation").
LOGIT_EPS = 1e-3
# Logit written into every class outside a group's own task.
SUPPRESSED_LOGIT = -10.0


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU in between: in_dim -> hidden_dim ... -> out_dim.

    ``num_layers == 1`` is a single Linear(in_dim, out_dim). Input (..., in_dim) -> (..., out_dim).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs at least one layer, got {num_layers}")
        dims_in = [in_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class IncrementalClassifier(nn.Module):
    """A head per task (MLP (C, C, n_k)) plus a shared no-object head (MLP (C, C, 1)).

    ``forward(x (..., C)) -> (..., K + 1)``: the classes of every task in task order, then no-object.
    """

    def __init__(self, hidden_dim: int, num_layers: int, classes_per_task: Sequence[int]):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.heads = nn.ModuleList()
        self.no_object = MLP(hidden_dim, hidden_dim, 1, num_layers)
        self.classes_per_task: list[int] = []
        for k, n in enumerate(classes_per_task):
            if k == 0:
                self._append_head(n)
            else:
                self.add_task(n)

    @property
    def num_classes(self) -> int:
        return sum(self.classes_per_task)

    def _append_head(self, n: int) -> MLP:
        if n <= 0:
            raise ValueError(f"a task needs at least one class, got {n}")
        head = MLP(self.hidden_dim, self.hidden_dim, n, self.num_layers)
        head.to(device=self.no_object.layers[0].weight.device)
        self.heads.append(head)
        self.classes_per_task.append(n)
        return head

    @torch.no_grad()
    def add_task(self, n: int) -> MLP:
        """Append a head for ``n`` classes initialised from the no-object head: hidden layers copied,
        the last layer's single row (and bias) repeated ``n`` times (method.md Section 3)."""
        head = self._append_head(n)
        for dst, src in zip(head.layers[:-1], self.no_object.layers[:-1]):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        last, src = head.layers[-1], self.no_object.layers[-1]
        last.weight.copy_(src.weight.expand_as(last.weight))
        last.bias.copy_(src.bias.expand_as(last.bias))
        return head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., C) -> logits (..., K + 1)."""
        return torch.cat([head(x) for head in self.heads] + [self.no_object(x)], dim=-1)


def task_slices(classes_per_task: Sequence[int]) -> list[slice]:
    """Logit index range of every task's classes."""
    out, start = [], 0
    for n in classes_per_task:
        out.append(slice(start, start + n))
        start += n
    return out


def deltas_for_groups(deltas: Sequence[float], num_groups: int) -> list[float]:
    """The config's delta list truncated, or padded with its last value, to ``num_groups`` entries."""
    deltas = [float(d) for d in deltas]
    if not deltas:
        raise ValueError("logit_deltas must not be empty")
    return (deltas + [deltas[-1]] * num_groups)[:num_groups]


def _safe_logit(p: torch.Tensor) -> torch.Tensor:
    return torch.logit(p.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS))


def manipulate_logits(logits: torch.Tensor, own_classes: Sequence[int] | slice, delta: float) -> torch.Tensor:
    """ECLIPSE logit manipulation for one query group (inference only).

    logits: (Q, K + 1), last column no-object. ``own_classes``: the class indices of the group's own
    task (a slice or index list). O = every other real class.
    delta > 0: no-object <- logit(delta * clip(sum_{c in O} sigmoid(z_c), 0, 1)): the mass is clipped first, so
    the no-object probability never exceeds delta (the authors' and ECLIPSE's order);
    delta < 0: no-object <- logit(|delta| * sigmoid(z_noobj)); delta == 0 leaves it unchanged.
    Then z_c <- -10 for every c in O. Returns a new tensor (Q, K + 1).
    """
    num_classes = logits.shape[-1] - 1
    other = torch.ones(num_classes, dtype=torch.bool, device=logits.device)
    other[own_classes] = False
    out = logits.clone()
    if delta > 0:
        mass = torch.sigmoid(logits[..., :num_classes][..., other]).sum(-1)
        out[..., -1] = _safe_logit(delta * mass.clamp(0.0, 1.0))
    elif delta < 0:
        out[..., -1] = _safe_logit(abs(delta) * torch.sigmoid(logits[..., -1]))
    out[..., :num_classes][..., other] = SUPPRESSED_LOGIT
    return out
