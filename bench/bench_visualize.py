"""Render time of ``hvpl visualize`` for one 720p video of 36 frames (the issue's target: a few seconds).

The case (generated, seeded): a 720x1280 video of 36 JPEG frames (smooth noise), 3 GT tracks, and two
predictions files (rows) of 10 tracks each (elliptical masks moving over the frames), so a grid of 3 rows x 8
sampled frames: 240 masks decoded at 720p and drawn. Timed: ``visualize_files`` end to end (reading and checking
the files, decoding the sampled frames, drawing, writing the PNG); with ``--gif`` also the animated GIF of every
frame. Prints a table and writes ``bench/out/visualize.json``.

    .venv/bin/python bench/bench_visualize.py [--repeats 3] [--gif]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from hvpl.evaluation.visualize import DEFAULT_COLUMNS, visualize_files

OUT = Path(__file__).resolve().parent / "out" / "visualize.json"
HEIGHT, WIDTH, FRAMES = 720, 1280, 36
GT_TRACKS, PRED_TRACKS, PRED_FILES = 3, 10, 2
NOISE_CELLS = 16   # smooth background: a 16 x 16 noise image upsampled
SEED = 0


def _ellipse(cy, cx, ry, rx) -> dict:
    yy, xx = np.ogrid[:HEIGHT, :WIDTH]
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}


def _track(rng) -> list[dict]:
    start = rng.uniform([100, 100], [HEIGHT - 100, WIDTH - 100])
    step = rng.uniform(-8, 8, size=2)
    radius = rng.uniform(30, 120, size=2)
    return [_ellipse(*(start + t * step), *radius) for t in range(FRAMES)]


def make_case(root: Path) -> tuple[Path, list[Path]]:
    """Frames, test JSON and predictions files of the benchmark video under ``root``."""
    rng = np.random.default_rng(SEED)
    frames = root / "frames" / "v1"
    frames.mkdir(parents=True)
    names = []
    for t in range(FRAMES):
        noise = rng.uniform(0, 255, size=(NOISE_CELLS, NOISE_CELLS, 3)).astype(np.uint8)
        Image.fromarray(noise).resize((WIDTH, HEIGHT), Image.BILINEAR).save(frames / f"{t:05d}.jpg", quality=90)
        names.append(f"v1/{t:05d}.jpg")
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, 5)]
    video = {"id": 1, "height": HEIGHT, "width": WIDTH, "length": FRAMES, "file_names": names}
    anns = [{"id": i + 1, "video_id": 1, "category_id": 1 + i % 4, "iscrowd": 0, "segmentations": _track(rng)}
            for i in range(GT_TRACKS)]
    test_json = root / "test.json"
    test_json.write_text(json.dumps({"videos": [video], "annotations": anns, "categories": categories,
                                     "image_root": "frames"}))
    preds = []
    for f in range(PRED_FILES):
        path = root / f"pred{f}.json"
        path.write_text(json.dumps([{"video_id": 1, "category_id": 1 + i % 4, "score": float(rng.uniform()),
                                     "segmentations": _track(rng)} for i in range(PRED_TRACKS)]))
        preds.append(path)
    return test_json, preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gif", action="store_true", help="also time the GIF of all frames")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        test_json, preds = make_case(root)
        times = {"png": []} | ({"png+gif": []} if args.gif else {})
        for _ in range(args.repeats):
            for name in times:
                start = time.perf_counter()
                visualize_files(test_json, preds, root / "out", video_ids=["1"], gif=name == "png+gif")
                times[name].append(time.perf_counter() - start)
        size = Image.open(root / "out" / "video1.png").size
    rows = {name: {"median_s": statistics.median(t), "min_s": min(t), "runs": t} for name, t in times.items()}
    result = {"video": f"{HEIGHT}x{WIDTH}, {FRAMES} frames", "rows": 1 + PRED_FILES, "columns": DEFAULT_COLUMNS,
              "tracks_per_prediction_row": PRED_TRACKS, "png_size": list(size), "times": rows}
    print(f"hvpl visualize, one {result['video']} video, {result['rows']} rows x {DEFAULT_COLUMNS} columns "
          f"(png {size[0]}x{size[1]})")
    print(f"{'output':<10} {'median s':>9} {'min s':>7}")
    for name, r in rows.items():
        print(f"{name:<10} {r['median_s']:>9.2f} {r['min_s']:>7.2f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
