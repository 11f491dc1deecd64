"""Training clips and whole test videos from a (step) YouTube-VIS JSON (DESIGN.md "Data pipeline -> model").

``ClipDataset`` is indexed by a DRAW NUMBER ``i = 0, 1, 2, ...`` (unbounded): draw ``i`` belongs to epoch
``e = i // len(ds)`` and takes the video at position ``i % len(ds)`` of epoch e's seeded permutation; the
clip (frames, augmentation) comes from ``numpy.random.default_rng([seed, i])``. So ``ds[i]`` depends only on
(seed, i): a trainer that resumes at iteration k with batch size b just continues with draws ``k*b, k*b+1, ...``
(with R data-parallel ranks: draw ``(k*R + rank)*b + j``) and sees exactly the data of an uninterrupted run.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hvpl.data.masks import decode_segmentation
from hvpl.data.transforms import apply_to_images, apply_to_masks, resize_images, sample_clip_transform
from hvpl.data.ytvis import check_frames, image_root_of, load_ytvis
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import read_json


def resolve_class_order(json_path: Path, data: dict, class_order=None) -> list[int]:
    """Class order: the sibling classes.json if present, else ``class_order``, else ascending category id."""
    sibling = Path(json_path).parent / "classes.json"
    if sibling.is_file():
        order = read_json(sibling).get("class_order")
        if not isinstance(order, list):
            raise HVPLError(f"{sibling}: missing 'class_order' list")
        return order
    if class_order is not None:
        return list(class_order)
    return sorted(c["id"] for c in data["categories"])


def load_frame(path: Path, height: int, width: int, json_path) -> np.ndarray:
    """RGB frame uint8 (H, W, 3); its size must be the JSON's video size."""
    try:
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise HVPLError(f"{json_path}: cannot read frame {path} ({exc})") from exc
    if img.shape[:2] != (height, width):
        raise HVPLError(f"{json_path}: frame {path} is {img.shape[0]}x{img.shape[1]}, the video says {height}x{width}")
    return img


def load_frames(root: Path, video: dict, indices, json_path) -> torch.Tensor:
    """Frames ``indices`` of ``video`` -> uint8 (T, 3, H, W) in channels-last memory (each distinct file read
    once)."""
    cache = {}
    for t in indices:
        if t not in cache:
            cache[t] = load_frame(root / video["file_names"][t], video["height"], video["width"], json_path)
    return torch.from_numpy(np.stack([cache[t] for t in indices])).permute(0, 3, 1, 2)


class _VISJson:
    """Shared loading: validated JSON, frame root, annotations by video."""

    def __init__(self, json_path, image_root=None, frames_check: bool = True):
        self.json_path = Path(json_path)
        self.data = load_ytvis(self.json_path)
        self.root = image_root_of(self.data, self.json_path, image_root)
        if frames_check:
            check_frames(self.data, self.root, self.json_path)
        self.videos = self.data["videos"]
        self.anns = {v["id"]: [] for v in self.videos}
        for a in self.data["annotations"]:
            self.anns[a["video_id"]].append(a)

    def __len__(self) -> int:
        return len(self.videos)


class ClipDataset(_VISJson, torch.utils.data.Dataset):
    """Training clips of ``num_frames`` frames; ``ds[i]`` for any draw number i >= 0 (see the module doc).

    Item: ``{"images": float (T, 3, H, W) 0..255, "labels": long (N,), "masks": bool (N, T, H, W),
    "present": bool (N, T), "video_id": int, "frame_indices": long (T,)}``. Labels are indices in the class
    order (sibling classes.json, else ``class_order``, else ascending id). ``train=False``: no augmentation,
    the test resize. A JSON without videos is an error unless ``allow_empty`` (then nothing may be drawn).
    """

    max_draws = 10  # re-draws (same generator) of a clip in which no instance is visible

    def __init__(self, json_path, num_frames: int, frame_range: int, input_cfg: dict, train: bool = True,
                 seed: int = 0, class_order=None, image_root=None, check_frames: bool = True,
                 allow_empty: bool = False):
        super().__init__(json_path, image_root, check_frames)
        if not self.videos and not allow_empty:
            raise HVPLError(f"{self.json_path}: no videos")
        if self.videos and not any(seg is not None for a in self.data["annotations"] if not a.get("iscrowd", 0)
                                   for seg in a["segmentations"]):
            raise HVPLError(f"{self.json_path}: no (non-crowd) annotation with a segmentation in any frame: every "
                            "clip would be empty")
        if num_frames < 1 or frame_range < 0:
            raise HVPLError(f"{self.json_path}: need num_frames >= 1 and frame_range >= 0")
        self.num_frames, self.frame_range = num_frames, frame_range
        self.input_cfg, self.train, self.seed = input_cfg, train, seed
        self.class_order = resolve_class_order(self.json_path, self.data, class_order)
        label = {c: i for i, c in enumerate(self.class_order)}
        for a in self.data["annotations"]:
            if a["category_id"] not in label:
                raise HVPLError(f"{self.json_path}: annotation {a['id']}: category {a['category_id']} is not in "
                                f"the class order {self.class_order}")
        self.label = label
        self._perms: dict[int, np.ndarray] = {}

    def video_position(self, index: int) -> int:
        """Position in ``self.videos`` of draw ``index`` (a seeded permutation per epoch)."""
        epoch, pos = divmod(int(index), len(self.videos))
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[epoch] = np.random.default_rng([self.seed, epoch, len(self.videos)]).permutation(
                len(self.videos))
        return int(self._perms[epoch][pos])

    def sample_frames(self, rng: np.random.Generator, length: int) -> list[int]:
        """A reference frame + T-1 frames drawn with replacement from the other frames within +-frame_range,
        sorted (VITA / Mask2Former-VIS's sampler; a video of one frame repeats it)."""
        ref = int(rng.integers(length))
        lo, hi = max(0, ref - self.frame_range), min(length - 1, ref + self.frame_range)
        pool = [t for t in range(lo, hi + 1) if t != ref] or [ref]
        others = rng.integers(len(pool), size=self.num_frames - 1)
        return sorted([ref, *(pool[int(i)] for i in others)])

    def _instances(self, video: dict, frames: list[int]):
        """Annotations present in >= 1 of ``frames`` -> (labels list, masks bool (N, T, H, W))."""
        h, w = video["height"], video["width"]
        labels, masks = [], []
        for a in self.anns[video["id"]]:
            # crowd regions are not instances (detectron2 / VITA drop them from training data, as our COCO path)
            if a.get("iscrowd", 0) or all(a["segmentations"][t] is None for t in frames):
                continue
            track = np.zeros((len(frames), h, w), dtype=bool)
            for j, t in enumerate(frames):
                m = decode_segmentation(a["segmentations"][t], h, w,
                                        f"{self.json_path}: annotation {a['id']} frame {t}")
                if m is not None:
                    track[j] = m
            labels.append(self.label[a["category_id"]])
            masks.append(track)
        shape = (len(labels), len(frames), h, w)
        return labels, (torch.from_numpy(np.stack(masks)) if masks else torch.zeros(shape, dtype=torch.bool))

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            raise IndexError(index)
        video = self.videos[self.video_position(index)]
        rng = np.random.default_rng([self.seed, int(index)])
        for _ in range(self.max_draws):
            frames = self.sample_frames(rng, len(video["file_names"]))
            tf = sample_clip_transform(rng, video["height"], video["width"], self.input_cfg, self.train)
            labels, masks = self._instances(video, frames)
            masks = apply_to_masks(masks, tf)
            present = masks.flatten(2).any(-1) if masks.numel() else torch.zeros(masks.shape[:2], dtype=torch.bool)
            keep = present.any(1)
            if keep.any():
                break
        images = apply_to_images(load_frames(self.root, video, frames, self.json_path), tf)
        return {"images": images.contiguous(), "labels": torch.tensor(labels, dtype=torch.long)[keep],
                "masks": masks[keep].contiguous(), "present": present[keep], "video_id": int(video["id"]),
                "frame_indices": torch.tensor(frames, dtype=torch.long)}


class VideoDataset(_VISJson, torch.utils.data.Dataset):
    """Whole videos for inference: every frame resized to the test size.

    Item: ``{"video_id": int, "images": uint8 (T, 3, H, W), "orig_size": (H0, W0), "length": T}`` (uint8: a
    long video's frames take a quarter of float32's host memory and transfer; inference converts on its device).
    """

    def __init__(self, json_path, input_cfg: dict, image_root=None, check_frames: bool = True):
        super().__init__(json_path, image_root, check_frames)
        self.input_cfg = input_cfg

    def __getitem__(self, index: int) -> dict:
        video = self.videos[index]
        length = len(video["file_names"])
        tf = sample_clip_transform(np.random.default_rng(0), video["height"], video["width"], self.input_cfg,
                                   train=False)
        images = resize_images(load_frames(self.root, video, list(range(length)), self.json_path), tf)
        return {"video_id": int(video["id"]), "images": images.contiguous(),
                "orig_size": (int(video["height"]), int(video["width"])), "length": length}

