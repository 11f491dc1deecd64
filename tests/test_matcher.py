"""Hungarian matcher: optimal versus brute force, shapes, video-level points, point sampling helpers."""
import itertools

import pytest
import torch
import torch.nn.functional as F

from hvpl.model.matcher import HungarianMatcher
from hvpl.model.point_sampling import pad_to, point_sample, uncertain_point_coords

torch.set_num_threads(1)
WEIGHTS = dict(cost_class=2.0, cost_mask=5.0, cost_dice=5.0)


def reference_cost(logits, pred_masks, labels, tgt_masks, coords):
    """Independent (loop) cost: reads masks by explicit bilinear interpolation at pixel centres."""
    q, n = logits.shape[0], labels.shape[0]
    probs = torch.softmax(logits.double(), -1)

    def read(m):  # m (T, H, W) -> (T*P,), bilinear, align_corners=False, zero outside
        t_, h, w = m.shape
        vals = []
        for t in range(t_):
            for x, y in coords.double().tolist():
                px, py = x * w - 0.5, y * h - 0.5
                x0, y0 = int(torch.floor(torch.tensor(px))), int(torch.floor(torch.tensor(py)))
                acc = 0.0
                for dx in (0, 1):
                    for dy in (0, 1):
                        xi, yi = x0 + dx, y0 + dy
                        wgt = (1 - abs(px - xi)) * (1 - abs(py - yi))
                        if 0 <= xi < w and 0 <= yi < h:
                            acc += wgt * float(m[t, yi, xi])
                vals.append(acc)
        return torch.tensor(vals, dtype=torch.float64)

    cost = torch.zeros(q, n, dtype=torch.float64)
    for i in range(q):
        p = read(pred_masks[i])
        for j in range(n):
            g = read(tgt_masks[i * 0 + j].float())
            bce = F.binary_cross_entropy_with_logits(p, g)
            s = p.sigmoid()
            dice = 1 - (2 * (s * g).sum() + 1) / (s.sum() + g.sum() + 1)
            cost[i, j] = -WEIGHTS["cost_class"] * probs[i, labels[j]] + WEIGHTS["cost_mask"] * bce \
                + WEIGHTS["cost_dice"] * dice
    return cost


def brute_force_min(cost):
    q, n = cost.shape
    best = float("inf")
    for perm in itertools.permutations(range(q), n):
        best = min(best, sum(float(cost[perm[j], j]) for j in range(n)))
    return best


@pytest.mark.parametrize("seed,q,n,t", [(0, 3, 2, 1), (1, 5, 4, 1), (2, 6, 3, 2), (3, 4, 4, 3), (4, 6, 1, 2)])
def test_matching_is_optimal(seed, q, n, t):
    g = torch.Generator().manual_seed(seed)
    k = 5
    logits = torch.randn(q, k + 1, generator=g) * 2
    pred = torch.randn(q, t, 4, 4, generator=g) * 3
    tgt = torch.rand(n, t, 16, 16, generator=g) > 0.5
    labels = torch.randint(0, k, (n,), generator=g)
    coords = torch.rand(12, 2, generator=g)
    matcher = HungarianMatcher(num_points=12, **WEIGHTS)
    cost = matcher.cost_matrix(logits, pred, labels, tgt, coords)
    ref = reference_cost(logits, pred, labels, tgt, coords)
    assert torch.allclose(cost.double(), ref, atol=1e-4)
    rows, cols = matcher.assign(cost)
    assert len(rows) == n and sorted(cols.tolist()) == list(range(n)) and len(set(rows.tolist())) == n
    got = sum(float(ref[r, c]) for r, c in zip(rows.tolist(), cols.tolist()))
    assert got == pytest.approx(brute_force_min(ref), abs=1e-4)


def test_forward_frame_and_video_obvious_matches():
    """Queries that copy a target's mask and class are matched to it (frame and video level)."""
    g = torch.Generator().manual_seed(5)
    k, t, h = 4, 2, 8
    tgt = torch.zeros(3, t, 4 * h, 4 * h, dtype=torch.bool)
    tgt[0, :, :10, :10] = True
    tgt[1, :, 15:, 15:] = True
    tgt[2, 0, :10, 20:] = True
    labels = torch.tensor([2, 0, 3])
    perm = [4, 1, 0]  # query perm[j] copies target j
    logits = torch.full((1, 5, k + 1), -5.0)
    pred = torch.full((1, 5, t, h, h), -8.0)
    for j, q in enumerate(perm):
        logits[0, q, labels[j]] = 5.0
        pred[0, q] = F.interpolate(tgt[j].float()[None], size=(h, h), mode="area")[0] * 16 - 8
    matcher = HungarianMatcher(num_points=64, **WEIGHTS)
    (rows, cols), = matcher({"pred_logits": logits, "pred_masks": pred}, [{"labels": labels, "masks": tgt}], g)
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 4, 1: 1, 2: 0}
    frame_out = {"pred_logits": logits, "pred_masks": pred[:, :, 0]}  # frame 0 alone
    (rows, cols), = matcher(frame_out, [{"labels": labels, "masks": tgt[:, 0]}], g)
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 4, 1: 1, 2: 0}


def test_empty_targets():
    matcher = HungarianMatcher(num_points=8, **WEIGHTS)
    out = {"pred_logits": torch.randn(2, 3, 4), "pred_masks": torch.randn(2, 3, 4, 4)}
    tgts = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 16, 16, dtype=torch.bool)}] * 2
    for rows, cols in matcher(out, tgts):
        assert rows.numel() == 0 and cols.numel() == 0


def test_point_sample_matches_interpolation_of_aligned_points():
    """Sampling at pixel centres returns the pixel values; a 4x-upsampled map agrees at the same coords."""
    m = torch.randn(2, 3, 5, 7)
    ys, xs = torch.meshgrid(torch.arange(5), torch.arange(7), indexing="ij")
    coords = torch.stack([(xs.flatten() + 0.5) / 7, (ys.flatten() + 0.5) / 5], -1)[None].expand(2, -1, -1)
    assert torch.allclose(point_sample(m, coords), m.flatten(2), atol=1e-5)
    big = m.repeat_interleave(4, 2).repeat_interleave(4, 3)
    assert torch.allclose(point_sample(big, coords), m.flatten(2), atol=1e-5)


def test_uncertain_points_prefer_boundary_and_are_deterministic():
    xs = (torch.arange(32) + 0.5) / 32
    logits = (100.0 * (xs - 0.5)).expand(32, 32)[None, None].contiguous()  # boundary at x = 0.5
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    c1 = uncertain_point_coords(logits, 40, 10.0, 0.75, g1)
    c2 = uncertain_point_coords(logits, 40, 10.0, 0.75, g2)
    assert c1.shape == (1, 40, 2) and torch.equal(c1, c2)
    dist = (c1[0, :, 0] - 0.5).abs()
    assert dist[:30].max() < 0.1  # the 30 importance-sampled points of 400 candidates hug the boundary
    assert dist[30:].mean() > 0.1  # the 10 uniform ones do not
    assert not torch.equal(c1, uncertain_point_coords(logits, 40, 10.0, 0.75, g1))


def test_pad_to_bool_and_float():
    m = torch.ones(2, 3, 5, 6, dtype=torch.bool)
    p = pad_to(m, 8, 8)
    assert p.shape == (2, 3, 8, 8) and p.dtype == torch.bool and int(p.sum()) == 2 * 3 * 30
    with pytest.raises(ValueError):
        pad_to(m, 4, 8)
