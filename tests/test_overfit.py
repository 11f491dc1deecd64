"""The tiny model, trained from scratch with SetCriterion on ONE synthetic clip, overfits it (mask IoU > 0.8).

Exercises the whole training path (HVPLModel.forward -> SetCriterion -> AdamW) and the inference path
(predict_video -> compressed RLE), with the IoU computed independently from the decoded RLEs.
"""
import numpy as np
import torch
from pycocotools import mask as mask_util

from hvpl.config import load_model_config
from hvpl.model.criterion import SetCriterion
from hvpl.model.hvpl import HVPLModel
from hvpl.model.inference import predict_video

FRAMES, SIZE = 3, 64
MAX_ITERS, CHECK_EVERY, IOU_TARGET = 300, 25, 0.8
LR, CLIP_NORM = 1e-3, 1.0
CLASS_ORDER = [3, 7]  # dataset category ids of the two contiguous labels


def make_clip(seed: int = 0) -> dict:
    """3 frames of 64x64: a moving red square (label 0) partly occluded by a moving blue disc (label 1)."""
    g = torch.Generator().manual_seed(seed)
    images = 60.0 + 60.0 * torch.rand(FRAMES, 3, SIZE, SIZE, generator=g)  # noisy grey background
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    masks = torch.zeros(2, FRAMES, SIZE, SIZE, dtype=torch.bool)
    for t in range(FRAMES):
        masks[0, t, 10 + 2 * t:30 + 2 * t, 8 + 3 * t:28 + 3 * t] = True
        masks[1, t] = (yy - 40) ** 2 + (xx - 38 + 2 * t) ** 2 <= 12 ** 2
    masks[0] &= ~masks[1]
    for n, colour in enumerate(((220.0, 40.0, 40.0), (40.0, 60.0, 220.0))):
        for c in range(3):
            images[:, c][masks[n]] = colour[c]
    return {"images": images, "labels": torch.tensor([0, 1]), "masks": masks,
            "present": torch.ones(2, FRAMES, dtype=torch.bool), "video_id": 1}


def track_ious(model, clip) -> list[float]:
    """Per GT instance: IoU over all frames of the highest-scoring result of its category."""
    item = {"video_id": 1, "images": clip["images"], "orig_size": (SIZE, SIZE), "length": FRAMES}
    results = predict_video(model, item, deltas=None, topk=10, class_order=CLASS_ORDER)
    ious = []
    for n, label in enumerate(clip["labels"].tolist()):
        mine = [r for r in results if r["category_id"] == CLASS_ORDER[label]]
        if not mine:
            ious.append(0.0)
            continue
        best = max(mine, key=lambda r: r["score"])
        pred = np.stack([mask_util.decode({"size": s["size"], "counts": s["counts"].encode()})
                         for s in best["segmentations"]]).astype(bool)
        gt = clip["masks"][n].numpy()
        ious.append(float((pred & gt).sum() / (pred | gt).sum()))
    return ious


def test_tiny_model_overfits_one_clip():
    torch.manual_seed(0)
    cfg = load_model_config("tiny")
    model = HVPLModel(cfg, "joint", 2, [2])
    model.set_step_mode(0)
    model.train()
    criterion = SetCriterion(cfg["loss"], num_classes=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    clip = make_clip()
    gen = torch.Generator().manual_seed(0)
    first_loss, ious = None, [0.0, 0.0]
    for it in range(1, MAX_ITERS + 1):
        losses = criterion(model(clip["images"][None]), [clip], gen)
        loss = sum(losses.values())
        assert torch.isfinite(loss), {k: float(v) for k, v in losses.items()}
        first_loss = loss.item() if first_loss is None else first_loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        optimizer.step()
        if it % CHECK_EVERY == 0:
            ious = track_ious(model, clip)
            assert model.training  # predict_video restores the mode
            if min(ious) > IOU_TARGET:
                break
    assert min(ious) > IOU_TARGET, f"IoU {ious} after {it} iterations"
    assert loss.item() < 0.5 * first_loss
