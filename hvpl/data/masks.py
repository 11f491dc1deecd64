"""Per-frame segmentation codecs of the YouTube-VIS / OVIS format (pycocotools underneath).

A segmentation entry is one of:

- ``None`` (the instance is absent in that frame),
- compressed RLE ``{"size": [H, W], "counts": "<str>"}``,
- uncompressed RLE ``{"size": [H, W], "counts": [int, ...]}``,
- polygons ``[[x0, y0, x1, y1, ...], ...]`` (one or more rings).

Decoded masks are ``numpy.ndarray`` of dtype bool, shape ``(H, W)``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_util

from hvpl.data.rle_runs import check_compressed_rles
from hvpl.utils.errors import HVPLError


def _rle_size(seg: dict, where: str) -> tuple[int, int]:
    size = seg.get("size")
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in size)):
        raise HVPLError(f"{where}: RLE 'size' {size!r} is not [H, W] with integers H, W >= 0")
    return size[0], size[1]


# pycocotools' compressed RLE writes every run length as 5-bit groups with a continuation bit, each stored as
# the character 48 + group: only '0' (48) .. 'o' (111) occur.
_NOT_COMPRESSED_RLE = re.compile(r"[^\x30-\x6f]")


_GROUP_BITS, _MORE, _SIGN = 5, 0x20, 0x10
_MAX_GROUPS = 12   # a run length of up to 60 bits: more is no mask


def compressed_run_lengths(counts: str) -> np.ndarray | None:
    """The run lengths a compressed RLE string encodes (pycocotools' rleFrString, vectorised), or None when the
    string ends inside a run length or one is too long."""
    if not counts:
        return np.zeros(0, dtype=np.int64)
    groups = np.frombuffer(counts.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    ends = np.flatnonzero((groups & _MORE) == 0)
    if ends.size == 0 or ends[-1] != groups.size - 1:
        return None
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > _MAX_GROUPS:
        return None
    position = np.arange(groups.size) - np.repeat(starts, lengths)
    runs = np.add.reduceat((groups & 0x1F) << (_GROUP_BITS * position), starts)
    runs -= np.where(groups[ends] & _SIGN, np.int64(1) << (_GROUP_BITS * lengths), 0)   # sign extension
    runs[2::2] = np.cumsum(runs[2::2])   # run m > 2 is stored as run m minus run m - 2: running sums over
    runs[1::2] = np.cumsum(runs[1::2])   # each parity (runs 0, 1 and 2 are stored as they are)
    return runs


def check_rle_counts(counts: Any, height: int, width: int, where: str) -> None:
    """Check of an RLE's ``counts`` before pycocotools sees it (run lengths that do not cover the mask make its
    merge loop forever or its decode write past the mask): a compressed string of pycocotools' alphabet, or a
    list of integers, of non-negative run lengths summing to ``height * width``."""
    if isinstance(counts, str):
        bad = _NOT_COMPRESSED_RLE.search(counts)
        if bad:
            raise HVPLError(f"{where}: RLE 'counts' is not a compressed RLE string (character {bad.group()!r} at "
                            f"{bad.start()})")
        runs = compressed_run_lengths(counts)
        if runs is None:
            raise HVPLError(f"{where}: RLE 'counts' is a truncated or corrupt compressed RLE string")
        if runs.size and runs.min() < 0:
            raise HVPLError(f"{where}: RLE 'counts' decodes to a negative run length")
        if int(runs.sum()) != height * width:
            raise HVPLError(f"{where}: RLE 'counts' cover {int(runs.sum())} pixels, the mask has "
                            f"{height}x{width} (a mask encoded at another size?)")
        return
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise HVPLError(f"{where}: uncompressed RLE 'counts' must be non-negative integers")
        if sum(counts) != height * width:
            raise HVPLError(f"{where}: uncompressed RLE 'counts' cover {sum(counts)} pixels, the mask has "
                            f"{height}x{width}")
        return
    raise HVPLError(f"{where}: RLE 'counts' must be a string or a list of integers")


def check_segmentation(seg: Any, height: int, width: int, where: str) -> None:
    """Cheap structural check of one frame's entry (no decoding): type, RLE size == (height, width), RLE counts."""
    if seg is None:
        return
    if isinstance(seg, dict):
        if "counts" not in seg:
            raise HVPLError(f"{where}: RLE without 'counts'")
        h, w = _rle_size(seg, where)
        if (h, w) != (height, width):
            raise HVPLError(f"{where}: mask size {h}x{w} differs from the video size {height}x{width}")
        check_rle_counts(seg["counts"], h, w, where)
        return
    if isinstance(seg, list):
        check_polygons(seg, where)
        return
    raise HVPLError(f"{where}: segmentation must be null, an RLE dict or a polygon list, got {type(seg).__name__}")


def check_polygons(seg: list, where: str) -> None:
    """Every ring of a polygon entry: a list of an even number (>= 6) of finite coordinates."""
    for ring in seg:
        if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2:
            raise HVPLError(f"{where}: a polygon needs an even number (>= 6) of coordinates")
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in ring):
            raise HVPLError(f"{where}: polygon coordinates must be finite numbers")


def to_compressed_rle(seg: Any, height: int, width: int, where: str = "segmentation") -> dict | None:
    """Any non-null entry -> pycocotools compressed RLE (``counts`` as bytes); ``None`` stays ``None``."""
    check_segmentation(seg, height, width, where)
    if seg is None:
        return None
    if isinstance(seg, list):
        if not seg:
            return None
        rles = mask_util.frPyObjects(seg, height, width)
        return mask_util.merge(rles)
    counts = seg["counts"]
    if isinstance(counts, list):
        return mask_util.frPyObjects(seg, height, width)
    if isinstance(counts, str):
        return {"size": [height, width], "counts": counts.encode("ascii")}
    if isinstance(counts, bytes):
        return {"size": [height, width], "counts": counts}
    raise HVPLError(f"{where}: RLE 'counts' must be a string or a list of integers")


def decode_segmentation(seg: Any, height: int, width: int, where: str = "segmentation") -> np.ndarray | None:
    """One frame's entry -> bool mask (height, width), or ``None`` when the entry is null.

    Raises HVPLError (naming ``where``) on a malformed entry or a size that differs from the video.
    """
    rle = to_compressed_rle(seg, height, width, where)
    if rle is None:
        return None
    try:
        mask = mask_util.decode(rle)
    except Exception as exc:  # pycocotools raises bare Exceptions/ValueErrors on corrupt counts
        raise HVPLError(f"{where}: cannot decode the RLE ({exc})") from exc
    return mask.astype(bool)


def encode_mask(mask: np.ndarray) -> dict:
    """Bool mask (H, W) -> JSON-ready compressed RLE ``{"size": [H, W], "counts": str}``."""
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def mask_bbox(mask: np.ndarray) -> list[float] | None:
    """Tight box ``[x, y, w, h]`` of a bool mask (H, W); ``None`` for an empty mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


def encode_track(masks: np.ndarray) -> tuple[list, list, list]:
    """Masks (T, H, W) -> (segmentations, areas, bboxes) per frame, ``None`` where the mask is empty."""
    segs, areas, boxes = [], [], []
    for mask in masks:
        area = int(mask.sum())
        if area == 0:
            segs.append(None)
            areas.append(None)
            boxes.append(None)
        else:
            segs.append(encode_mask(mask))
            areas.append(float(area))
            boxes.append(mask_bbox(mask))
    return segs, areas, boxes


@dataclass
class FrameAreas:
    """Areas of every frame of a list of GT annotations or results, in order (entry 0's T0 frames, entry 1's...).

    ``areas`` (F,) int64 (0 where absent); ``offsets`` (E + 1,): entry i's frames are
    ``areas[offsets[i]:offsets[i + 1]]``; ``converted``: {entry: {frame: RLE or None}} for the frames that were
    not compressed RLE strings of the video's size (what ``other`` of :func:`frame_areas` made of them);
    ``problems``: (entry, frame, why) of the compressed strings that are no RLE of their mask (see
    :func:`hvpl.data.rle_runs.check_compressed_rles`).
    """

    areas: np.ndarray
    offsets: np.ndarray
    converted: dict
    problems: list

    def of(self, i: int) -> np.ndarray:
        return self.areas[self.offsets[i]:self.offsets[i + 1]]


def frame_areas(entries: list, videos: dict, other) -> FrameAreas:
    """Areas of all frames of ``entries`` (dicts with ``video_id`` and ``segmentations``), the compressed RLE
    strings of each video's size measured all at once from their run lengths (no mask decoded).

    ``other(segm, height, width, entry, frame) -> (RLE or None, area)`` handles every other non-null frame
    (polygons, uncompressed RLE, a wrong size: it should check the frame first). Compressed strings that are no
    RLE of their mask are listed in ``problems``, not raised.
    """
    strings, heights, widths, slots = [], [], [], []
    converted: dict = {}
    lengths = [len(e["segmentations"]) for e in entries]
    offsets = np.concatenate(([0], np.cumsum(lengths, dtype=np.int64)))
    areas = np.zeros(int(offsets[-1]), dtype=np.int64)
    for i, e in enumerate(entries):
        v = videos[e["video_id"]]
        h, w = v["height"], v["width"]
        size, base, before = [h, w], int(offsets[i]), len(strings)
        for t, segm in enumerate(e["segmentations"]):
            if segm is None:
                continue
            if type(segm) is dict and type(segm.get("counts")) is str and segm.get("size") == size:
                strings.append(segm["counts"])
                slots.append(base + t)
            else:
                converted.setdefault(i, {})[t], areas[base + t] = other(segm, h, w, i, t)
        heights += [h] * (len(strings) - before)
        widths += [w] * (len(strings) - before)
    measured, problems = check_compressed_rles(strings, heights, widths)
    areas[slots] = measured
    entry_of = np.searchsorted(offsets, slots, side="right") - 1 if strings else []
    found = [(int(entry_of[k]), slots[k] - int(offsets[entry_of[k]]), why) for k, why in enumerate(problems) if why]
    return FrameAreas(areas, offsets, converted, found)
