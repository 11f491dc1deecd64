"""Write a reference case for tests/test_ytvis_eval.py: gt.json, dt.json and what the reference ytvoseval makes
of them (expected.json: the 12 stats, and per class the paper protocol's AP and AR1: the videos holding the
class, categories = [the class]).

The reference (youtubevos/cocoapi ``ytvos.py`` / ``ytvoseval.py``) runs from a local copy outside the project,
as in bench/bench_eval.py; only its outputs are committed. ``--check DIR`` recomputes an existing case's
expected.json and prints the largest difference instead of writing.

    .venv/bin/python bench/eval_reference_case.py --ref /tmp/ytvos_ref --out tests/data/ytvis_eval_reference/v4
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import load_reference, make_case  # noqa: E402

from hvpl.evaluation.ytvis_eval import STAT_NAMES  # noqa: E402

# A small case of the YouTube-VIS shape (3-36 frames, two frame sizes), 10-15 GT tracks per class: recalls such
# as 9/10 that float32 rounds below their recall threshold, precisions such as 2/3 that it rounds by 1e-8.
CASE = {"videos": 24, "frame_range": (3, 36), "sizes": ((24, 32), (40, 56)), "cats": 4, "seed": 19}


def reference_metrics(ref, gt: dict, dt: list) -> dict:
    """The 12 stats and per-class AP / AR1 of the reference on copies of ``gt`` / ``dt`` (it mutates them)."""
    ytvos, ytvoseval = ref

    def run(vid_ids=None, cat_ids=None):
        g = ytvos()
        g.dataset = copy.deepcopy(gt)
        g.createIndex()
        ev = ytvoseval(g, g.loadRes(copy.deepcopy(dt)), "segm")
        if vid_ids is not None:
            ev.params.vidIds, ev.params.catIds = vid_ids, cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return dict(zip(STAT_NAMES, map(float, ev.stats)))

    with contextlib.redirect_stdout(io.StringIO()):
        stats = run()
        per_class = {}
        for c in sorted(c["id"] for c in gt["categories"]):
            vids = sorted({a["video_id"] for a in gt["annotations"] if a["category_id"] == c})
            if vids:
                s = run(vids, [c])
                per_class[str(c)] = {"AP": s["AP"], "AR1": s["AR1"]}
    return {"stats": stats, "per_class": per_class}


def with_gt_areas(gt: dict) -> dict:
    """The reference reads GT mean areas from ``areas``: fill it from the masks where missing."""
    for ann in gt["annotations"]:
        if "areas" not in ann:
            ann["areas"] = [int(mask_utils.area({"size": s["size"], "counts": s["counts"].encode()})) if s else None
                            for s in ann["segmentations"]]
    return gt


def max_difference(a: dict, b: dict) -> float:
    diffs = [abs(a["stats"][k] - b["stats"][k]) for k in STAT_NAMES]
    diffs += [abs(a["per_class"][c][k] - b["per_class"][c][k]) for c in a["per_class"] for k in ("AP", "AR1")]
    return max(diffs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", type=Path, default=os.environ.get("HVPL_YTVOS_REF"),
                        help="folder with the reference ytvos.py and ytvoseval.py (default $HVPL_YTVOS_REF)")
    parser.add_argument("--out", type=Path, help="folder to write gt.json, dt.json, expected.json into")
    parser.add_argument("--check", type=Path, help="recompute this case's expected.json and compare")
    args = parser.parse_args()
    ref = load_reference(args.ref) if args.ref is not None else None
    if ref is None:
        sys.exit("error: the reference was not found (--ref DIR or $HVPL_YTVOS_REF)")
    if args.check:
        gt = json.loads((args.check / "gt.json").read_text())
        dt = json.loads((args.check / "dt.json").read_text())
        got = reference_metrics(ref, gt, dt)
        print(f"{args.check}: largest difference to expected.json "
              f"{max_difference(got, json.loads((args.check / 'expected.json').read_text())):.3g}")
        return
    if args.out is None:
        parser.error("--out or --check is required")
    gt, dt = make_case(CASE["videos"], CASE["frame_range"], CASE["sizes"], CASE["cats"], seed=CASE["seed"])
    gt = with_gt_areas(gt)
    expected = reference_metrics(ref, gt, dt)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gt.json").write_text(json.dumps(gt))
    (args.out / "dt.json").write_text(json.dumps(dt))
    (args.out / "expected.json").write_text(json.dumps(expected, indent=1))
    print(f"wrote {args.out} (numpy {np.__version__}): AP {expected['stats']['AP']:.6f}")


if __name__ == "__main__":
    main()
