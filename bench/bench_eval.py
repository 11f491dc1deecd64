"""Speed of ``evaluate_files`` on generated YouTube-VIS-sized cases; prints a table, writes bench/out/eval.json.

Cases: the synthetic benchmark's shape (64x64, 6 frames), and a real-dataset shape (360x640, 36 frames,
10 detections per video as in the paper's YTVIS settings). Detections are jittered GT tracks + random tracks.

    .venv/bin/python bench/bench_eval.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from hvpl.evaluation.evaluate import evaluate_files

CASES = {  # name: (videos, frames, height, width, categories, GT tracks per video, detections per video)
    "synthetic_64x64": (200, 6, 64, 64, 8, 2, 10),
    "ytvis_360x640": (100, 36, 360, 640, 40, 2, 10),
}
QUICK_SCALE = 4


def _rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def _track(rng, n, h, w, y, x, size):
    out = []
    for t in range(n):
        m = np.zeros((h, w), bool)
        yy, xx = int(np.clip(y + 2 * t, 0, h - size)), int(np.clip(x + 2 * t, 0, w - size))
        m[yy:yy + size, xx:xx + size] = True
        out.append(_rle(m) if rng.random() > 0.1 else None)
    return out


def make_case(videos, frames, h, w, cats, gt_per_video, dets_per_video, seed=0):
    rng = np.random.default_rng(seed)
    gt = {"videos": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(1, cats + 1)]}
    results = []
    for v in range(1, videos + 1):
        gt["videos"].append({"id": v, "height": h, "width": w, "length": frames})
        for _ in range(gt_per_video):
            size = int(rng.integers(min(h, w) // 8, min(h, w) // 3))
            y, x, cat = int(rng.integers(0, h - size)), int(rng.integers(0, w - size)), int(rng.integers(1, cats + 1))
            segs = _track(rng, frames, h, w, y, x, size)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "video_id": v, "category_id": cat,
                                      "iscrowd": 0, "segmentations": segs,
                                      "areas": [size * size if s else None for s in segs]})
            for _ in range(dets_per_video // (2 * gt_per_video)):
                dy, dx = rng.integers(-size // 4, size // 4 + 1, 2)
                results.append({"video_id": v, "category_id": cat, "score": float(rng.random()),
                                "segmentations": _track(rng, frames, h, w, y + dy, x + dx, size)})
        while sum(r["video_id"] == v for r in results[-dets_per_video:]) < dets_per_video:
            size = int(rng.integers(min(h, w) // 8, min(h, w) // 3))
            results.append({"video_id": v, "category_id": int(rng.integers(1, cats + 1)), "score": float(rng.random()),
                            "segmentations": _track(rng, frames, h, w, int(rng.integers(0, h - size)),
                                                    int(rng.integers(0, w - size)), size)})
    return gt, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"1/{QUICK_SCALE} of the videos")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (videos, frames, h, w, cats, gpv, dpv) in CASES.items():
            videos = videos // QUICK_SCALE if args.quick else videos
            gt, results = make_case(videos, frames, h, w, cats, gpv, dpv)
            gt_path, res_path = Path(tmp) / f"{name}_gt.json", Path(tmp) / f"{name}_res.json"
            gt_path.write_text(json.dumps(gt))
            res_path.write_text(json.dumps(results))
            start = time.perf_counter()
            m = evaluate_files(gt_path, res_path, Path(tmp) / f"{name}_metrics.json")
            seconds = time.perf_counter() - start
            rows.append({"case": name, "videos": videos, "frames": frames, "size": f"{h}x{w}",
                         "detections": len(results), "gt_tracks": len(gt["annotations"]), "seconds": seconds,
                         "ms_per_video": 1000 * seconds / videos, "AP": m["stats"]["AP"]})
    print(f"{'case':<18}{'videos':>7}{'frames':>7}{'size':>9}{'dets':>7}{'seconds':>9}{'ms/video':>10}{'AP':>7}")
    for r in rows:
        print(f"{r['case']:<18}{r['videos']:>7}{r['frames']:>7}{r['size']:>9}{r['detections']:>7}"
              f"{r['seconds']:>9.2f}{r['ms_per_video']:>10.1f}{r['AP']:>7.3f}")
    out = Path(__file__).parent / "out" / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
