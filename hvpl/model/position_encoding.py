"""DETR-style 2-D sine positional encoding (used by the pixel decoder and the frame decoder)."""
from __future__ import annotations

import math

import torch
from torch import nn


# Encodings without a padding mask depend only on (shape, device, dtype): the newest few are kept.
CACHE_SIZE = 8


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine encoding of the (y, x) position of every pixel of a feature map.

    The first ``num_pos_feats`` output channels encode y, the last ``num_pos_feats`` encode x; within
    each half, channels alternate sin/cos of the position scaled by ``temperature ** (2 * (i // 2) / F)``.
    With ``normalize`` the cumulative positions are rescaled to (0, 2*pi] first. Calls without a mask return a
    cached tensor (the same values a fresh computation gives; it needs no gradient): do not modify it in place.
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000, normalize: bool = True,
                 scale: float = 2 * math.pi):
        super().__init__()
        if num_pos_feats % 2 != 0:
            raise ValueError(f"num_pos_feats must be even, got {num_pos_feats}")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self._cache: dict = {}

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, C, H, W) (only its shape, device and dtype are used); mask: optional (N, H, W) bool,
        True = padding. Returns (N, 2 * num_pos_feats, H, W) in x's dtype."""
        if mask is not None:
            return self.encode(x, mask)
        key = (tuple(x.shape), x.device, x.dtype)
        pos = self._cache.get(key)
        if pos is None:
            with torch.no_grad():
                pos = self.encode(x, None)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = pos
        return pos

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The encoding computed afresh (see :meth:`forward`)."""
        n, _, h, w = x.shape
        if mask is None:
            not_mask = torch.ones(n, h, w, device=x.device, dtype=torch.float32)
        else:
            not_mask = (~mask).to(torch.float32)
        y_embed = not_mask.cumsum(1)
        x_embed = not_mask.cumsum(2)
        if self.normalize:
            eps = 1e-6  # avoids 0/0 on fully padded rows/columns
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, device=x.device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_x = _interleave_sin_cos(x_embed[..., None] / dim_t)
        pos_y = _interleave_sin_cos(y_embed[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2).to(x.dtype)


def _interleave_sin_cos(t: torch.Tensor) -> torch.Tensor:
    """t: (N, H, W, F) -> (N, H, W, F) with sin on even and cos on odd channels."""
    return torch.stack((t[..., 0::2].sin(), t[..., 1::2].cos()), dim=4).flatten(3)
