"""Point sampling of mask logits (method.md Section 4).

Masks are compared on a set of points instead of on whole maps: ``point_sample`` reads a map at normalised
coordinates with bilinear interpolation (``grid_sample``), so predictions at H/4 and targets at H can be compared
on the same points without resizing either. ``uncertain_point_coords`` chooses the points of the mask losses by
uncertainty-based importance sampling (PointRend / Mask2Former): oversample uniformly, keep the most uncertain
fraction (logits closest to 0), fill the rest with uniform points.

Every random draw takes an explicit ``torch.Generator`` (``None`` = the global RNG) so training is reproducible.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rand_points(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform numbers in [0, 1) of ``shape`` drawn from ``generator`` (on its own device) and moved to ``device``."""
    if generator is None:
        return torch.rand(shape, device=device, dtype=dtype)
    return torch.rand(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def point_sample(maps: torch.Tensor, coords: torch.Tensor, align_corners: bool = False) -> torch.Tensor:
    """Bilinear values of ``maps`` at normalised ``coords``.

    maps: (N, C, H, W); coords: (N, P, 2) with (x, y) in [0, 1] (0 = left/top border, 1 = right/bottom border).
    Returns (N, C, P). Points outside the map read zeros.
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2)  # (N, P, 1, 2) in grid_sample's [-1, 1] convention
    out = F.grid_sample(maps.to(grid.dtype), grid, mode="bilinear", padding_mode="zeros",
                        align_corners=align_corners)
    return out.squeeze(3)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of mask logits: -|logit| (highest at the decision boundary). Any shape -> same shape."""
    return -logits.abs()


def uncertain_point_coords(logits: torch.Tensor, num_points: int, oversample_ratio: float,
                           importance_sample_ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Importance-sampled point coordinates for mask losses.

    logits: (N, 1, h, w) mask logits (detached by the caller or not; no gradient flows into the coordinates).
    Draws ``int(num_points * oversample_ratio)`` uniform candidates, keeps the ``int(importance_sample_ratio *
    num_points)`` most uncertain ones and adds uniform points up to ``num_points``.
    Returns (N, num_points, 2) normalised (x, y) coordinates.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    n = logits.shape[0]
    device = logits.device
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    with torch.no_grad():
        candidates = rand_points((n, num_sampled, 2), generator, device)
        point_unc = uncertainty(point_sample(logits.detach(), candidates))[:, 0]  # (N, num_sampled)
        # the order of the chosen points does not matter (losses average over them); unsorted topk is ~2.4x faster
        idx = torch.topk(point_unc, k=num_uncertain, dim=1, sorted=False).indices  # (N, num_uncertain)
        chosen = torch.gather(candidates, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
        if num_random > 0:
            chosen = torch.cat([chosen, rand_points((n, num_random, 2), generator, device)], dim=1)
    return chosen


def pad_to(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Zero-pad (any dtype) the last two dims of ``masks`` (..., H, W) at the bottom/right to (..., height, width).

    Target masks live on the unpadded input; predictions cover the padded input, so targets are padded the same way
    before both are read at the same normalised coordinates.
    """
    h, w = masks.shape[-2:]
    if h > height or w > width:
        raise ValueError(f"mask of size {h}x{w} is larger than the padded size {height}x{width}")
    if (h, w) == (height, width):
        return masks
    out = masks.new_zeros(masks.shape[:-2] + (height, width))
    out[..., :h, :w] = masks
    return out
