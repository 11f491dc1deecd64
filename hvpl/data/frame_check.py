"""The full frame check before training: every frame a training JSON names is decoded once, and what decoded
is remembered, so the check is paid once per dataset.

``hvpl split`` and the datasets only check that frames exist (and, in the split, their header size); a frame
truncated or corrupted after its header would stop training at whatever iteration first draws it. This check
decodes each frame's whole compressed data (``PIL.Image.load``) and compares its size with the video's.

The cache, ``.hvpl_frames_checked.json`` in the frame folder (or, where that is not writable, next to the JSON),
maps a frame's absolute path to ``[bytes, mtime_ns, height, width]`` of the file that decoded: a frame whose
size or modification time changed is decoded again.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_write_json
from hvpl.utils.logging import log, progress

CACHE_NAME = ".hvpl_frames_checked.json"
CACHE_FORMAT = 1
FRAME_CHECKS = ("decode", "exists")
DRAFT_SCALE = 8   # the smallest JPEG DCT scale libjpeg offers
# decoding releases the GIL: a few threads keep several cores busy without processes
MAX_THREADS = 8


def default_frame_check() -> str:
    """``$HVPL_FRAME_CHECK`` (``decode`` or ``exists``), else ``decode``."""
    value = os.environ.get("HVPL_FRAME_CHECK", "decode")
    if value not in FRAME_CHECKS:
        raise HVPLError(f"$HVPL_FRAME_CHECK={value!r}: expected one of {', '.join(FRAME_CHECKS)}")
    return value


def _cache_paths(frames_root: Path, json_path: Path) -> list[Path]:
    return [frames_root / CACHE_NAME, json_path.resolve().parent / CACHE_NAME]


def _read_cache(paths: list[Path]) -> dict:
    """Entries of every readable cache file (a missing, foreign or corrupt one counts as empty)."""
    entries: dict = {}
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("format") == CACHE_FORMAT and isinstance(data.get("frames"), dict):
            entries.update(data["frames"])
    return entries


def _write_cache(paths: list[Path], entries: dict) -> Path | None:
    """Write to the first writable place; None if none is (the check then repeats next time)."""
    for path in paths:
        try:
            atomic_write_json(path, {"format": CACHE_FORMAT, "frames": entries}, indent=None)
            return path
        except (OSError, HVPLError):   # atomic writes report a failed write as HVPLError naming the file
            continue
    return None


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _decode(path: Path) -> tuple[int, int] | str:
    """(height, width) of a completely decoded frame, or what went wrong. A JPEG is decoded at 1/8 scale (DCT
    scaling): every byte of its compressed data is still read, so a truncated or unreadable file fails as in a
    full decode, at about half the cost."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            im.draft("RGB", (width // DRAFT_SCALE, height // DRAFT_SCALE))   # a no-op for other formats
            im.load()
            return height, width
    except Exception as exc:   # PIL raises OSError, SyntaxError, ValueError... for bad files
        return f"{type(exc).__name__}: {exc}"


def verify_frames(videos: list[dict], frames_root: Path, json_path: Path, threads: int | None = None) -> int:
    """Decode every frame of ``videos`` (YouTube-VIS entries under ``frames_root``) not already in the cache;
    HVPLError naming the JSON, the video and the frame for a missing, undecodable or wrong-size frame.
    Returns the number of frames decoded (0 when the cache had them all)."""
    frames_root, json_path = Path(frames_root), Path(json_path)
    caches = _cache_paths(frames_root, json_path)
    cache = _read_cache(caches)
    todo = []
    for video in videos:
        for name in video["file_names"]:
            path = frames_root / name
            stamp = _stamp(path)
            if stamp is None:
                raise HVPLError(f"{json_path}: video {video['id']}: frame file {path} not found")
            key = os.path.abspath(path)
            known = cache.get(key)
            if isinstance(known, list) and len(known) == 4 and known[:2] == stamp:
                _check_size(tuple(known[2:]), video, path, json_path)
            else:
                todo.append((video, key, path, stamp))
    if not todo:
        return 0
    log(f"decoding {len(todo)} frames under {frames_root} once (full frame check; cached in {CACHE_NAME})")
    workers = max(1, min(MAX_THREADS, threads or len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda item: _decode(item[2]), todo)
        for (video, key, path, stamp), result in zip(todo, progress(results, total=len(todo), desc="frame check")):
            if isinstance(result, str):
                raise HVPLError(f"{json_path}: video {video['id']}: frame {path} cannot be decoded ({result})")
            _check_size(result, video, path, json_path)
            cache[key] = stamp + list(result)
    written = _write_cache(caches, cache)
    if written is None:
        log(f"warning: no writable place for {CACHE_NAME} ({', '.join(map(str, caches))}): the frames will be "
            "decoded again next time")
    return len(todo)


def _check_size(size: tuple, video: dict, path: Path, json_path: Path) -> None:
    if tuple(size) != (video["height"], video["width"]):
        raise HVPLError(f"{json_path}: video {video['id']}: frame {path} is {size[0]}x{size[1]}, the video says "
                        f"{video['height']}x{video['width']}")


def verify_dataset_frames(dataset, threads: int | None = None) -> int:
    """:func:`verify_frames` for a training dataset: a ClipDataset, or a JointClipDataset's videos and images."""
    parts = [dataset.videos, dataset.images] if hasattr(dataset, "images") else [dataset]
    return sum(verify_frames(part.videos, part.root, part.json_path, threads) for part in parts)
