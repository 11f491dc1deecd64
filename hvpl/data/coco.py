"""COCO instances -> single-image pseudo-videos in a dataset's label space (protocol.md Section 1).

The many-to-one COCO -> dataset category maps and each dataset's category list come from
``hvpl/data/categories.json`` (a copy of the project's shared ``categories.json``, shipped with the package).
COCO categories without a map entry are dropped, and so are images left without annotations.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from hvpl.utils.errors import HVPLError
from hvpl.utils.logging import log

CATEGORIES_FILE = Path(__file__).resolve().parent / "categories.json"


@lru_cache(maxsize=1)
def category_table() -> dict:
    """The packaged categories.json: per dataset its categories (id order) and COCO -> dataset id map."""
    try:
        from importlib.resources import files

        text = files("hvpl.data").joinpath("categories.json").read_text()
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        text = CATEGORIES_FILE.read_text()
    return json.loads(text)


def dataset_categories(dataset: str) -> list[dict]:
    """The dataset's ``[{"id", "name"}, ...]`` in class (id) order."""
    return [dict(c) for c in _entry(dataset)["categories"]]


def coco_to_dataset_map(dataset: str) -> dict[int, int]:
    """COCO category id -> dataset category id (many-to-one)."""
    return {int(k): int(v) for k, v in _entry(dataset)["coco_to_dataset"].items()}


def _entry(dataset: str) -> dict:
    table = category_table()
    if dataset not in table:
        raise HVPLError(f"{CATEGORIES_FILE}: no entry for dataset '{dataset}'; known: {', '.join(table)}")
    return table[dataset]


def coco_layout(data_root: str | os.PathLike) -> tuple[Path, Path]:
    """(``coco/annotations/instances_train2017.json``, ``coco/train2017``) under ``data_root`` (or data_root/coco)."""
    root = Path(data_root)
    if not (root / "annotations").is_dir() and (root / "coco").is_dir():
        root = root / "coco"
    ann, images = root / "annotations" / "instances_train2017.json", root / "train2017"
    if not ann.is_file():
        raise HVPLError(f"COCO: {ann} not found")
    return ann, images


def _usable_polygons(segmentation):
    """A COCO polygon list without its degenerate rings (< 6 coordinates; detectron2 drops them too), None when
    no ring is left; RLE dicts pass unchanged."""
    if not isinstance(segmentation, list):
        return segmentation
    rings = [r for r in segmentation if isinstance(r, list) and len(r) >= 6 and len(r) % 2 == 0]
    return rings or None


def convert_coco(coco: dict, dataset: str, *, where: str = "COCO", keep_classes=None,
                 allow_empty: bool = False) -> dict:
    """COCO instances dict -> YouTube-VIS dict of one-frame videos with dataset category ids.

    Video id = COCO image id; ``file_names = [image file_name]``; one annotation per mapped COCO instance
    (``segmentations``/``areas``/``bboxes`` are one-element lists). ``keep_classes`` restricts the dataset ids.
    No mapped instance at all: HVPLError, or (``allow_empty``) a dict without videos.
    """
    for key in ("images", "annotations"):
        if key not in coco:
            raise HVPLError(f"{where}: missing key '{key}'")
    cmap = coco_to_dataset_map(dataset)
    cats = dataset_categories(dataset)
    if keep_classes is not None:
        keep = set(keep_classes)
        cmap = {k: v for k, v in cmap.items() if v in keep}
        cats = [c for c in cats if c["id"] in keep]
    images = {}
    for i, im in enumerate(coco["images"]):
        if not all(k in im for k in ("id", "file_name", "height", "width")):
            raise HVPLError(f"{where}: images[{i}]: needs id, file_name, height, width")
        images[im["id"]] = im
    anns, used, dropped = [], set(), []
    for i, a in enumerate(coco["annotations"]):
        if a.get("image_id") not in images:
            raise HVPLError(f"{where}: annotations[{i}] (id {a.get('id')}): unknown image_id {a.get('image_id')}")
        if a.get("category_id") not in cmap or a.get("iscrowd", 0):
            continue   # crowd regions are not instances: detectron2 / VITA drop them from training data
        segmentation = _usable_polygons(a.get("segmentation"))
        if segmentation is None:
            dropped.append(a.get("id"))
            continue
        anns.append({"id": len(anns) + 1, "video_id": a["image_id"], "category_id": cmap[a["category_id"]],
                     "iscrowd": int(a.get("iscrowd", 0)), "coco_id": a.get("id"), "segmentations": [segmentation],
                     "areas": [a.get("area")], "bboxes": [a.get("bbox")]})
        used.add(a["image_id"])
    if dropped:
        log(f"{where}: {len(dropped)} annotations without a usable polygon (a ring of < 3 points) dropped, "
            f"COCO ids {dropped[:5]}")
    videos = [{"id": im["id"], "width": im["width"], "height": im["height"], "length": 1,
               "file_names": [im["file_name"]]} for im_id, im in sorted(images.items()) if im_id in used]
    if not videos and not allow_empty:
        raise HVPLError(f"{where}: no COCO instance maps to a '{dataset}' category")
    return {"videos": videos, "annotations": anns, "categories": cats}


