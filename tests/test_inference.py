"""predict_video with a fake model: shapes, top-k, category ids, score formula, RLE round trip, manipulation."""
import types

import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_util

from hvpl.model.inference import predict_video

torch.set_num_threads(1)


class FakeModel:
    """Exposes forward_video like HVPLModel; returns fixed tensors."""

    def __init__(self, groups, classes_per_task):
        self.groups = groups
        self.classes_per_task = classes_per_task
        self.seen_frames = None

    def forward_video(self, frames):
        self.seen_frames = frames
        return [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in g.items()} for g in self.groups]


def make_item(t=3, h=40, w=56, orig=(60, 84)):
    return {"video_id": 7, "images": torch.zeros(t, 3, h, w, dtype=torch.uint8), "orig_size": orig, "length": t}


def reference_mask(logits, padded, valid, orig):
    """Independent resize chain per frame with numpy-free torch ops: (T, h, w) -> logits (T, H0, W0)."""
    out = []
    for frame in logits:
        up = F.interpolate(frame[None, None].double(), size=padded, mode="bilinear", align_corners=False)
        up = up[..., :valid[0], :valid[1]]
        out.append(F.interpolate(up, size=orig, mode="bilinear", align_corners=False)[0, 0])
    return torch.stack(out)


def reference_mask_score(logits, padded, valid):
    """Mean sigmoid over pixels with sigmoid > 0.5 of the mask at INPUT resolution (padded, cropped), all frames."""
    up = F.interpolate(logits[:, None].double(), size=padded, mode="bilinear", align_corners=False)
    soft = up[:, 0, :valid[0], :valid[1]].sigmoid()
    fg = soft > 0.5
    return float((soft * fg).sum() / fg.sum().clamp(min=1e-6))


def test_topk_ids_scores_and_rle():
    g = torch.Generator().manual_seed(0)
    t, q, k = 3, 4, 3
    logits = torch.randn(q, k + 1, generator=g) * 2
    masks = torch.randn(q, t, 16, 16, generator=g) * 4  # padded input 64x64, valid 40x56
    model = FakeModel([{"pred_logits": logits, "pred_masks": masks, "task": 0}], [k])
    item = make_item(t)
    res = predict_video(model, item, deltas=None, topk=5, class_order=[12, 3, 40])
    assert len(res) == 5
    probs = logits.softmax(-1)[:, :k]
    order = torch.argsort(probs.flatten(), descending=True)[:5]
    for r, idx in zip(res, order.tolist()):
        qi, ci = divmod(idx, k)
        assert r["video_id"] == 7 and r["category_id"] == [12, 3, 40][ci]
        full = reference_mask(masks[qi], (64, 64), (40, 56), (60, 84))
        fg = full > 0
        mask_score = reference_mask_score(masks[qi], (64, 64), (40, 56))
        assert r["score"] == pytest.approx(float(probs[qi, ci]) * mask_score, rel=1e-4)
        at_orig = float((full.sigmoid() * fg).sum() / fg.sum())    # the score at H0 x W0 differs (60x84 != 40x56)
        assert abs(mask_score - at_orig) > 1e-4 * at_orig
        assert len(r["segmentations"]) == t
        for frame, seg in enumerate(r["segmentations"]):
            assert isinstance(seg["counts"], str) and seg["size"] == [60, 84]
            dec = mask_util.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
            assert (dec != fg[frame].numpy()).sum() <= 2  # float32 vs float64 ties exactly at 0
    assert model.seen_frames.dtype == torch.float32 and model.seen_frames.shape == (t, 3, 40, 56)


def test_topk_larger_than_candidates_and_empty_mask():
    logits = torch.tensor([[3.0, 0.0, -1.0], [0.0, 2.0, 5.0]])
    masks = torch.full((2, 2, 8, 8), -3.0)
    masks[0, 0, 2:5, 2:5] = 4.0  # query 0 has a mask in frame 0 only; query 1 is empty everywhere
    model = FakeModel([{"pred_logits": logits, "pred_masks": masks, "task": 0}], [2])
    res = predict_video(model, make_item(2, 32, 32, (32, 32)), None, topk=100, class_order=[5, 9])
    assert len(res) == 4
    empty = [r for r in res if r["score"] == 0.0]
    assert len(empty) == 2  # query 1 with both classes
    for r in empty:
        assert [mask_util.area(s) for s in r["segmentations"]] == [0, 0]
    full = [r for r in res if r["score"] > 0][0]
    assert mask_util.area(full["segmentations"][0]) > 0 and mask_util.area(full["segmentations"][1]) == 0


def test_groups_concatenated_and_logit_manipulation():
    """Two groups (tasks 0 and 1): manipulation suppresses the other task's classes per group."""
    g = torch.Generator().manual_seed(1)
    cpt = [2, 1]
    l0, l1 = torch.randn(3, 4, generator=g), torch.randn(2, 4, generator=g)
    m0, m1 = torch.randn(3, 2, 4, 4, generator=g), torch.randn(2, 2, 4, 4, generator=g)
    model = FakeModel([{"pred_logits": l0, "pred_masks": m0, "task": 0},
                       {"pred_logits": l1, "pred_masks": m1, "task": 1}], cpt)
    item = make_item(2, 16, 16, (16, 16))
    res = predict_video(model, item, deltas=[0.4], topk=15, class_order=[1, 2, 3])
    assert len(res) == 15  # 5 queries x 3 classes
    by_class = {}
    for r in res:
        by_class.setdefault(r["category_id"], []).append(r["score"])

    def manual(logits, own, delta):
        z = logits.clone().double()
        other = [c for c in range(3) if c not in own]
        z[:, 3] = torch.logit((delta * torch.sigmoid(z[:, other]).sum(1).clamp(0, 1)).clamp(1e-3, 1 - 1e-3))
        z[:, other] = -10.0
        return z.softmax(-1)[:, :3]

    probs = torch.cat([manual(l0, [0, 1], 0.4), manual(l1, [2], 0.4)])  # (5, 3)
    masks = torch.cat([m0, m1])
    expected = []
    for qi in range(5):
        mscore = reference_mask_score(masks[qi], (16, 16), (16, 16))
        expected += [(float(probs[qi, c]) * mscore, c + 1) for c in range(3)]
    expected.sort(reverse=True)
    got = sorted(((r["score"], r["category_id"]) for r in res), reverse=True)
    assert [c for _, c in got] == [c for _, c in expected]
    assert [s for s, _ in got] == pytest.approx([s for s, _ in expected], rel=1e-4, abs=1e-9)
    assert sum(s < 1e-3 for s in by_class[3]) >= 3  # group 0's queries: task-1 class suppressed
    no_manip = predict_video(model, item, deltas=None, topk=15, class_order=[1, 2, 3])
    assert sorted(r["score"] for r in no_manip) != sorted(s for s, _ in got)
    model.method = types.SimpleNamespace(logit_manipulation=False)  # e.g. finetune: deltas ignored
    assert predict_video(model, item, deltas=[0.4], topk=15, class_order=[1, 2, 3]) == no_manip


def test_single_group_not_manipulated_and_short_class_order():
    logits = torch.tensor([[1.0, 0.5, 2.0]])
    masks = torch.ones(1, 1, 4, 4) * 3
    model = FakeModel([{"pred_logits": logits, "pred_masks": masks, "task": 0}], [2])
    item = make_item(1, 16, 16, (16, 16))
    with pytest.raises(ValueError, match="class_order lists 1 categories, the model has 2"):
        predict_video(model, item, None, 2, class_order=[4])
    a = predict_video(model, item, [0.4], 2, class_order=[4, 8])
    b = predict_video(model, item, None, 2, class_order=[4, 8])
    assert [r["score"] for r in a] == [r["score"] for r in b]
    p = logits.softmax(-1)[0]
    assert a[0]["score"] == pytest.approx(float(p[0]) * float(torch.sigmoid(torch.tensor(3.0))), rel=1e-5)
