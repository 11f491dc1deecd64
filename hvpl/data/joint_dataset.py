"""Joint training on videos and image pseudo-videos (COCO, protocol.md Section 1: optional joint training).

``JointClipDataset`` interleaves two :class:`~hvpl.data.clip_dataset.ClipDataset` s at a fixed ratio and is
still indexed by an unbounded DRAW NUMBER, so the trainer's resume and multi-process guarantees hold unchanged.
An image pseudo-video has one frame: its clips repeat that frame (with one clip-level augmentation).
"""
from __future__ import annotations

from fractions import Fraction

import torch

from hvpl.utils.errors import HVPLError

MAX_RATIO_DENOMINATOR = 1000   # the ratio is used as an exact fraction (0.75 -> 3/4)
# the image dataset's draws use seed + this, so video draw k and image draw k are not drawn alike
IMAGE_SEED_OFFSET = 1_000_003


class JointClipDataset(torch.utils.data.Dataset):
    """Video clips and image pseudo-clips sampled image:video = 1 : ``video_ratio`` (protocol.md: 1:0.75 for
    YouTube-VIS 2019, 1:0.8 for 2021, 1:0.25 for OVIS; VITA's dataset ratio ``[1.0, r]`` for (COCO, video)).

    With p = 1 / (1 + r) the share of image draws, draw i is an image draw iff floor((i + 1) p) > floor(i p).
    The two kinds interleave evenly, and each source sees consecutive draw numbers of its own (image draw
    floor(i p), video draw i - floor(i p)), so within a source the epoch permutations of ClipDataset are kept.
    ``ds[i]`` depends only on the two datasets' seeds and i.
    """

    def __init__(self, videos, images, video_ratio: float):
        ratio = Fraction(video_ratio).limit_denominator(MAX_RATIO_DENOMINATOR)
        if ratio <= 0:
            raise HVPLError(f"data.coco_ratio (r of the image:video sampling ratio 1:r) must be > 0, "
                            f"got {video_ratio}")
        share = 1 / (1 + ratio)
        self.videos, self.images = videos, images
        self._num, self._den = share.numerator, share.denominator

    def source(self, index: int) -> tuple[str, int]:
        """Draw ``index`` -> ("video" | "image", the draw number within that source)."""
        if index < 0:
            raise IndexError(index)
        before = index * self._num // self._den
        if (index + 1) * self._num // self._den > before:
            return "image", before
        return "video", index - before

    def __getitem__(self, index: int) -> dict:
        kind, draw = self.source(int(index))
        return (self.images if kind == "image" else self.videos)[draw]

    def __len__(self) -> int:
        return len(self.videos) + len(self.images)
