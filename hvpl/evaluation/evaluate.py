"""``hvpl evaluate``: validate a GT file and a results file, score them, write metrics.json atomically.

Output (pipeline.md "Interfaces other tools rely on"; DESIGN.md ``metrics.json``)::

    {"stats": {12 stats}, "per_class": {"<category id>": {"AP", "AR1"}},
     # with classes.json + step:
     "per_task": {"<task>": {"AP", "AP50", "AP75", "AR1", "AR10"}}, "AP_old", "AP_new", "step", "seen_classes"}

Bad input raises :class:`HVPLError` naming the file and the entry, before anything is written.
"""
from __future__ import annotations

import math
from pathlib import Path

from hvpl.data.masks import FrameAreas, check_polygons, check_rle_counts, frame_areas
from hvpl.data.ytvis import is_id, video_problem, video_where
from hvpl.evaluation.ytvis_eval import YTVISEval, to_rle_and_area
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_write_json, read_json
from hvpl.utils.logging import log

TASK_KEYS = ("AP", "AP50", "AP75", "AR1", "AR10")


def _require(cond: bool, path, entry: str, msg: str) -> None:
    if not cond:
        raise HVPLError(f"{path}: {entry}: {msg}")


def _check_segmentation(seg, video: dict, path, entry: str, allow_polygon: bool) -> None:
    """One frame's segmentation: None, an RLE whose size is the video's (H, W), or (GT only) a polygon list.
    Compressed RLE strings of the right size are checked by :func:`_check_frames`, all at once."""
    if seg is None:
        return
    if isinstance(seg, list):
        _require(allow_polygon, path, entry, "segmentation must be an RLE dict or null")
        check_polygons(seg, f"{path}: {entry}")
        return
    _require(isinstance(seg, dict) and "counts" in seg and "size" in seg, path, entry,
             "segmentation must be null, an RLE dict with 'size' and 'counts'" + (" or a polygon list"
                                                                                   if allow_polygon else ""))
    size = list(seg["size"]) if isinstance(seg["size"], (list, tuple)) else None
    _require(size == [video["height"], video["width"]], path, entry,
             f"mask size {seg['size']} differs from video {video['id']}'s size "
             f"[{video['height']}, {video['width']}]")
    check_rle_counts(seg["counts"], video["height"], video["width"], f"{path}: {entry}")


def _check_frames(entries: list, videos: dict, path, name: str, allow_polygon: bool) -> FrameAreas:
    """Every frame of ``entries`` checked (see :func:`_check_segmentation`) and measured; ``name`` formats an
    entry's index for messages."""
    def other(seg, height, width, i, t):
        _check_segmentation(seg, videos[entries[i]["video_id"]], path, f"{name.format(i)} frame {t}",
                            allow_polygon)
        return to_rle_and_area(seg, height, width)

    areas = frame_areas(entries, videos, other)
    if areas.problems:
        i, t, why = areas.problems[0]
        raise HVPLError(f"{path}: {name.format(i)} frame {t}: {why}")
    return areas


def _check_areas(ann: dict, length: int, path, entry: str) -> None:
    """Optional per-frame ``areas`` (they set the track's area range): one non-negative number or null per frame."""
    areas = ann.get("areas")
    if areas is None:
        return
    _require(isinstance(areas, list) and len(areas) == length, path, entry,
             f"'areas' must list one value per frame ({length})")
    _require(all(a is None or (isinstance(a, (int, float)) and not isinstance(a, bool) and a >= 0) for a in areas),
             path, entry, "'areas' entries must be non-negative numbers or null")


def validate_gt(gt, path) -> tuple[dict, FrameAreas]:
    """Minimal YouTube-VIS GT checks; fills a missing video ``length`` from ``file_names``. Returns ``gt`` and
    the areas of its masks."""
    _require(isinstance(gt, dict), path, "top level", "must be a JSON object")
    for key in ("videos", "annotations", "categories"):
        _require(isinstance(gt.get(key), list), path, "top level", f"missing list '{key}'")
    videos = {}
    for i, v in enumerate(gt["videos"]):
        _require(isinstance(v, dict) and all(k in v for k in ("id", "height", "width")), path,
                 f"videos[{i}]", "needs 'id', 'height' and 'width'")
        problem = video_problem(v)
        _require(problem is None, path, video_where(v, f"videos[{i}]"), problem)
        if "length" not in v:
            _require(isinstance(v.get("file_names"), list), path, f"videos[{i}]", "needs 'length' or 'file_names'")
            v["length"] = len(v["file_names"])
        _require(v["id"] not in videos, path, f"videos[{i}]", f"duplicate video id {v['id']}")
        videos[v["id"]] = v
    cats = set()
    for i, c in enumerate(gt["categories"]):
        _require(isinstance(c, dict) and "id" in c, path, f"categories[{i}]", "needs 'id'")
        _require(is_id(c["id"]), path, f"categories[{i}]", f"id {c['id']!r} must be an integer or a string")
        cats.add(c["id"])
    for i, ann in enumerate(gt["annotations"]):
        entry = f"annotations[{i}]"
        _require(isinstance(ann, dict) and all(k in ann for k in ("id", "video_id", "category_id", "segmentations")),
                 path, entry, "needs 'id', 'video_id', 'category_id' and 'segmentations'")
        _require(all(is_id(ann[k]) for k in ("id", "video_id", "category_id")), path, entry,
                 "'id', 'video_id' and 'category_id' must be integers or strings")
        _require(ann["video_id"] in videos, path, entry, f"video_id {ann['video_id']} is not in 'videos'")
        _require(ann["category_id"] in cats, path, entry, f"category_id {ann['category_id']} is not in 'categories'")
        video = videos[ann["video_id"]]
        segs = ann["segmentations"]
        _require(isinstance(segs, list) and len(segs) == video["length"], path, entry,
                 f"'segmentations' must list one entry per frame ({video['length']} for video {video['id']})")
        _check_areas(ann, video["length"], path, entry)
    return gt, _check_frames(gt["annotations"], videos, path, "annotations[{}]", allow_polygon=True)


def validate_results(results, path, gt: dict, gt_path) -> tuple[list, FrameAreas]:
    """Check every result entry against the GT: known video and category, one segmentation per frame.
    Returns ``results`` and the areas of their masks."""
    _require(isinstance(results, list), path, "top level", "must be a JSON list of result objects")
    videos = {v["id"]: v for v in gt["videos"]}
    cats = {c["id"] for c in gt["categories"]}
    for i, res in enumerate(results):
        entry = f"entry {i}"
        _require(isinstance(res, dict) and all(k in res for k in ("video_id", "category_id", "score",
                                                                   "segmentations")),
                 path, entry, "needs 'video_id', 'category_id', 'score' and 'segmentations'")
        _require(is_id(res["video_id"]) and is_id(res["category_id"]), path, entry,
                 "'video_id' and 'category_id' must be integers or strings")
        _require(res["video_id"] in videos, path, entry,
                 f"video_id {res['video_id']} is not in the ground truth {gt_path}")
        _require(res["category_id"] in cats, path, entry,
                 f"category_id {res['category_id']} is not a category of the ground truth {gt_path}")
        score = res["score"]
        _require(isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score),
                 path, entry, f"score {score!r} is not a finite number")
        video = videos[res["video_id"]]
        segs = res["segmentations"]
        _require(isinstance(segs, list) and len(segs) == video["length"], path, entry,
                 f"'segmentations' has {len(segs) if isinstance(segs, list) else 'no'} entries, "
                 f"video {video['id']} has {video['length']} frames")
    return results, _check_frames(results, videos, path, "entry {}", allow_polygon=False)


def load_classes(classes_path, step: int) -> list:
    """Category ids of every task in ``classes.json`` (``steps``), checked against ``step``."""
    classes = read_json(classes_path)
    steps = classes.get("steps") if isinstance(classes, dict) else None
    _require(isinstance(steps, list) and all(isinstance(s, list) for s in steps), classes_path, "steps",
             "must be a list of lists of category ids")
    _require(0 <= step < len(steps), classes_path, "steps", f"step {step} is out of range 0..{len(steps) - 1}")
    return steps


def continual_breakdown(ev: YTVISEval, steps: list, step: int) -> dict:
    """per_task (tasks 0..step), AP_old (tasks < step, -1 at step 0), AP_new (task ``step``), seen_classes."""
    per_task = {}
    for task, cats in enumerate(steps[:step + 1]):
        s = ev.subset_stats(cats)
        per_task[str(task)] = {k: s[k] for k in TASK_KEYS}
    old = [c for task in steps[:step] for c in task]
    ap_old = ev.subset_stats(old)["AP"] if old else -1.0
    seen = old + list(steps[step])
    return {"per_task": per_task, "AP_old": ap_old, "AP_new": per_task[str(step)]["AP"], "step": step,
            "seen_classes": seen}


def evaluate_files(gt_path, results_path, out_path, classes_path=None, step=None) -> dict:
    """Score ``results_path`` against ``gt_path``; write and return the metrics dict (see module docstring)."""
    if (classes_path is None) != (step is None):
        raise HVPLError("evaluate: --classes and --step must be given together")
    gt, gt_areas = validate_gt(read_json(gt_path), gt_path)
    results, res_areas = validate_results(read_json(results_path), results_path, gt, gt_path)
    steps = load_classes(classes_path, step) if classes_path is not None else None
    if steps is not None:
        seen = sorted(c for task in steps[:step + 1] for c in task)
        gt_ids = sorted(c["id"] for c in gt["categories"])
        _require(gt_ids == seen, gt_path, "categories",
                 f"{gt_ids} are not the classes seen at step {step} of {classes_path} ({seen}); "
                 f"is it test_step{step}.json?")
    log(f"evaluate: {len(results)} detections on {len(gt['videos'])} videos ({Path(gt_path).name})")
    ev = YTVISEval(gt, results, areas=(gt_areas, res_areas)).evaluate()
    metrics = {"stats": ev.stats(),
               "per_class": {str(c): v for c, v in ev.per_class().items()}}
    if steps is not None:
        metrics.update(continual_breakdown(ev, steps, step))
    atomic_write_json(out_path, metrics)
    log(f"evaluate: AP {metrics['stats']['AP']:.4f} AP50 {metrics['stats']['AP50']:.4f} -> {out_path}")
    return metrics
