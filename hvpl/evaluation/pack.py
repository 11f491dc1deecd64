"""``hvpl pack``: a predictions file -> the zip the YouTube-VIS / OVIS evaluation servers (CodaLab) take.

The servers score a zip holding one file, ``results.json``, at its root: a JSON list of
``{video_id, category_id, score, segmentations}`` whose category ids are the dataset's own (its full category
list, as in the official valid/test JSON) and which covers every video of the split, one RLE per frame.

``hvpl predict`` already writes dataset category ids (it maps the model's contiguous labels through the model
file's class order). A results file that holds the step's contiguous class indices instead (0-based positions in
the split's class order) is mapped back with ``class_indices=True`` and the split's ``classes.json``.

Every check runs before anything is written; the zip is written atomically.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from hvpl.data.ytvis import is_id, validate_ytvis
from hvpl.evaluation.evaluate import validate_results
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_path, read_json
from hvpl.utils.logging import log

RESULTS_NAME = "results.json"   # the servers read this name at the zip's root
RESULT_KEYS = ("video_id", "score", "category_id", "segmentations")


def load_split(test_json) -> dict:
    """The split to pack for (an official valid/test JSON: annotations absent or null), videos checked and
    every video's ``length`` filled from its ``file_names``."""
    data = read_json(test_json)
    validate_ytvis(data, test_json, deep=False)
    for video in data["videos"]:
        video.setdefault("length", len(video["file_names"]))
    return data


def class_order_of(classes_json) -> tuple[list, set]:
    """``classes.json`` -> (class order: category id of each contiguous index, every category id it lists)."""
    classes = read_json(classes_json)
    order = classes.get("class_order") if isinstance(classes, dict) else None
    if not isinstance(order, list) or not all(is_id(c) for c in order):
        raise HVPLError(f"{classes_json}: class_order: must be a list of category ids")
    categories = classes.get("categories") or [{"id": c} for c in order]
    return order, {c["id"] for c in categories if isinstance(c, dict) and "id" in c}


def map_class_indices(results: list, order: list, path, classes_json) -> list:
    """Entries whose ``category_id`` is a 0-based index into ``order`` -> entries with the category id."""
    out = []
    for i, res in enumerate(results):
        index = res.get("category_id") if isinstance(res, dict) else None
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(order):
            raise HVPLError(f"{path}: entry {i}: category_id {index!r} is not a class index 0..{len(order) - 1} "
                            f"of {classes_json}")
        out.append(dict(res, category_id=order[index]))
    return out


def check_coverage(results: list, data: dict, path, test_json) -> None:
    """Every video of the split has at least one entry (the servers score a missing video as all misses)."""
    covered = {res["video_id"] for res in results}
    missing = [v["id"] for v in data["videos"] if v["id"] not in covered]
    if missing:
        raise HVPLError(f"{path}: video_id {missing[0]}: no prediction for this video of {test_json} "
                        f"({len(missing)} of {len(data['videos'])} videos lack one; predict over the whole split)")


def pack_results(predictions, test_json, out, classes_json=None, class_indices: bool = False) -> int:
    """Check ``predictions`` against the split ``test_json`` and write ``out`` (a zip with ``results.json`` at its
    root). With ``classes_json`` every category must be one of the split's classes; ``class_indices`` maps
    contiguous class indices back to category ids. Returns the number of entries written."""
    if class_indices and classes_json is None:
        raise HVPLError("pack: --class-indices needs --classes (the split's classes.json holds the class order)")
    data = load_split(test_json)
    results = read_json(predictions)
    if not isinstance(results, list):
        raise HVPLError(f"{predictions}: top level: must be a JSON list of result objects")
    if classes_json is not None:
        order, known = class_order_of(classes_json)
        if class_indices:
            results = map_class_indices(results, order, predictions, classes_json)
        stray = next((i for i, r in enumerate(results) if isinstance(r, dict) and r.get("category_id") not in known),
                     None)
        if stray is not None:
            raise HVPLError(f"{predictions}: entry {stray}: category_id {results[stray].get('category_id')!r} is "
                            f"not a category of {classes_json}")
    validate_results(results, predictions, data, test_json)   # known video and category, one valid RLE per frame
    check_coverage(results, data, predictions, test_json)
    entries = [{k: res[k] for k in RESULT_KEYS} for res in results]
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(RESULTS_NAME, json.dumps(entries))
    log(f"pack: {len(entries)} detections on {len(data['videos'])} videos -> {out} ({Path(out).stat().st_size} "
        f"bytes)")
    return len(entries)
