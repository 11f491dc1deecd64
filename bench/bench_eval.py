"""Speed of ``hvpl evaluate`` (``evaluate_files``) against the reference ytvoseval, run side by side in-process.

Cases (generated, seeded): a YouTube-VIS-sized test set (300 videos of 3-36 frames at 360x640 or 720x1280,
40 classes) and long videos (100 videos of 3-120 frames). Each video has 1-3 GT tracks and 10 detections
(jittered GT tracks, some of another class, and random tracks; frames missing at random), masks are
16-vertex polygons encoded to compressed RLE, as predictions are.

Both evaluators read the same two files in every run. Ours: ``evaluate_files`` (validation, the 12 stats,
per-class AP/AR1, metrics.json written). Reference: ``YTVOS(gt)``, ``loadRes``, ``evaluate``, ``accumulate``,
``summarize`` of youtubevos/cocoapi ``PythonAPI/pycocotools/{ytvos,ytvoseval}.py``, from a local copy outside
the project (never committed: ``--ref DIR`` or ``$HVPL_YTVOS_REF``, a folder holding ``ytvos.py`` and
``ytvoseval.py`` with the small patches modern numpy needs: ``from pycocotools import mask as maskUtils``,
``np.float`` -> ``np.float64``, ``int(np.round(...))`` in ``Params``, ``unicode`` -> ``bytes`` in ``loadRes``,
the matplotlib imports dropped).
Runs alternate (ours, reference, reference, ours, ...); reported: the ratio of the medians and the median of
each round's ratio ("paired": a round's two runs are adjacent, so load that drifts on a shared machine
disturbs it less). Without the reference only our times are reported. Prints a table and writes ``bench/out/eval.json``.

    .venv/bin/python bench/bench_eval.py [--ref /tmp/ytvos_ref] [--repeats 5] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from hvpl.evaluation.evaluate import evaluate_files
from hvpl.evaluation.ytvis_eval import STAT_NAMES

OUT = Path(__file__).resolve().parent / "out" / "eval.json"
CASES = {  # name: (videos, (min frames, max frames), sizes (H, W), categories)
    "ytvis_300": (300, (3, 36), ((360, 640), (720, 1280)), 40),
    "long_100": (100, (3, 120), ((360, 640), (720, 1280)), 40),
}
GT_PER_VIDEO = (1, 3)
DETS_PER_VIDEO = 10
P_MISSING = 0.1        # chance that a frame of a track has no mask
P_OTHER_CLASS = 0.2    # chance that a jittered copy of a GT track carries another class
POLY_VERTICES = 16
QUICK_SCALE = 5


# ---------------------------------------------------------------- data

def _polygon_rle(cy, cx, ry, rx, h, w) -> dict:
    angles = np.linspace(0, 2 * np.pi, POLY_VERTICES, endpoint=False)
    xy = np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1).ravel()
    r = mask_utils.merge(mask_utils.frPyObjects([xy.tolist()], h, w))
    return {"size": [h, w], "counts": r["counts"].decode("ascii")}


def _track(rng, frames, h, w, cy, cx, ry, rx, vy, vx) -> list:
    out = []
    for t in range(frames):
        y, x = np.clip(cy + vy * t, ry, h - ry), np.clip(cx + vx * t, rx, w - rx)
        out.append(None if rng.random() < P_MISSING else _polygon_rle(y, x, ry, rx, h, w))
    if all(s is None for s in out):
        out[0] = _polygon_rle(cy, cx, ry, rx, h, w)
    return out


def _random_shape(rng, h, w):
    ry, rx = rng.uniform(0.05, 0.3) * h, rng.uniform(0.05, 0.3) * w
    return rng.uniform(ry, h - ry), rng.uniform(rx, w - rx), ry, rx, rng.normal(0, 2), rng.normal(0, 2)


def make_case(videos: int, frame_range, sizes, cats: int, seed: int = 0):
    """(gt dict, results list) of one case; see the module docstring."""
    rng = np.random.default_rng(seed)
    gt = {"videos": [], "annotations": [], "categories": [{"id": c, "name": f"c{c}"} for c in range(1, cats + 1)]}
    results = []
    for v in range(1, videos + 1):
        frames = int(rng.integers(frame_range[0], frame_range[1] + 1))
        h, w = sizes[int(rng.integers(len(sizes)))]
        gt["videos"].append({"id": v, "height": h, "width": w, "length": frames})
        dets = []
        for _ in range(int(rng.integers(GT_PER_VIDEO[0], GT_PER_VIDEO[1] + 1))):
            cy, cx, ry, rx, vy, vx = _random_shape(rng, h, w)
            cat = int(rng.integers(1, cats + 1))
            segs = _track(rng, frames, h, w, cy, cx, ry, rx, vy, vx)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "video_id": v, "category_id": cat,
                                      "iscrowd": 0, "segmentations": segs,
                                      "areas": [int(mask_utils.area({"size": s["size"], "counts": s["counts"]
                                                                     .encode()})) if s else None for s in segs]})
            for _ in range(2):
                jy, jx = rng.normal(0, 0.15 * ry), rng.normal(0, 0.15 * rx)
                d_cat = int(rng.integers(1, cats + 1)) if rng.random() < P_OTHER_CLASS else cat
                dets.append((d_cat, _track(rng, frames, h, w, cy + jy, cx + jx, ry * rng.uniform(0.8, 1.2),
                                           rx * rng.uniform(0.8, 1.2), vy, vx)))
        while len(dets) < DETS_PER_VIDEO:
            dets.append((int(rng.integers(1, cats + 1)), _track(rng, frames, h, w, *_random_shape(rng, h, w))))
        results += [{"video_id": v, "category_id": c, "score": float(rng.random()), "segmentations": s}
                    for c, s in dets]
    return gt, results


# ---------------------------------------------------------------- runners

def load_reference(ref_dir: Path):
    """(YTVOS, YTVOSeval) from a local copy of the reference, or None when ``ref_dir`` holds none."""
    mods = []
    for name in ("ytvos", "ytvoseval"):
        path = ref_dir / f"{name}.py"
        if not path.is_file():
            return None
        spec = importlib.util.spec_from_file_location(f"_ytvos_reference_{name}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods[0].YTVOS, mods[1].YTVOSeval


def run_reference(ref, gt_path: Path, res_path: Path) -> tuple[float, dict]:
    ytvos, ytvoseval = ref
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = ytvos(str(gt_path))
        ev = ytvoseval(gt, gt.loadRes(str(res_path)), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - start, dict(zip(STAT_NAMES, map(float, ev.stats)))


def run_ours(gt_path: Path, res_path: Path, out_path: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        metrics = evaluate_files(gt_path, res_path, out_path)
    return time.perf_counter() - start, metrics["stats"]


def bench_case(name, spec, ref, repeats: int, quick: bool, tmp: Path) -> dict:
    videos, frame_range, sizes, cats = spec
    videos = videos // QUICK_SCALE if quick else videos
    gt, results = make_case(videos, frame_range, sizes, cats)
    gt_path, res_path = tmp / f"{name}_gt.json", tmp / f"{name}_res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    video_frames = sum(v["length"] for v in gt["videos"])
    ours_t, ref_t = [], []
    ours_stats = ref_stats = None
    for r in range(repeats):
        order = ("ours", "ref") if r % 2 == 0 else ("ref", "ours")
        for who in order:
            if who == "ours":
                t, ours_stats = run_ours(gt_path, res_path, tmp / f"{name}_metrics.json")
                ours_t.append(t)
            elif ref is not None:
                t, ref_stats = run_reference(ref, gt_path, res_path)
                ref_t.append(t)
    row = {"case": name, "videos": videos, "video_frames": video_frames, "gt_tracks": len(gt["annotations"]),
           "detections": len(results), "repeats": repeats, "ours_s": statistics.median(ours_t),
           "ours_runs_s": ours_t, "AP": ours_stats["AP"]}
    row["ours_us_per_video_frame"] = 1e6 * row["ours_s"] / video_frames
    if ref is not None:
        row.update({"ref_s": statistics.median(ref_t), "ref_runs_s": ref_t,
                    "max_abs_stat_diff": max(abs(ours_stats[k] - ref_stats[k]) for k in STAT_NAMES)})
        row["ref_us_per_video_frame"] = 1e6 * row["ref_s"] / video_frames
        row["ratio"] = row["ours_s"] / row["ref_s"]
        # each round's two runs are next to each other: their ratio is less exposed to load that drifts
        row["paired_ratio"] = statistics.median(o / r for o, r in zip(ours_t, ref_t))
    return row


def print_table(rows: list) -> None:
    print(f"{'case':<11}{'videos':>7}{'v-frames':>9}{'dets':>6}{'ours s':>8}{'ref s':>8}{'ratio':>7}{'paired':>7}"
          f"{'ours us/vf':>11}{'ref us/vf':>10}{'max|dstat|':>12}{'AP':>7}")
    for r in rows:
        ref = (f"{r['ref_s']:>8.3f}{r['ratio']:>7.2f}{r['paired_ratio']:>7.2f}" if "ref_s" in r
               else f"{'-':>8}{'-':>7}{'-':>7}")
        ref_vf = f"{r['ref_us_per_video_frame']:>10.1f}" if "ref_s" in r else f"{'-':>10}"
        diff = f"{r['max_abs_stat_diff']:>12.1e}" if "ref_s" in r else f"{'-':>12}"
        print(f"{r['case']:<11}{r['videos']:>7}{r['video_frames']:>9}{r['detections']:>6}{r['ours_s']:>8.3f}"
              f"{ref}{r['ours_us_per_video_frame']:>11.1f}{ref_vf}{diff}{r['AP']:>7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", type=Path, default=os.environ.get("HVPL_YTVOS_REF"),
                        help="folder with the reference ytvos.py and ytvoseval.py (default $HVPL_YTVOS_REF)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each evaluator per case (median taken)")
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES), help="cases to run")
    parser.add_argument("--quick", action="store_true", help=f"1/{QUICK_SCALE} of the videos")
    parser.add_argument("--out", type=Path, default=OUT, help="JSON output")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    ref = load_reference(args.ref) if args.ref is not None else None
    if ref is None:
        print("reference not found (--ref DIR or $HVPL_YTVOS_REF: a folder with ytvos.py and ytvoseval.py of "
              "youtubevos/cocoapi): only our times are reported, no ratio", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_case(name, CASES[name], ref, args.repeats, args.quick, Path(tmp)) for name in args.cases]
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"numpy": np.__version__, "reference": str(args.ref) if ref else None,
                                    "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
