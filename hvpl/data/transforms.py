"""Clip-consistent augmentation (protocol.md Section 2): one transform drawn per clip, applied to every frame.

Training transform, from a scenario's ``input`` section:

1. with probability ``aug_prob`` (if ``aug_resize`` is not null): resize the short side to a choice of
   ``aug_resize`` (long side <= ``aug_max_size``), then an absolute random crop of ``crop`` = [min, max] pixels
   per side (if ``crop`` is not null);
2. resize the short side to a choice of ``min_size_train`` (long side <= ``max_size_train``);
3. horizontal flip with probability 0.5 (``flip: false`` turns it off).

Test transform: short side ``min_size_test``, long side <= ``max_size_test``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

INPUT_DEFAULTS = {"aug_prob": 0.5, "aug_max_size": 1333, "flip": True, "flip_prob": 0.5}


@dataclass(frozen=True)
class ClipTransform:
    """Geometry shared by every frame of one clip (sizes are (height, width))."""
    pre_size: tuple[int, int] | None   # resize before the crop (None: none)
    crop: tuple[int, int, int, int] | None  # (y0, x0, h, w) in pre-resized coordinates
    size: tuple[int, int]              # final size
    flip: bool


def resize_shape(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """Short side -> ``short`` with the long side capped at ``max_size`` (detectron2's ResizeShortestEdge)."""
    scale = short / min(h, w)
    if max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def _cfg(input_cfg: dict, key: str):
    return input_cfg.get(key, INPUT_DEFAULTS.get(key))


def sample_clip_transform(rng: np.random.Generator, h: int, w: int, input_cfg: dict, train: bool) -> ClipTransform:
    """Draw one clip's transform for frames of size (h, w)."""
    if not train:
        return ClipTransform(None, None, resize_shape(h, w, input_cfg["min_size_test"], input_cfg["max_size_test"]),
                             False)
    pre_size, crop = None, None
    aug = _cfg(input_cfg, "aug_resize")
    if aug and rng.random() < _cfg(input_cfg, "aug_prob"):
        pre_size = resize_shape(h, w, int(rng.choice(aug)), _cfg(input_cfg, "aug_max_size"))
        h, w = pre_size
        crop_range = _cfg(input_cfg, "crop")
        if crop_range:
            ch = int(rng.integers(min(crop_range[0], h), min(crop_range[1], h), endpoint=True))
            cw = int(rng.integers(min(crop_range[0], w), min(crop_range[1], w), endpoint=True))
            y0, x0 = int(rng.integers(0, h - ch, endpoint=True)), int(rng.integers(0, w - cw, endpoint=True))
            crop = (y0, x0, ch, cw)
            h, w = ch, cw
    size = resize_shape(h, w, int(rng.choice(input_cfg["min_size_train"])), input_cfg["max_size_train"])
    flip = bool(_cfg(input_cfg, "flip")) and rng.random() < _cfg(input_cfg, "flip_prob")
    return ClipTransform(pre_size, crop, size, flip)


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _apply(x: torch.Tensor, tf: ClipTransform, mode: str) -> torch.Tensor:
    """x (B, C, H, W) -> transformed (B, C, h, w), same dtype."""
    if tf.pre_size is not None:
        x = _resize(x, tf.pre_size, mode)
    if tf.crop is not None:
        y0, x0, ch, cw = tf.crop
        x = x[..., y0:y0 + ch, x0:x0 + cw]
    x = _resize(x, tf.size, mode)
    return x.flip(-1) if tf.flip else x


def resize_images(images: torch.Tensor, tf: ClipTransform) -> torch.Tensor:
    """Images (T, 3, H, W) -> (T, 3, h, w) of the same dtype (bilinear, antialiased). uint8 frames are resized
    as uint8, as detectron2's PIL resize does: ~10x faster than resizing them as float at full size
    (bench/bench_loading.py); each resize rounds to whole levels (within 1 of a float resize)."""
    return _apply(images, tf, "bilinear")


def apply_to_images(images: torch.Tensor, tf: ClipTransform) -> torch.Tensor:
    """Images (T, 3, H, W) uint8 (or float 0..255) -> (T, 3, h, w) float 0..255 (:func:`resize_images`, then
    float at the output size)."""
    out = resize_images(images, tf)
    return out.float() if out.dtype == torch.uint8 else out.clamp(0, 255)


def apply_to_masks(masks: torch.Tensor, tf: ClipTransform) -> torch.Tensor:
    """Masks (N, T, H, W) bool -> (N, T, h, w) bool (nearest neighbour, on uint8: exact and ~6x faster)."""
    if masks.shape[0] == 0:
        return torch.zeros((0, masks.shape[1], *tf.size), dtype=torch.bool)
    return _apply(masks.to(torch.uint8), tf, "nearest").bool()
