"""``hvpl visualize``: overlay grids of ground truth and predictions, one PNG per video (optionally a GIF).

Grid of one video: rows = the ground truth, then one row per predictions file (labelled by method and step);
columns = frames sampled evenly over the video (first and last included, at most ``columns``). Each track (a GT
annotation or a prediction) is a translucent colour overlay with an outline, its colour kept across frames, its
class name and score written once per row, at the top left of its mask where it first appears. Predictions are cut to each video's ``topk`` best scores (what
evaluation scores: the scenario's detections per video) and to ``min_score``.

Frames are drawn ``display_height`` pixels high: decoded at reduced size (JPEG draft mode), masks sampled at the
drawn pixels from their RLE runs, so a 720p video costs no full-size decoding or compositing
(bench/bench_visualize.py).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from hvpl.data.masks import compressed_run_lengths, decode_segmentation
from hvpl.data.ytvis import check_video_frames, image_root_of, load_ytvis
from hvpl.evaluation.evaluate import validate_results
from hvpl.evaluation.visual_style import (ALPHA, BACKGROUND, DEFAULT_COLUMNS, DEFAULT_HEIGHT, DEFAULT_VIDEOS,
                                          GIF_COLOURS, GIF_FRAME_MS, HEADER_HEIGHT, LABEL_WIDTH, PALETTE,
                                          PNG_COMPRESSION, TEXT, TEXT_PAD)
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_path, read_json
from hvpl.utils.logging import log

RUN_PATH = re.compile(r"(?P<scenario>[^/]+)/(?P<method>[^/]+)/seed(?P<seed>\d+)/step(?P<step>\d+)/[^/]+$")


def sample_columns(length: int, columns: int) -> list[int]:
    """``columns`` frame indices spread evenly over 0..length-1 (first and last included), fewer if shorter."""
    if length <= columns:
        return list(range(length))
    return sorted({int(round(x)) for x in np.linspace(0, length - 1, columns)})


def run_label(path: Path) -> tuple[str, str | None]:
    """Row label and scenario of a predictions path: ``results/<scenario>/<method>/seed<k>/step<t>/x.json`` ->
    ("<method> step <t>", scenario); any other path -> (its file name, None)."""
    hit = RUN_PATH.search(Path(path).resolve().as_posix())
    if hit is None:
        return Path(path).name, None
    return f"{hit['method']} step {hit['step']}", hit["scenario"]


def scenario_topk(scenario: str | None) -> int | None:
    """The scenario's detections per video (None when it cannot be read)."""
    if scenario is None:
        return None
    from hvpl.config import load_scenario

    try:
        return int(load_scenario(scenario)["detections_per_video"])
    except (HVPLError, KeyError, TypeError, ValueError):
        return None


def video_tracks(results: list, video_id, topk: int | None, min_score: float) -> list[dict]:
    """The entries of one video as evaluation ranks them: by score (stable), the first ``topk``, then those
    scoring at least ``min_score``."""
    mine = sorted((r for r in results if r["video_id"] == video_id), key=lambda r: -float(r["score"]))
    mine = mine[:topk] if topk is not None else mine
    return [r for r in mine if float(r["score"]) >= min_score]


def _id_order(video_id) -> tuple:
    """Sort key of a video id: integers numerically, before string ids."""
    return (0, video_id, "") if isinstance(video_id, int) else (1, 0, str(video_id))


def pick_videos(data: dict, steps: list[list], count: int) -> list:
    """``count`` video ids covering the classes of every step: round-robin over the steps (then their classes,
    earliest first), each turn the lowest unpicked video id holding that class."""
    holding: dict = {}
    for ann in sorted(data["annotations"], key=lambda a: _id_order(a["video_id"])):
        holding.setdefault(ann["category_id"], []).append(ann["video_id"])
    picked: list = []
    queues = [[c for c in step if c in holding] for step in steps]
    while len(picked) < min(count, len(data["videos"])) and any(queues):
        for queue in queues:
            if not queue or len(picked) >= count:
                continue
            cls = queue.pop(0)
            vid = next((v for v in sorted(holding[cls], key=_id_order) if v not in picked), None)
            if vid is not None:
                picked.append(vid)
    rest = [v["id"] for v in data["videos"] if v["id"] not in picked]
    return picked + rest[:max(0, count - len(picked))]


def display_size(height: int, width: int, target: int) -> tuple[int, int]:
    """(h, w) of a frame drawn ``target`` pixels high, aspect kept (large frames shrink, small ones grow so that
    the labels stay readable)."""
    return target, max(1, int(round(width * target / height)))


def load_frame(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Frame file -> (h, w, 3) uint8 at ``size`` (JPEG decoded at a reduced scale where possible)."""
    with Image.open(path) as im:
        im.draft("RGB", (size[1], size[0]))
        return np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR))


def sample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bool mask (H, W) -> (h, w) by nearest sampling at the drawn pixels' centres."""
    rows = ((np.arange(size[0]) + 0.5) * mask.shape[0] / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * mask.shape[1] / size[1]).astype(np.int64)
    return mask[rows[:, None], cols[None, :]]


def sample_segmentation(seg, height: int, width: int, size: tuple[int, int]) -> np.ndarray | None:
    """One frame's entry (checked before) -> bool mask (h, w) sampled like :func:`sample_mask`, or None.

    A compressed RLE is sampled from its run lengths (which run holds each drawn pixel's column-major index)
    without decoding the H x W mask: at 720p that is a few thousand runs searched instead of ~1M pixels written.
    """
    counts = seg.get("counts") if isinstance(seg, dict) else None
    if not isinstance(counts, str):
        mask = decode_segmentation(seg, height, width)
        return None if mask is None else sample_mask(mask, size)
    ends = np.cumsum(compressed_run_lengths(counts))
    rows = ((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64)
    cols = ((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64)
    index = cols[None, :] * height + rows[:, None]          # column-major pixel index of each drawn pixel
    return np.searchsorted(ends, index, side="right") % 2 == 1   # runs alternate 0s, 1s, starting with 0s


def outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of a bool mask (h, w) with a 4-neighbour outside it."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def overlay(image: np.ndarray, mask: np.ndarray, colour) -> None:
    """Blend ``colour`` into ``image`` (h, w, 3) uint8 where ``mask`` (h, w), in place; outline opaque."""
    if not mask.any():
        return
    col = np.asarray(colour, dtype=np.float32)
    image[mask] = (image[mask] * (1 - ALPHA) + col * ALPHA).astype(np.uint8)
    image[outline(mask)] = col.astype(np.uint8)


def _free_box(box: tuple, placed: list[tuple]) -> tuple:
    """``box`` (x0, y0, x1, y1) moved down until it overlaps none of ``placed`` (labels of tracks sharing a mask,
    e.g. one query's top-k classes, would otherwise cover each other)."""
    step = box[3] - box[1] + 2 * TEXT_PAD
    while any(box[0] < p[2] + TEXT_PAD and p[0] < box[2] + TEXT_PAD and box[1] < p[3] + TEXT_PAD
              and p[1] < box[3] + TEXT_PAD for p in placed):
        box = (box[0], box[1] + step, box[2], box[3] + step)
    return box


def draw_cell(frame: np.ndarray, tracks: list[dict], t: int, video: dict, names: dict, font,
              unlabelled: set) -> Image.Image:
    """One grid cell: ``frame`` (h, w, 3) with every track's mask of frame ``t`` overlaid; the tracks in
    ``unlabelled`` (indices) visible here get their label and leave the set (one label per track and row)."""
    image = frame.copy()
    labels = []
    for j, track in enumerate(tracks):
        small = sample_segmentation(track["segmentations"][t], video["height"], video["width"], image.shape[:2])
        if small is None or not small.any():
            continue
        colour = PALETTE[j % len(PALETTE)]
        overlay(image, small, colour)
        if j in unlabelled:
            unlabelled.discard(j)
            ys, xs = np.nonzero(small)
            text = names.get(track["category_id"], str(track["category_id"]))
            if track.get("score") is not None:
                text += f" {float(track['score']):.2f}"
            labels.append((int(xs.min()), int(ys.min()), text, colour))
    cell = Image.fromarray(image)
    draw = ImageDraw.Draw(cell)
    placed: list[tuple] = []
    for x, y, text, colour in labels:
        x = max(0, min(x, image.shape[1] - int(draw.textlength(text, font=font)) - TEXT_PAD))   # keep it in the cell
        first = draw.textbbox((x, y), text, font=font)
        box = _free_box(first, placed)
        placed.append(box)
        draw.rectangle((box[0] - TEXT_PAD, box[1] - TEXT_PAD, box[2] + TEXT_PAD, box[3] + TEXT_PAD), fill=colour)
        draw.text((x, y + box[1] - first[1]), text, fill=TEXT, font=font)
    return cell


def render_video(video: dict, frames_root: Path, rows: list[tuple[str, list[dict]]], names: dict,
                 columns: int, height: int, frame_ids: list[int] | None = None) -> tuple[Image.Image, list]:
    """The grid of one video -> (PNG image, the frame indices drawn). ``rows``: (label, tracks) per row."""
    ids = sample_columns(len(video["file_names"]), columns) if frame_ids is None else frame_ids
    size = display_size(video["height"], video["width"], height)
    font = ImageFont.load_default()
    grid = Image.new("RGB", (LABEL_WIDTH + len(ids) * size[1], HEADER_HEIGHT + len(rows) * size[0]), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    unlabelled = [set(range(len(tracks))) for _, tracks in rows]
    for c, t in enumerate(ids):
        frame = load_frame(frames_root / video["file_names"][t], size)
        draw.text((LABEL_WIDTH + c * size[1] + TEXT_PAD, TEXT_PAD), f"frame {t}", fill=TEXT, font=font)
        for r, (_, tracks) in enumerate(rows):
            grid.paste(draw_cell(frame, tracks, t, video, names, font, unlabelled[r]),
                       (LABEL_WIDTH + c * size[1], HEADER_HEIGHT + r * size[0]))
    for r, (label, tracks) in enumerate(rows):
        draw.multiline_text((TEXT_PAD, HEADER_HEIGHT + r * size[0] + TEXT_PAD), f"{label}\ntracks: {len(tracks)}",
                            fill=TEXT, font=font)
    return grid, ids


def row_label(label: str, results: list, video_id) -> str:
    """``label``, marked when the file has no entry at all for the video (e.g. an earlier step's test set
    lacks it: none of its classes had been seen), which is not the same as predictions below --min-score."""
    return label if any(r["video_id"] == video_id for r in results) else f"{label}\n(video not predicted)"


def gt_tracks(data: dict, video_id) -> list[dict]:
    """The ground-truth annotations of one video as tracks (no score)."""
    return [dict(a, score=None) for a in data["annotations"] if a["video_id"] == video_id]


def class_names(data: dict, classes_json) -> tuple[dict, list[list]]:
    """(category id -> name, category ids per step): from classes.json when given, else the test JSON (every
    category its own group)."""
    names = {c["id"]: str(c.get("name", c["id"])) for c in data["categories"]}
    if classes_json is None:
        return names, [[c["id"]] for c in data["categories"]]
    classes = read_json(classes_json)
    steps = classes.get("steps") if isinstance(classes, dict) else None
    if not isinstance(steps, list) or not all(isinstance(s, list) for s in steps):
        raise HVPLError(f"{classes_json}: steps: must be a list of lists of category ids")
    names.update({c["id"]: str(c.get("name", c["id"])) for c in classes.get("categories", []) if isinstance(c, dict)})
    return names, steps


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", compress_level=PNG_COMPRESSION)


def save_gif(video, frames_root, rows, names, height, path: Path) -> None:
    """Animated GIF of every frame of the video, the rows stacked (one column of the grid per GIF frame)."""
    frames = [render_video(video, frames_root, rows, names, 1, height, frame_ids=[t])[0]
              for t in range(len(video["file_names"]))]
    # one fast octree palette per frame: Pillow's default (median cut) takes ~0.5 s a frame at this size
    frames = [f.quantize(GIF_COLOURS, method=Image.Quantize.FASTOCTREE) for f in frames]
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)


def load_predictions(paths: list[Path], labels: list[str] | None, data: dict, test_json, topk: int | None):
    """[(label, entries, top-k)] per predictions file, every entry checked against the test JSON."""
    if labels is not None and len(labels) != len(paths):
        raise HVPLError(f"visualize: {len(labels)} --label for {len(paths)} predictions files")
    out = []
    for i, path in enumerate(paths):
        label, scenario = run_label(path)
        results, _ = validate_results(read_json(path), path, data, test_json)
        out.append((labels[i] if labels else label, results, topk if topk is not None else scenario_topk(scenario)))
    return out


def visualize_files(test_json: Path, predictions: list[Path], out_dir: Path, *, labels=None, video_ids=None,
                    num_videos: int = DEFAULT_VIDEOS, columns: int = DEFAULT_COLUMNS, topk: int | None = None,
                    min_score: float = 0.0, gif: bool = False, classes_json=None, image_root=None,
                    display_height: int = DEFAULT_HEIGHT) -> list[Path]:
    """Write ``out_dir/video<id>.png`` (and ``.gif``) per chosen video; returns the PNG paths. Everything is
    checked (predictions against the test JSON, the chosen videos' frame files) before the first file is written."""
    data = load_ytvis(test_json)
    for video in data["videos"]:
        video.setdefault("length", len(video["file_names"]))
    frames_root = image_root_of(data, test_json, image_root)
    names, steps = class_names(data, classes_json)
    runs = load_predictions(predictions, labels, data, test_json, topk)
    by_key = {str(v["id"]): v for v in data["videos"]}
    if video_ids:
        unknown = [v for v in video_ids if str(v) not in by_key]
        if unknown:
            raise HVPLError(f"{test_json}: videos: no video with id {unknown[0]} (--video-ids)")
        chosen = [by_key[str(v)] for v in video_ids]
    else:
        chosen = [by_key[str(v)] for v in pick_videos(data, steps, num_videos)]
    for video in chosen:
        check_video_frames(video, frames_root, test_json)
    written = []
    for video in chosen:
        rows = [("ground truth", gt_tracks(data, video["id"]))]
        rows += [(row_label(label, results, video["id"]), video_tracks(results, video["id"], k, min_score))
                 for label, results, k in runs]
        grid, ids = render_video(video, frames_root, rows, names, columns, display_height)
        path = Path(out_dir) / f"video{video['id']}.png"
        save_png(grid, path)
        if gif:
            save_gif(video, frames_root, rows, names, display_height, path.with_suffix(".gif"))
        log(f"visualize: video {video['id']}: {len(rows)} rows x {len(ids)} of {video['length']} frames -> {path}")
        written.append(path)
    return written
