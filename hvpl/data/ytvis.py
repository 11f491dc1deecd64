"""YouTube-VIS 2019/2021 and OVIS annotation files: loading, validation, dataset layouts, frame paths.

Layouts (protocol.md Section 1), resolved from a dataset root or ``$DATASETS_ROOT``:

- ``ytvis_2019`` / ``ytvis_2021``: ``<root>/train.json`` + ``<root>/train/JPEGImages/<video>/<frame>.jpg``
- ``ovis``: ``<root>/annotations/train.json`` + ``<root>/train[/JPEGImages]/<video>/<frame>.jpg``
- ``synthetic``: the layout ``hvpl synth`` writes (the YouTube-VIS layout with a train set only)
- paper re-split files: ``split_dataset/{YouTube-2019,YouTube-2021,OVIS}/{train_split,test_split}.json`` next to
  (or inside) the dataset root; their frames live in the original train folder.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from hvpl.data.masks import check_segmentation, frame_areas
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import read_json

DATASET_DIRS = {"ytvis_2019": "ytvis_2019", "ytvis_2021": "ytvis_2021", "ovis": "ovis", "synthetic": "synthetic"}
SPLIT_DIRS = {"ytvis_2019": "YouTube-2019", "ytvis_2021": "YouTube-2021", "ovis": "OVIS"}


@dataclass
class DatasetLayout:
    """Where one dataset's training annotations and frames are (plus the paper split files if present)."""
    name: str
    root: Path
    train_json: Path
    train_frames: Path
    split_files: tuple[Path, Path] | None  # (train_split.json, test_split.json)


def _first_existing(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def _dataset_root(name: str, data_root: str | os.PathLike | None) -> Path:
    if data_root is None:
        env = os.environ.get("DATASETS_ROOT")
        if not env:
            raise HVPLError(f"dataset '{name}': no data root given and DATASETS_ROOT is not set")
        data_root = env
    root = Path(data_root)
    nested = root / DATASET_DIRS.get(name, name)
    if not _annotation_candidates(name, root) and nested.is_dir():
        return nested
    return root


def _annotation_candidates(name: str, root: Path) -> list[Path]:
    options = [root / "train.json", root / "annotations" / "train.json"]
    if name == "ovis":
        options = options[::-1]
    return [p for p in options if p.is_file()]


def resolve_layout(name: str, data_root: str | os.PathLike | None = None) -> DatasetLayout:
    """Find ``name``'s train annotations, frame folder and paper split files under ``data_root`` (or $DATASETS_ROOT).

    ``data_root`` may be the dataset folder itself or the folder that holds ``ytvis_2019/``, ``ovis/``, ....
    A dataset of one's own (any other name) has the YouTube-VIS layout, in ``data_root`` or ``data_root/<name>``.
    """
    root = _dataset_root(name, data_root)
    found = _annotation_candidates(name, root)
    if not found:
        raise HVPLError(f"dataset '{name}': no train.json under {root} (looked for train.json and "
                        f"annotations/train.json; set the scenario's data.root or DATASETS_ROOT)")
    frames = _first_existing([root / "train" / "JPEGImages", root / "train"])
    if frames is None:
        raise HVPLError(f"dataset '{name}': no frame folder {root / 'train' / 'JPEGImages'} or {root / 'train'}")
    split_files = None
    if name in SPLIT_DIRS:
        for base in (root, root.parent):
            folder = base / "split_dataset" / SPLIT_DIRS[name]
            pair = (folder / "train_split.json", folder / "test_split.json")
            if pair[0].is_file() and pair[1].is_file():
                split_files = pair
                break
    return DatasetLayout(name, root, found[0], frames, split_files)


def _require(obj: dict, keys: tuple, where: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise HVPLError(f"{where}: missing keys {missing}")


def is_id(value) -> bool:
    """A YouTube-VIS id: an integer (or a string), never a list, a float or a bool."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _require_ids(obj: dict, keys: tuple, where: str) -> None:
    bad = [k for k in keys if not is_id(obj[k])]
    if bad:
        raise HVPLError(f"{where}: {bad[0]} {obj[bad[0]]!r} must be an integer or a string")


def is_size(value) -> bool:
    """A frame height or width: an integer >= 1 (not a bool, a float or a string)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def video_problem(video) -> str | None:
    """What is wrong with a video entry's structure (None if nothing): an object with an id, 'height' and
    'width' integers >= 1, 'file_names' (if present) a list of strings, 'length' (if present) an integer."""
    if not isinstance(video, dict):
        return f"must be an object, got {type(video).__name__}"
    missing = [k for k in ("id", "width", "height") if k not in video]
    if missing:
        return f"missing keys {missing}"
    if not is_id(video["id"]):
        return f"id {video['id']!r} must be an integer or a string"
    for key in ("height", "width"):
        if not is_size(video[key]):
            return f"{key} {video[key]!r} must be an integer >= 1"
    names = video.get("file_names", [])
    if not isinstance(names, list):
        return "'file_names' must be a list"
    bad = next((i for i, n in enumerate(names) if not isinstance(n, str) or not n), None)
    if bad is not None:
        return f"file_names[{bad}] {names[bad]!r} must be a non-empty string (a path)"
    length = video.get("length", len(names))
    if not isinstance(length, int) or isinstance(length, bool):
        return f"length {length!r} must be an integer"
    return None


def video_where(video, where: str) -> str:
    """``where`` plus the video's id when it has a usable one: ``t.json: videos[3] (id 17)``."""
    return f"{where} (id {video['id']})" if isinstance(video, dict) and is_id(video.get("id")) else where


def _check_entries(data: dict, key: str, path) -> None:
    bad = next((i for i, x in enumerate(data[key]) if not isinstance(x, dict)), None)
    if bad is not None:
        raise HVPLError(f"{path}: {key}[{bad}] must be an object, got {type(data[key][bad]).__name__}")


def _check_unique(items: list, where: str, what: str) -> None:
    dup = [k for k, n in Counter(x["id"] for x in items).items() if n > 1]
    if dup:
        raise HVPLError(f"{where}: duplicate {what} id {dup[0]}")


def validate_ytvis(data: dict, path: str | os.PathLike, deep: bool = True) -> None:
    """Check a YouTube-VIS dict; raise HVPLError naming ``path`` and the first offending entry.

    Checks: required keys, duplicate video/annotation/category ids, unknown video or category ids, a
    ``file_names``/``segmentations`` length that differs from the video's, and (``deep``) every RLE size
    against the video size.
    """
    if not isinstance(data, dict):
        raise HVPLError(f"{path}: expected a JSON object with videos/annotations/categories")
    _require(data, ("videos", "categories"), str(path))
    if data.get("annotations") is None:   # absent, or null as in the official valid/test files
        data["annotations"] = []
    for key in ("videos", "categories", "annotations"):
        if not isinstance(data[key], list):
            raise HVPLError(f"{path}: '{key}' must be a list")
        _check_entries(data, key, path)
    for i, c in enumerate(data["categories"]):
        _require(c, ("id", "name"), f"{path}: categories[{i}]")
        _require_ids(c, ("id",), f"{path}: categories[{i}]")
    _check_unique(data["categories"], str(path), "category")
    videos = {}
    for i, v in enumerate(data["videos"]):
        where = f"{path}: videos[{i}]"
        _require(v, ("id", "width", "height", "file_names"), where)
        problem = video_problem(v)
        if problem:
            raise HVPLError(f"{video_where(v, where)}: {problem}")
        if "length" in v and v["length"] != len(v["file_names"]):
            raise HVPLError(f"{where} (id {v['id']}): length {v['length']} but {len(v['file_names'])} file_names")
        videos[v["id"]] = v
    _check_unique(data["videos"], str(path), "video")
    _check_unique(data["annotations"], str(path), "annotation")
    cat_ids = {c["id"] for c in data["categories"]}
    for i, a in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}] (id {a.get('id')})"
        _require(a, ("id", "video_id", "category_id", "segmentations"), where)
        _require_ids(a, ("id", "video_id", "category_id"), where)
        if a["category_id"] not in cat_ids:
            raise HVPLError(f"{where}: unknown category_id {a['category_id']}")
        video = videos.get(a["video_id"])
        if video is None:
            raise HVPLError(f"{where}: unknown video_id {a['video_id']}")
        if not isinstance(a["segmentations"], list):
            raise HVPLError(f"{where}: 'segmentations' must be a list (null per frame where absent)")
        if len(a["segmentations"]) != len(video["file_names"]):
            raise HVPLError(f"{where}: {len(a['segmentations'])} segmentations for a video of "
                            f"{len(video['file_names'])} frames")
    if deep:
        _check_frames(data["annotations"], videos, path)


def _check_frames(annotations: list, videos: dict, path) -> None:
    """Every frame's segmentation (see :func:`check_segmentation`); the compressed RLE strings of the video's
    size all at once (:func:`frame_areas`: one vectorised pass instead of a few numpy calls per mask)."""
    def where(i: int, t: int) -> str:
        return f"{path}: annotations[{i}] (id {annotations[i].get('id')}) frame {t}"

    def other(seg, height, width, i, t):
        check_segmentation(seg, height, width, where(i, t))
        return None, 0

    problems = frame_areas(annotations, videos, other).problems
    if problems:
        i, t, why = problems[0]
        raise HVPLError(f"{where(i, t)}: {why}")


def image_root_of(data: dict, json_path: str | os.PathLike, image_root: str | os.PathLike | None = None) -> Path:
    """Frame folder: ``image_root`` argument, else the JSON's ``"image_root"`` (relative to its folder)."""
    root = image_root if image_root is not None else data.get("image_root")
    if root is None:
        raise HVPLError(f"{json_path}: no 'image_root' entry; pass the frame folder explicitly (e.g. hvpl predict "
                        "--image-root DIR)")
    if not isinstance(root, (str, os.PathLike)) or not str(root):
        raise HVPLError(f"{json_path}: image_root {root!r} must be a non-empty string (the frame folder)")
    root = Path(root)
    return root if root.is_absolute() else Path(json_path).resolve().parent / root


def check_frames(data: dict, frames_root: Path, path: str | os.PathLike) -> None:
    """Raise HVPLError naming the JSON, the video and the first missing frame file under ``frames_root``."""
    for v in data["videos"]:
        check_video_frames(v, frames_root, path)


def check_video_frames(video: dict, frames_root: Path, path: str | os.PathLike, sizes: bool = False) -> None:
    """:func:`check_frames` for one video; with ``sizes`` also the first frame whose size (read from its header,
    not decoded) is not the video's."""
    for name in video["file_names"]:
        frame = frames_root / name
        if not frame.is_file():
            raise HVPLError(f"{path}: video {video['id']}: frame file {frame} not found")
        if sizes:
            _check_frame_size(frame, video, path)


def _check_frame_size(frame: Path, video: dict, path) -> None:
    try:
        with Image.open(frame) as im:
            width, height = im.size
    except OSError as exc:
        raise HVPLError(f"{path}: video {video['id']}: cannot read frame {frame} ({exc})") from exc
    if (height, width) != (video["height"], video["width"]):
        raise HVPLError(f"{path}: video {video['id']}: frame {frame} is {height}x{width}, the video says "
                        f"{video['height']}x{video['width']}")


def load_ytvis(path: str | os.PathLike, *, frames: bool = False, image_root: str | os.PathLike | None = None,
               deep: bool = True) -> dict:
    """Read and validate a YouTube-VIS/OVIS JSON. ``frames=True`` also checks every frame file exists."""
    data = read_json(path)
    validate_ytvis(data, path, deep=deep)
    if frames:
        check_frames(data, image_root_of(data, path, image_root), path)
    return data


def filter_classes(data: dict, cat_ids, *, categories: list[dict], drop_empty: bool, where: str,
                   video_ids=None) -> dict:
    """A new YouTube-VIS dict keeping annotations of ``cat_ids`` (in ``video_ids`` if given).

    ``categories`` become the output's category list; ``drop_empty`` drops videos left without annotations.
    An empty result raises HVPLError naming ``where``.
    """
    keep = set(cat_ids)
    vids = None if video_ids is None else set(video_ids)
    anns = [a for a in data["annotations"] if a["category_id"] in keep and (vids is None or a["video_id"] in vids)]
    with_anns = {a["video_id"] for a in anns}
    videos = [v for v in data["videos"] if (vids is None or v["id"] in vids)
              and (not drop_empty or v["id"] in with_anns)]
    if not videos or not anns:
        raise HVPLError(f"{where}: no video has an annotation of categories {sorted(keep)}")
    out = {k: v for k, v in data.items() if k not in ("videos", "annotations", "categories")}
    out.update(videos=videos, annotations=anns, categories=categories)
    return out


def video_classes(data: dict) -> dict[int, set[int]]:
    """Video id -> set of category ids annotated in it (every video present, possibly empty)."""
    out = {v["id"]: set() for v in data["videos"]}
    for a in data["annotations"]:
        out[a["video_id"]].add(a["category_id"])
    return out
