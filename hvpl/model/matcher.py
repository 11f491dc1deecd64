"""Hungarian matching of predictions to ground-truth instances (method.md Section 4), frame and video level.

Cost of assigning query q to target n:
``cost_class * (-p_q(label_n)) + cost_mask * BCE(q, n) + cost_dice * dice(q, n)``, where p is the softmax over
K+1 classes and BCE / dice are computed on ``num_points`` uniformly random points shared by all predictions and
targets (at video level the same points in every frame, and a track is compared over all its frames at once).
The assignment minimising the summed cost is found with ``scipy.optimize.linear_sum_assignment``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from hvpl.model.point_sampling import point_sample, rand_points

# Stands in for NaN / inf costs: linear_sum_assignment needs finite ones.
INFEASIBLE_COST = 1e8


def batch_bce_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid BCE between every prediction and every target.

    logits: (..., Q, P) mask logits on P points; targets: (N, P) in [0, 1]. Returns (..., Q, N).
    """
    num_points = logits.shape[-1]
    # BCE(x, y) = softplus(x) - x * y, so the sum over points is sum softplus(x) - x . y (one softplus pass)
    return (F.softplus(logits).sum(-1, keepdim=True) - logits @ targets.T) / num_points


def batch_dice_cost(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft dice (smoothed by 1) between every prediction and every target.

    logits: (..., Q, P); targets: (N, P). Returns (..., Q, N).
    """
    probs = logits.sigmoid()
    numerator = 2.0 * probs @ targets.T
    denominator = probs.sum(-1, keepdim=True) + targets.sum(-1)
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


def _finite_numpy(cost: torch.Tensor) -> np.ndarray:
    """A CPU cost tensor as numpy with NaN/inf replaced by large finite costs."""
    return torch.nan_to_num(cost, nan=INFEASIBLE_COST, posinf=INFEASIBLE_COST, neginf=-INFEASIBLE_COST).numpy()


def _assign_numpy(cost: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, N) finite costs -> the minimum-cost assignment as (query indices, target indices), LongTensors."""
    if cost.size == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    rows, cols = linear_sum_assignment(cost)
    return torch.from_numpy(rows.astype(np.int64)), torch.from_numpy(cols.astype(np.int64))


def sample_tracks(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Read masks at the same points in every frame.

    masks: (M, T, H, W) (logits or 0/1); coords: (P, 2) normalised (x, y). Returns (M, T * P) float32.
    """
    m, t = masks.shape[:2]
    if m == 0:
        return masks.new_zeros((0, t * coords.shape[0]), dtype=torch.float32)
    grid = coords.unsqueeze(0).expand(m, -1, -1)
    return point_sample(masks.float(), grid).reshape(m, -1)


class HungarianMatcher(nn.Module):
    """Bipartite matching between the queries of one image / clip and its targets.

    Args: cost weights (``cost_class``, ``cost_mask``, ``cost_dice``) and ``num_points`` sampled per match.
    """

    def __init__(self, cost_class: float, cost_mask: float, cost_dice: float, num_points: int):
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(self, logits: torch.Tensor, pred_masks: torch.Tensor, labels: torch.Tensor,
                    tgt_masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        """Matching cost for one image or clip, for any number of output levels at once.

        logits: (..., Q, K+1); pred_masks: (..., Q, T, h, w) (the same leading dims, e.g. L output levels);
        labels: (N,); tgt_masks: (N, T, H', W') covering the same (padded) extent as the predictions;
        coords: (P, 2), shared by every level. Returns (..., Q, N) float32 on the CPU.
        """
        lead = pred_masks.shape[:-3]
        probs = logits.float().softmax(-1)
        cost = -self.cost_class * probs[..., labels]
        pred_pts = sample_tracks(pred_masks.reshape(-1, *pred_masks.shape[-3:]), coords)
        pred_pts = pred_pts.reshape(*lead, pred_pts.shape[-1])
        tgt_pts = sample_tracks(tgt_masks, coords)
        cost = cost + self.cost_mask * batch_bce_cost(pred_pts, tgt_pts)
        cost = cost + self.cost_dice * batch_dice_cost(pred_pts, tgt_pts)
        return cost.cpu()

    @staticmethod
    def assign(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Minimum-cost assignment of a (Q, N) cost matrix -> (query indices, target indices), LongTensors (M,)."""
        return _assign_numpy(_finite_numpy(cost))

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict], generator: torch.Generator | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match every batch element of one output level.

        outputs: ``pred_logits`` (B, Q, K+1) and ``pred_masks`` (B, Q, h, w) [frame] or (B, Q, T, h, w) [video].
        targets: B dicts with ``labels`` (N,) and ``masks`` (N, H', W') [frame] or (N, T, H', W') [video],
        zero-padded to the extent the predictions cover.
        Returns B pairs (query indices, target indices), LongTensors of length min(Q, N).
        """
        return self.match_levels(outputs["pred_logits"][None], outputs["pred_masks"][None], targets, generator)[0]

    @torch.no_grad()
    def match_levels(self, logits: torch.Tensor, pred_masks: torch.Tensor, targets: list[dict],
                     generator: torch.Generator | None = None) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Match L output levels (final + aux) of every batch element, one cost computation per element.

        logits: (L, B, Q, K+1); pred_masks: (L, B, Q, h, w) [frame] or (L, B, Q, T, h, w) [video]; targets as in
        :meth:`forward`. The random points of element b are drawn once and shared by its L levels.
        Returns L lists of B pairs (query indices, target indices).
        """
        video = pred_masks.dim() == 6
        levels = logits.shape[0]
        indices: list[list] = [[] for _ in range(levels)]
        for b, tgt in enumerate(targets):
            labels = tgt["labels"]
            preds = pred_masks[:, b] if video else pred_masks[:, b].unsqueeze(2)  # (L, Q, T, h, w)
            if labels.numel() == 0:
                for per_level in indices:
                    per_level.append(self.assign(torch.zeros(preds.shape[1], 0)))
                continue
            masks = tgt["masks"] if video else tgt["masks"].unsqueeze(1)
            coords = rand_points((self.num_points, 2), generator, preds.device)
            cost = self.cost_matrix(logits[:, b], preds, labels, masks.to(preds.device), coords)
            for per_level, level_cost in zip(indices, _finite_numpy(cost)):
                per_level.append(_assign_numpy(level_cost))
        return indices
