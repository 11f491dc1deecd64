"""Whole video -> YouTube-VIS results (method.md Section 1 "Inference per video", protocol.md Section 4).

Steps for one video:
1. ``model.forward_video(frames)`` -> per query group k: video logits (Qv, K+1) and mask logits (Qv, T, h, w).
2. Logit manipulation per group (``hvpl.model.classifier.manipulate_logits`` with the group's delta) when deltas
   are given and the group has classes outside its own task to suppress (at step 0 there are none, so the base
   model is scored unchanged).
3. Softmax over K+1, drop no-object, concatenate the groups' queries, flatten (query, class), keep the top-k
   scores (stable sort: ties keep query-major order), no threshold.
4. Mask logits upsampled (bilinear) to the padded input size, cropped to the valid region, resized (bilinear) to
   the original H0 x W0 and binarised at logit 0.
5. Score = class probability x mean sigmoid over the pixels (all frames) whose sigmoid is > 0.5, taken on the
   mask at the network's input resolution (step 4 before the resize to H0 x W0), as the authors' code does.

Frames whose binarised mask is empty are written as an EMPTY compressed RLE (not ``null``): the YouTube-VIS
evaluator decodes it to zero area, which is what an empty prediction means, and the file stays uniform.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from hvpl.data.masks import encode_mask
from hvpl.model.classifier import deltas_for_groups, manipulate_logits, task_slices
from hvpl.model.pixel_decoder import MASK_STRIDE

# Keeps the mean-sigmoid score finite for an empty mask (the score is then 0).
SCORE_EPS = 1e-6


def group_probabilities(groups: list[dict], classes_per_task: Sequence[int], deltas: Sequence[float] | None
                        ) -> torch.Tensor:
    """Per-group logits (Qg, K+1) -> class probabilities of all groups' queries (sum Qg, K), no-object dropped."""
    num_classes = sum(classes_per_task)
    slices = task_slices(classes_per_task)
    group_deltas = deltas_for_groups(deltas, len(slices)) if deltas is not None else None
    probs = []
    for group in groups:
        logits = group["pred_logits"].float()
        if logits.shape[-1] != num_classes + 1:
            raise ValueError(f"group {group['task']}: {logits.shape[-1]} logits, expected {num_classes} + 1")
        task = int(group["task"])
        if group_deltas is not None and slices[task].stop - slices[task].start < num_classes:
            logits = manipulate_logits(logits, slices[task], group_deltas[task])
        probs.append(logits.softmax(-1)[:, :num_classes])
    return torch.cat(probs, 0)


def select_topk(probs: torch.Tensor, topk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """probs (Q, K) -> (scores, query indices, class indices) of the top-k (query, class) pairs, each (k,)."""
    num_classes = probs.shape[1]
    flat = probs.flatten()
    order = torch.sort(flat, descending=True, stable=True).indices[:min(topk, flat.numel())]
    return flat[order], order // num_classes, order % num_classes


def input_track(logits: torch.Tensor, padded: tuple[int, int], valid: tuple[int, int]) -> torch.Tensor:
    """Mask logits (T, h, w) -> (T, Hv, Wv) at the network's input resolution: upsampled (bilinear) to the
    padded input size, cropped to the valid (unpadded) region."""
    x = F.interpolate(logits[:, None].float(), size=padded, mode="bilinear", align_corners=False)
    return x[:, 0, :valid[0], :valid[1]]


def resize_track(logits: torch.Tensor, padded: tuple[int, int], valid: tuple[int, int], orig: tuple[int, int]
                 ) -> torch.Tensor:
    """Mask logits (T, h, w) -> (T, H0, W0): upsample to the padded input, crop the valid region, resize."""
    x = input_track(logits, padded, valid)
    return F.interpolate(x[:, None], size=orig, mode="bilinear", align_corners=False)[:, 0]


def track_result(logits: torch.Tensor, sizes: tuple, chunk: int) -> tuple[list[dict], float]:
    """One query's mask logits (T, h, w) -> (per-frame compressed RLEs at H0 x W0, mask score).

    ``sizes`` = (padded, valid, orig) sizes. The mask score (mean sigmoid over the pixels whose sigmoid is > 0.5)
    is taken on the mask at the input resolution, before the resize to H0 x W0 (method.md "Inference per
    video"); the RLEs binarise the resized logits at 0. Frames are processed ``chunk`` at a time.
    """
    padded, valid, orig = sizes
    segs, fg_sum, fg_count = [], 0.0, 0
    for start in range(0, logits.shape[0], chunk):
        interim = input_track(logits[start:start + chunk], padded, valid)
        soft = interim.sigmoid()
        fg = soft > 0.5
        fg_sum += float((soft * fg).sum())
        fg_count += int(fg.sum())
        full = F.interpolate(interim[:, None], size=orig, mode="bilinear", align_corners=False)[:, 0]
        segs.extend(encode_mask(m) for m in (full > 0).cpu().numpy().astype(np.bool_))
    return segs, fg_sum / (fg_count + SCORE_EPS)


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def _run_model(model, frames: torch.Tensor) -> list[dict]:
    """forward_video in eval mode without autograd; restores the model's training flag."""
    was_training = bool(getattr(model, "training", False))
    if was_training:
        model.eval()
    try:
        with torch.no_grad():
            return model.forward_video(frames)
    finally:
        if was_training:
            model.train()


def predict_video(model, video_item: dict, deltas: Sequence[float] | None, topk: int,
                  class_order: Sequence[int]) -> list[dict]:
    """Results of one video.

    model: exposes ``forward_video(frames (T, 3, H, W)) -> [{"pred_logits" (Qv, K+1), "pred_masks" (Qv, T, h, w),
    "task": k}]`` and ``classes_per_task``; video_item: a VideoDataset item (``video_id``, ``images`` (T, 3, H, W)
    0..255, ``orig_size`` (H0, W0)); deltas: the scenario's logit deltas, or None for no manipulation (also
    ignored when ``model.method.logit_manipulation`` is False);
    class_order: dataset category id of every contiguous label (the model file's ``class_order``).
    Returns up to ``topk`` dicts {video_id, category_id, score, segmentations: [RLE per frame]} in the order of
    the top-k class probabilities (the final score also includes the mask score).
    """
    classes_per_task = list(model.classes_per_task)
    if len(class_order) < sum(classes_per_task):
        raise ValueError(f"class_order lists {len(class_order)} categories, the model has {sum(classes_per_task)}")
    method = getattr(model, "method", None)
    if method is not None and not getattr(method, "logit_manipulation", True):
        deltas = None  # finetune / joint: scored without manipulation whatever the scenario lists
    frames = video_item["images"].to(_device(model)).float()
    groups = _run_model(model, frames)
    probs = group_probabilities(groups, classes_per_task, deltas)
    masks = torch.cat([g["pred_masks"] for g in groups], 0)  # (sum Qg, T, h, w)
    scores, queries, labels = select_topk(probs, topk)
    h, w = masks.shape[-2:]
    sizes = ((h * MASK_STRIDE, w * MASK_STRIDE), tuple(frames.shape[-2:]), tuple(int(s) for s in video_item["orig_size"]))
    chunk = int(getattr(model, "chunk_frames", 0) or masks.shape[1])
    cache: dict[int, tuple[list[dict], float]] = {}
    results = []
    for score, query, label in zip(scores.tolist(), queries.tolist(), labels.tolist()):
        if query not in cache:
            cache[query] = track_result(masks[query], sizes, chunk)
        segs, mask_score = cache[query]
        results.append({"video_id": int(video_item["video_id"]), "category_id": int(class_order[label]),
                        "score": float(score * mask_score), "segmentations": segs})
    return results
