"""SetCriterion: perfect vs random predictions, normalisation, no-object weighting, similarity loss, gradients."""
import math

import pytest
import torch
import torch.nn.functional as F

from hvpl.model.criterion import SetCriterion, matched_pairs, similarity_loss, split_targets
from hvpl.utils.errors import HVPLError

torch.set_num_threads(1)
LOSS_CFG = {"class_weight": 2.0, "mask_weight": 5.0, "dice_weight": 5.0, "sim_weight": 0.5,
            "no_object_weight": 0.1, "num_points": 64, "oversample_ratio": 3.0, "importance_sample_ratio": 0.75}
K, T, H, C = 5, 3, 32, 8


def make_clip(seed):
    """One clip: 3 instances on 4-pixel-aligned boxes; instance 2 absent in frame 1."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(3, T, H, H, dtype=torch.bool)
    for n in range(3):
        for t in range(T):
            y, x = (torch.randint(0, 5, (2,), generator=g) * 4).tolist()
            masks[n, t, y:y + 8 + 4 * n, x:x + 12] = True
    present = torch.ones(3, T, dtype=torch.bool)
    present[2, 1] = False
    masks[2, 1] = False
    return {"labels": torch.tensor([1, 4, 1]), "masks": masks, "present": present}


def random_outputs(b, qf=6, qv=6, seed=0, aux=1):
    g = torch.Generator().manual_seed(seed)
    h = H // 4

    def frame():
        return {"pred_logits": torch.randn(b * T, qf, K + 1, generator=g),
                "pred_masks": torch.randn(b * T, qf, h, h, generator=g) * 3}

    def video():
        return {"pred_logits": torch.randn(b, qv, K + 1, generator=g),
                "pred_masks": torch.randn(b, qv, T, h, h, generator=g) * 3}

    out = {"frame": {**frame(), "aux_outputs": [frame() for _ in range(aux)]},
           "video": {**video(), "aux_outputs": [video() for _ in range(aux)],
                     "pred_fq_embed": torch.randn(b, T, qf, C, generator=g),
                     "pred_cq_embed": torch.randn(b, qv, C, generator=g)}}
    return out


def direction(n, num=3):
    """Unit 2-vectors 120 degrees apart: dot 1 with itself, -0.5 with the others."""
    a = 2 * math.pi * n / num
    return torch.tensor([math.cos(a), math.sin(a)])


def perfect_outputs(clips, qf=6, qv=6, big=20.0):
    """Query n predicts instance n exactly (class, mask, and embeddings that separate instances)."""
    b = len(clips)
    out = random_outputs(b, qf, qv, aux=0)
    fl, fm = out["frame"]["pred_logits"], out["frame"]["pred_masks"]
    vl, vm = out["video"]["pred_logits"], out["video"]["pred_masks"]
    fl.fill_(-big)
    fl[..., K] = big
    vl.fill_(-big)
    vl[..., K] = big
    fm.fill_(-big)
    vm.fill_(-big)
    fq, cq = out["video"]["pred_fq_embed"], out["video"]["pred_cq_embed"]
    fq.zero_()
    cq.zero_()
    for i, clip in enumerate(clips):
        down = F.interpolate(clip["masks"].float(), scale_factor=0.25, mode="area")  # (N, T, h, w)
        for n, label in enumerate(clip["labels"].tolist()):
            vl[i, n, label], vl[i, n, K] = big, -big
            vm[i, n] = big * (2 * down[n] - 1)
            cq[i, n, :2] = big * direction(n)
            for t in range(T):
                if clip["present"][n, t]:
                    fl[i * T + t, n, label], fl[i * T + t, n, K] = big, -big
                    fm[i * T + t, n] = big * (2 * down[n, t] - 1)
                    fq[i, t, n, :2] = big * direction(n)
    return out


def total(losses):
    return sum(v for v in losses.values())


def test_keys_perfect_vs_random():
    # uniform points: importance sampling would put most points on the (necessarily blurred) mask boundaries
    crit = SetCriterion({**LOSS_CFG, "importance_sample_ratio": 0.0}, K)
    clips = [make_clip(0), make_clip(1)]
    g = torch.Generator().manual_seed(0)
    rand = crit(random_outputs(2), clips, g)
    expected = {f"{lvl}_loss_{n}{s}" for lvl in ("frame", "video") for n in ("ce", "mask", "dice") for s in ("", "_aux0")}
    assert set(rand) == expected | {"video_loss_sim"}
    perfect = crit(perfect_outputs(clips), clips, g)
    assert set(perfect) == {k for k in expected if "aux" not in k} | {"video_loss_sim"}
    assert float(total(perfect)) < 0.1 * float(total({k: v for k, v in rand.items() if "aux" not in k}))
    for name in ("frame_loss_ce", "video_loss_ce", "video_loss_sim"):
        assert float(perfect[name]) < 1e-3, name
    assert float(perfect["frame_loss_dice"]) < 0.5 and float(perfect["video_loss_dice"]) < 0.5  # weighted x5


def test_mask_loss_normalised_by_number_of_gt_instances():
    """Zero mask logits give BCE = log 2 on every point; 2 queries for 3 instances -> 2/3 of the weight x log 2."""
    crit = SetCriterion(LOSS_CFG, K)
    clip = make_clip(3)
    out = random_outputs(1, qf=2, qv=2, aux=0)
    out["frame"]["pred_masks"].zero_()
    out["video"]["pred_masks"].zero_()
    losses = crit(out, [clip])
    assert float(losses["video_loss_mask"]) == pytest.approx(5.0 * math.log(2) * 2 / 3, rel=1e-5)
    # frame targets: 3 + 2 + 3 = 8 instances, 2 matched per frame -> 6 matched
    assert float(losses["frame_loss_mask"]) == pytest.approx(5.0 * math.log(2) * 6 / 8, rel=1e-5)
    out4 = random_outputs(1, qf=4, qv=4, aux=0)
    out4["video"]["pred_masks"].zero_()
    assert float(crit(out4, [clip])["video_loss_mask"]) == pytest.approx(5.0 * math.log(2), rel=1e-5)


def _class_loss(crit, logits, targets, indices):
    """One level's class loss: logits (B, Q, K+1) -> scalar."""
    return crit.class_loss_levels(logits[None], targets, matched_pairs([indices], targets, logits.device))[0]


def test_class_loss_no_object_weight():
    crit = SetCriterion(LOSS_CFG, K)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, K + 1, generator=g)
    targets = [{"labels": torch.tensor([3, 0])}, {"labels": torch.tensor([2])}]
    indices = [(torch.tensor([1, 3]), torch.tensor([0, 1])), (torch.tensor([0]), torch.tensor([0]))]
    got = _class_loss(crit, logits, targets, indices)
    cls = {(0, 1): 3, (0, 3): 0, (1, 0): 2}
    num = den = 0.0
    for b in range(2):
        for q in range(4):
            c = cls.get((b, q), K)
            w = 1.0 if c < K else 0.1
            num += -w * float(torch.log_softmax(logits[b, q].double(), -1)[c])
            den += w
    assert float(got) == pytest.approx(num / den, rel=1e-5)
    crit_w1 = SetCriterion({**LOSS_CFG, "no_object_weight": 1.0}, K)
    assert float(_class_loss(crit_w1, logits, targets, indices)) == pytest.approx(
        float(F.cross_entropy(logits.transpose(1, 2), torch.tensor([[K, 3, K, 0], [2, K, K, K]]))), rel=1e-5)


def test_similarity_loss_by_hand():
    g = torch.Generator().manual_seed(2)
    fq, cq = torch.randn(1, 2, 3, 4, generator=g), torch.randn(1, 3, 4, generator=g)
    frame_idx = [(torch.tensor([2, 0]), torch.tensor([0, 1])), (torch.tensor([1]), torch.tensor([0]))]
    frame_tg = [{"ids": torch.tensor([0, 1])}, {"ids": torch.tensor([1])}]
    clip_idx = [(torch.tensor([0, 2]), torch.tensor([1, 0]))]
    clip_tg = [{"ids": torch.tensor([0, 1])}]
    vecs = [(fq[0, 0, 2], 0), (fq[0, 0, 0], 1), (fq[0, 1, 1], 1), (cq[0, 0], 1), (cq[0, 2], 0)]
    terms = []
    for a, ia in vecs:
        for b, ib in vecs:
            z = float(a @ b)
            y = 1.0 if ia == ib else 0.0
            terms.append(-(y * math.log(torch.sigmoid(torch.tensor(z)).item() + 1e-300)
                           + (1 - y) * math.log(1 - torch.sigmoid(torch.tensor(z, dtype=torch.float64)).item())))
    got = similarity_loss(fq, cq, frame_idx, frame_tg, clip_idx, clip_tg)
    assert float(got) == pytest.approx(sum(terms) / len(terms), rel=1e-4)


def test_split_targets_presence():
    clip = make_clip(4)
    frames, videos = split_targets([clip], 40, 36, torch.device("cpu"))
    assert len(frames) == T and len(videos) == 1
    assert [len(f["labels"]) for f in frames] == [3, 2, 3]
    assert frames[1]["ids"].tolist() == [0, 1] and videos[0]["masks"].shape == (3, T, 40, 36)
    assert torch.equal(frames[2]["masks"][:, :H, :H], clip["masks"][:, 2]) and not frames[2]["masks"][:, H:].any()
    clip["present"][1] = False
    assert videos[0]["ids"].tolist() == [0, 1, 2]
    _, videos = split_targets([clip], H, H, torch.device("cpu"))
    assert videos[0]["ids"].tolist() == [0, 2]


def test_gradients_finite_and_deterministic():
    crit = SetCriterion(LOSS_CFG, K)
    clips = [make_clip(5), make_clip(6)]
    out = random_outputs(2, seed=3)
    leaves = [out["frame"]["pred_masks"], out["video"]["pred_logits"], out["video"]["pred_masks"],
              out["video"]["pred_fq_embed"], out["video"]["pred_cq_embed"], out["frame"]["aux_outputs"][0]["pred_logits"]]
    for t in leaves:
        t.requires_grad_(True)
    l1 = crit(out, clips, torch.Generator().manual_seed(7))
    total(l1).backward()
    for t in leaves:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    l2 = crit(out, clips, torch.Generator().manual_seed(7))
    assert all(torch.equal(l1[k], l2[k]) for k in l1)
    l3 = crit(out, clips, torch.Generator().manual_seed(8))
    assert not torch.equal(l1["video_loss_mask"], l3["video_loss_mask"])


def test_empty_clip_and_errors():
    crit = SetCriterion(LOSS_CFG, K)
    clip = make_clip(0)
    empty = {"labels": clip["labels"][:0], "masks": clip["masks"][:0], "present": clip["present"][:0]}
    out = random_outputs(1, aux=0)
    losses = crit(out, [empty])
    assert float(losses["video_loss_mask"]) == 0.0 and float(losses["video_loss_ce"]) > 0
    assert torch.isfinite(total(losses))
    with pytest.raises(HVPLError, match="num_points"):
        SetCriterion({k: v for k, v in LOSS_CFG.items() if k != "num_points"}, K)
    with pytest.raises(ValueError, match="classes"):
        SetCriterion(LOSS_CFG, K + 1)(out, [clip])


def _fixed_points(shape, generator, device, dtype=torch.float32):
    """Deterministic stand-in for rand_points: every row gets the same well-spread points."""
    n = shape[-2] if len(shape) == 3 else shape[0]
    j = torch.arange(n, dtype=torch.float64)[:, None]
    pts = torch.cat([(j * 0.6180339 + 0.1) % 1.0, (j * 0.7548776 + 0.3) % 1.0], 1).to(dtype)
    return pts.expand(shape).to(device) if len(shape) == 3 else pts


def test_levels_scored_together_equal_each_level_alone(monkeypatch):
    """Batching the output levels must not mix them: with the same points, every level's terms equal the
    terms of that level scored as the only output."""
    import hvpl.model.matcher as matcher_mod
    import hvpl.model.point_sampling as ps_mod
    monkeypatch.setattr(ps_mod, "rand_points", _fixed_points)
    monkeypatch.setattr(matcher_mod, "rand_points", _fixed_points)
    crit = SetCriterion(LOSS_CFG, K)
    clip = make_clip(9)
    out = random_outputs(1, seed=4, aux=2)
    together = crit(out, [clip])
    for prefix in ("frame", "video"):
        levels = [out[prefix]] + out[prefix]["aux_outputs"]
        for i, level in enumerate(levels):
            alone = {"pred_logits": level["pred_logits"], "pred_masks": level["pred_masks"], "aux_outputs": []}
            single = crit({prefix: alone}, [clip])
            suffix = "" if i == 0 else f"_aux{i - 1}"
            for name in ("ce", "mask", "dice"):
                got, want = together[f"{prefix}_loss_{name}{suffix}"], single[f"{prefix}_loss_{name}"]
                assert float(got) == pytest.approx(float(want), rel=1e-5, abs=1e-7), (prefix, i, name)
    assert len({round(float(together[f"video_loss_ce{s}"]), 6) for s in ("", "_aux0", "_aux1")}) == 3
