"""A training batch: padding clips into one tensor, splitting the model's batch outputs back into clips."""
from __future__ import annotations

import torch
import torch.nn.functional as F

def pad_clips(clips: list[dict], pad_value: torch.Tensor) -> torch.Tensor:
    """Clips of different sizes -> (B, T, 3, H, W), padded at the bottom/right with ``pad_value`` (3,)
    (the pixel mean: zero after the model's normalisation, as Mask2Former pads after normalising)."""
    h = max(c["images"].shape[-2] for c in clips)
    w = max(c["images"].shape[-1] for c in clips)
    mean = pad_value.view(1, 3, 1, 1).to(clips[0]["images"].dtype)
    out = []
    for c in clips:
        img = c["images"] - mean
        img = F.pad(img, (0, w - img.shape[-1], 0, h - img.shape[-2]))
        out.append(img + mean)
    return torch.stack(out)


def _split_tree(node, size: int, count: int) -> list:
    """``count`` per-clip copies of an output tree, every tensor split along dim 0 into chunks of ``size``."""
    if isinstance(node, torch.Tensor):
        return list(node.split(size))
    if isinstance(node, dict):
        parts = {k: _split_tree(v, size, count) for k, v in node.items()}
        return [{k: v[j] for k, v in parts.items()} for j in range(count)]
    if isinstance(node, list):
        parts = [_split_tree(v, size, count) for v in node]
        return [[p[j] for p in parts] for j in range(count)]
    return [node] * count


def split_outputs(outputs: dict, num_clips: int, num_frames: int) -> list[dict]:
    """Outputs of every clip of a batch: frame tensors (B*T, ...) -> B x (T, ...), video tensors (B, ...) ->
    B x (1, ...). The chunks are the views plain slicing gives, but each tensor gets one backward node (a
    concatenation) instead of one full-size zero gradient per clip."""
    per_clip: list[dict] = [{} for _ in range(num_clips)]
    for key, size in (("frame", num_frames), ("video", 1)):
        if key in outputs:
            for j, part in enumerate(_split_tree(outputs[key], size, num_clips)):
                per_clip[j][key] = part
    return per_clip
