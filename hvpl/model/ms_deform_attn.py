"""Multi-scale deformable attention (Deformable DETR), pure PyTorch.

``ms_deform_attn_core`` is the sampling + weighting kernel written with ``F.grid_sample``; a fused CUDA
kernel can be registered with ``register_core`` and is then used by ``MSDeformAttn`` on CUDA tensors
(same signature, same semantics). The tests compare it with an explicit per-point bilinear loop
(tests/reference_impls.py).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

# An optional fused kernel: fn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
_FUSED_CORE: Callable | None = None
OFFSET_INIT_GAIN = 1.0   # initial offsets point at distance (1..n_points) * gain pixels in 8 directions
# CPU softmax over a last dim shorter than one AVX-512 vector (16 floats) takes a scalar path ~7x slower than
# at 16 (measured on the project's CPU machine: 2016 x 12 rows 417 us vs 57 us padded): such rows get -inf padding.
CPU_SOFTMAX_MIN_WIDTH = 16


def register_core(fn: Callable | None) -> None:
    """Install (or with None remove) a fused kernel used for CUDA inputs instead of the grid_sample core."""
    global _FUSED_CORE
    _FUSED_CORE = fn


def softmax_last(x: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim; the same values (to float rounding) as ``x.softmax(-1)``."""
    width = x.shape[-1]
    if x.device.type != "cpu" or width >= CPU_SOFTMAX_MIN_WIDTH:
        return x.softmax(-1)
    padded = F.pad(x, (0, CPU_SOFTMAX_MIN_WIDTH - width), value=float("-inf"))
    return padded.softmax(-1)[..., :width]


def ms_deform_attn_core(value: torch.Tensor, spatial_shapes: torch.Tensor, sampling_locations: torch.Tensor,
                        attention_weights: torch.Tensor) -> torch.Tensor:
    """value: (N, S, M, D) with S = sum_l H_l * W_l (levels flattened row-major, in order);
    spatial_shapes: (L, 2) long (H_l, W_l); sampling_locations: (N, Lq, M, L, P, 2) as (x, y) in [0, 1];
    attention_weights: (N, Lq, M, L, P). Returns (N, Lq, M * D).

    Bilinear sampling with align_corners=False and zero padding: location (x, y) addresses the pixel
    grid so that pixel centres are at ((j + 0.5) / W, (i + 0.5) / H).
    """
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = spatial_shapes.tolist()
    value_levels = value.split([int(h) * int(w) for h, w in shapes], dim=1)
    grids = 2 * sampling_locations - 1
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_levels, n_points)
    out = None
    # weighted per level and accumulated: ~2x faster on CPU than stacking every level's samples first
    for lvl, (h, w) in enumerate(shapes):
        v = value_levels[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)                    # (N*M, Lq, P, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (N*M, D, Lq, P)
        level_out = (sampled * weights[..., lvl, :]).sum(-1)                     # (N*M, D, Lq)
        out = level_out if out is None else out + level_out
    return out.reshape(n, m * d, lq).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module.

    forward(query (N, Lq, C), reference_points (N, Lq, L, 2) in [0, 1] as (x, y), value_input (N, S, C),
    spatial_shapes (L, 2) long, level_start_index (L,) long, padding_mask (N, S) bool or None) -> (N, Lq, C).
    """

    def __init__(self, dim: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        if dim % n_heads != 0:
            raise ValueError(f"dim {dim} must be divisible by n_heads {n_heads}")
        self.dim, self.n_levels, self.n_heads, self.n_points = dim, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(dim, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(dim, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR init: zero offset weights, biases spread the points over 8 directions."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2 * math.pi / self.n_heads)
        dirs = torch.stack([angles.cos(), angles.sin()], -1)
        dirs = dirs / dirs.abs().max(-1, keepdim=True)[0]
        dirs = dirs.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        dirs = dirs * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1) * OFFSET_INIT_GAIN
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(dirs.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value_input: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        n, lq, _ = query.shape
        m, nl, npt = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(value_input)
        if padding_mask is not None:
            value = value.masked_fill(padding_mask[..., None], 0.0)
        value = value.view(n, value.shape[1], m, self.dim // m)
        offsets = self.sampling_offsets(query).view(n, lq, m, nl, npt, 2)
        weights = softmax_last(self.attention_weights(query).view(n, lq, m, nl * npt)).view(n, lq, m, nl, npt)
        normaliser = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        if _FUSED_CORE is not None and value.is_cuda:
            out = _FUSED_CORE(value, spatial_shapes, level_start_index, locations, weights)
        else:
            out = ms_deform_attn_core(value, spatial_shapes, locations, weights)
        return self.output_proj(out)
