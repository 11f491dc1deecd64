"""YouTube-VIS evaluator: reference cases (ytvoseval.py outputs; v4 written by bench/eval_reference_case.py),
hand-worked cases, an independent brute force. `make test-numpy-min` runs them under the oldest numpy allowed."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from hvpl.evaluation.ytvis_eval import STAT_NAMES, YTVISEval

REF = Path(__file__).parent / "data" / "ytvis_eval_reference"
TOL = 1e-9


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def box_mask(h, w, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def make_gt(videos, anns, num_cats=2):
    """videos: list of (id, h, w, length); anns: list of (video_id, cat, iscrowd, [mask or None per frame])."""
    gt = {"videos": [{"id": i, "height": h, "width": w, "length": n, "file_names": [f"{i}/{t}.jpg" for t in range(n)]}
                     for i, h, w, n in videos],
          "categories": [{"id": c, "name": f"c{c}"} for c in range(1, num_cats + 1)], "annotations": []}
    for k, (vid, cat, crowd, masks) in enumerate(anns):
        gt["annotations"].append({
            "id": k + 1, "video_id": vid, "category_id": cat, "iscrowd": crowd,
            "segmentations": [rle(m) if m is not None else None for m in masks],
            "areas": [int(m.sum()) if m is not None else None for m in masks]})
    return gt


def det(vid, cat, score, masks):
    return {"video_id": vid, "category_id": cat, "score": score,
            "segmentations": [rle(m) if m is not None else None for m in masks]}


@pytest.mark.parametrize("case", ["v1", "v2", "v3", "v4"])
def test_reference_cases(case):
    gt = json.loads((REF / case / "gt.json").read_text())
    dt = json.loads((REF / case / "dt.json").read_text())
    expected = json.loads((REF / case / "expected.json").read_text())
    ev = YTVISEval(gt, dt)
    stats = ev.stats()
    assert list(stats) == list(expected["stats"]) == list(STAT_NAMES)
    for name in STAT_NAMES:
        assert abs(stats[name] - expected["stats"][name]) < TOL, name
    per_class = ev.per_class()
    assert {str(c) for c in per_class} == set(expected["per_class"])
    for c, vals in expected["per_class"].items():
        for key in ("AP", "AR1"):
            assert abs(per_class[int(c)][key] - vals[key]) < TOL, (c, key)


def test_perfect_detection():
    m = box_mask(10, 10, 2, 6, 2, 6)
    gt = make_gt([(1, 10, 10, 2)], [(1, 1, 0, [m, m])])
    s = YTVISEval(gt, [det(1, 1, 0.9, [m, m])]).stats()
    for name in ("AP", "AP50", "AP75", "AP_small", "AR1", "AR10", "AR100", "AR_small"):
        assert s[name] == pytest.approx(1.0)
    for name in ("AP_medium", "AP_large", "AR_medium", "AR_large"):
        assert s[name] == -1.0


def test_half_overlap_matches_only_at_050():
    g = box_mask(10, 10, 0, 4, 0, 4)          # 16 px per frame
    d = box_mask(10, 10, 0, 2, 0, 4)          # 8 px inside g: IoU 8/16 = 0.5 on both frames
    gt = make_gt([(1, 10, 10, 2)], [(1, 1, 0, [g, g])])
    s = YTVISEval(gt, [det(1, 1, 0.5, [d, d])]).stats()
    assert s["AP50"] == pytest.approx(1.0)
    assert s["AP75"] == 0.0
    assert s["AP"] == pytest.approx(0.1)      # one of ten IoU thresholds
    assert s["AR1"] == pytest.approx(0.1)


def test_null_frames_sum_over_frames():
    g = box_mask(10, 10, 0, 4, 0, 4)          # GT in frames 0, 1 (16 px each)
    d = box_mask(10, 10, 0, 4, 0, 3)          # det in frames 1, 2 (12 px each)
    # IoU = (12) / (16 + 16 + 12) = 12/44 < 0.5 -> no match at any threshold
    gt = make_gt([(1, 10, 10, 3)], [(1, 1, 0, [g, g, None])])
    ev = YTVISEval(gt, [det(1, 1, 0.5, [None, d, d])]).evaluate()
    assert ev._matches[(1, 1)][0]["dt_matches"].sum() == 0
    assert ev.stats()["AP"] == 0.0
    # frames 0 and 1 instead: IoU = (12 + 12) / (16 + 16) = 0.75 -> matched at 0.50..0.75 (6 thresholds)
    s = YTVISEval(gt, [det(1, 1, 0.5, [d, d, None])]).stats()
    assert s["AP"] == pytest.approx(0.6)


def test_crowd_is_ignored():
    g = box_mask(10, 10, 0, 4, 0, 4)
    c = box_mask(10, 10, 5, 10, 5, 10)
    gt = make_gt([(1, 10, 10, 1)], [(1, 1, 0, [g]), (1, 1, 1, [c])])
    # a high-score detection on the crowd region is ignored (not a false positive): AP stays 1
    dts = [det(1, 1, 0.9, [c]), det(1, 1, 0.8, [g])]
    assert YTVISEval(gt, dts).stats()["AP"] == pytest.approx(1.0)
    # only a crowd GT: nothing to recall, every stat undefined
    gt_crowd = make_gt([(1, 10, 10, 1)], [(1, 1, 1, [c])])
    assert all(v == -1.0 for v in YTVISEval(gt_crowd, [det(1, 1, 0.9, [c])]).stats().values())


def test_false_positive_ranked_first_halves_precision():
    g = box_mask(10, 10, 0, 4, 0, 4)
    far = box_mask(10, 10, 6, 10, 6, 10)
    gt = make_gt([(1, 10, 10, 1)], [(1, 1, 0, [g])])
    s = YTVISEval(gt, [det(1, 1, 0.9, [far]), det(1, 1, 0.8, [g])]).stats()
    assert s["AP"] == pytest.approx(0.5, abs=1e-12)   # precision 1/2 at every recall point
    assert s["AR1"] == 0.0 and s["AR10"] == pytest.approx(1.0)


def test_no_detections_gives_zero():
    g = box_mask(10, 10, 0, 4, 0, 4)
    gt = make_gt([(1, 10, 10, 1)], [(1, 1, 0, [g])])
    s = YTVISEval(gt, []).stats()
    assert s["AP"] == 0.0 and s["AR1"] == 0.0 and s["AP_medium"] == -1.0


# ---------------------------------------------------------------- independent brute force (no shared code)

def brute_force(gt, dts, cats=None, vids=None):
    """Plain-loop YouTube-VIS AP / AR1 / AR10 / AP50 / AP75 (area 'all'), from decoded bitmaps."""
    vids = sorted(v["id"] for v in gt["videos"]) if vids is None else vids
    cats = sorted(c["id"] for c in gt["categories"]) if cats is None else cats
    thrs = [0.5 + 0.05 * i for i in range(10)]
    recall_pts = [i / 100 for i in range(101)]

    def decode(segs):
        return [None if s is None else mask_utils.decode({"size": s["size"], "counts": s["counts"].encode()})
                .astype(bool) for s in segs]

    def iou(a, b):
        inter = union = 0
        for x, y in zip(a, b):
            if x is None and y is None:
                continue
            x = np.zeros_like(y) if x is None else x
            y = np.zeros_like(x) if y is None else y
            inter += int((x & y).sum())
            union += int((x | y).sum())
        return inter / union if union else 0.0

    ap = {t: [] for t in range(10)}
    ar = {1: [], 10: []}
    for cat in cats:
        per_thr = {t: {"scored": [], "npos": 0} for t in range(10)}
        scored_by_maxdet = {1: {t: [] for t in range(10)}, 10: {t: [] for t in range(10)}}
        npos = 0
        for vid in vids:
            g = [(a, decode(a["segmentations"])) for a in gt["annotations"]
                 if a["video_id"] == vid and a["category_id"] == cat]
            d = [(i, r, decode(r["segmentations"])) for i, r in enumerate(dts)
                 if r["video_id"] == vid and r["category_id"] == cat]
            d.sort(key=lambda x: (-x[1]["score"], x[0]))
            d = d[:100]   # maxDets of AP: the 100 best of each (video, class)
            npos += sum(1 for a, _ in g if not a["iscrowd"])
            for t, thr in enumerate(thrs):
                used = set()
                for rank, (_, r, dm) in enumerate(d):
                    # best non-crowd unmatched GT first, else any crowd GT
                    best, best_j = -1.0, None
                    for j, (a, gm) in enumerate(g):
                        if a["iscrowd"] or j in used:
                            continue
                        v = iou(dm, gm)
                        if v >= min(thr, 1 - 1e-10) and v >= best:
                            best, best_j = v, j
                    status = "fp"
                    if best_j is not None:
                        used.add(best_j)
                        status = "tp"
                    else:
                        for a, gm in g:
                            if a["iscrowd"] and iou(dm, gm) >= min(thr, 1 - 1e-10):
                                status = "ign"
                    if status != "ign":
                        per_thr[t]["scored"].append((r["score"], vid, rank, status == "tp"))
                        for md in (1, 10):
                            if rank < md:
                                scored_by_maxdet[md][t].append((r["score"], vid, rank, status == "tp"))
        if npos == 0:
            continue
        for t in range(10):
            items = sorted(per_thr[t]["scored"], key=lambda x: (-x[0], x[1], x[2]))
            tp = fp = 0
            prec, rec = [], []
            for _, _, _, hit in items:
                tp += hit
                fp += not hit
                prec.append(tp / (tp + fp))
                rec.append(tp / npos)
            total = 0.0
            for r in recall_pts:
                cands = [p for p, rc in zip(prec, rec) if rc >= r]
                total += max(cands) if cands else 0.0
            ap[t].append(total / 101)
            for md in (1, 10):
                ar[md].append(sum(hit for *_, hit in scored_by_maxdet[md][t]) / npos)
    mean = lambda xs: float(np.mean(xs)) if xs else -1.0
    all_ap = [x for t in range(10) for x in ap[t]]
    return {"AP": mean(all_ap), "AP50": mean(ap[0]), "AP75": mean(ap[5]), "AR1": mean(ar[1]), "AR10": mean(ar[10])}


def random_case(seed):
    """Small videos; detections are jittered copies of GT tracks (some with the wrong class) plus random tracks."""
    rnd = random.Random(seed)
    videos, anns, dts = [], [], []
    for vid in range(1, 6):
        h, w, n = rnd.randint(8, 14), rnd.randint(8, 14), rnd.randint(1, 4)
        videos.append((vid, h, w, n))

        def box(y0, x0, p_null):
            if rnd.random() < p_null:
                return None
            return box_mask(h, w, y0, y0 + rnd.randint(2, 5), x0, x0 + rnd.randint(2, 5))

        def track(p_null):
            y0, x0 = rnd.randint(0, h - 3), rnd.randint(0, w - 3)
            out = [box(y0, x0, p_null) for _ in range(n)]
            if all(m is None for m in out):
                out[0] = box_mask(h, w, y0, y0 + 2, x0, x0 + 2)
            return out

        def jitter(masks):
            out = []
            for m in masks:
                if m is None or rnd.random() < 0.1:
                    out.append(None if m is None or rnd.random() < 0.5 else m)
                    continue
                shifted = np.roll(m, (rnd.choice([0, 0, 0, -1, 1]), rnd.choice([0, 0, 0, -1, 1])), axis=(0, 1))
                out.append(shifted if shifted.any() else m)
            return out

        for _ in range(rnd.randint(0, 3)):
            masks, cat = track(0.2), rnd.randint(1, 3)
            anns.append((vid, cat, int(rnd.random() < 0.15), masks))
            for _ in range(rnd.choice([0, 1, 1, 2])):
                d_cat = cat if rnd.random() < 0.8 else rnd.randint(1, 3)
                dts.append(det(vid, d_cat, round(rnd.random(), 1), jitter(masks)))
        for _ in range(rnd.randint(0, 3)):
            dts.append(det(vid, rnd.randint(1, 3), round(rnd.random(), 1), track(0.1)))
    rnd.shuffle(dts)
    return make_gt(videos, anns, num_cats=3), dts


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force(seed):
    gt, dts = random_case(seed)
    ev = YTVISEval(gt, dts)
    ours, ref = ev.stats(), brute_force(gt, dts)
    for key, val in ref.items():
        assert abs(ours[key] - val) < TOL, (key, ours[key], val)
    for cat in (1, 2, 3):
        vids = sorted({a["video_id"] for a in gt["annotations"] if a["category_id"] == cat})
        ref_c = brute_force(gt, dts, cats=[cat], vids=vids) if vids else {"AP": -1.0, "AR1": -1.0}
        got = ev.per_class()[cat]
        assert abs(got["AP"] - ref_c["AP"]) < TOL and abs(got["AR1"] - ref_c["AR1"]) < TOL, cat


@pytest.mark.parametrize("seed", range(3))
def test_detection_limits_match_brute_force(seed):
    """130 detections of one (video, class) with true positives at ranks 0, ~5, ~50, ~80 and ~120: AP keeps
    the 100 best, AR1 / AR10 the best 1 / 10, so each detection limit of the protocol changes the numbers."""
    rnd = random.Random(seed)
    h = w = 24
    gt_boxes = [box_mask(h, w, 0, 3, 4 * j, 4 * j + 3) for j in range(5)]          # top rows
    gt = make_gt([(1, h, w, 2)], [(1, 1, 0, [m, m]) for m in gt_boxes], num_cats=1)
    scores = sorted((rnd.random() for _ in range(130)), reverse=True)
    tp_ranks = {0: 0, rnd.randint(3, 8): 1, rnd.randint(40, 60): 2, rnd.randint(70, 95): 3, rnd.randint(105, 125): 4}
    dts = []
    for rank, score in enumerate(scores):
        if rank in tp_ranks:
            m = gt_boxes[tp_ranks[rank]]
        else:                                                                     # false positives below them
            y0, x0 = rnd.randint(8, h - 3), rnd.randint(0, w - 3)
            m = box_mask(h, w, y0, y0 + 3, x0, x0 + 3)
        dts.append(det(1, 1, score, [m, m]))
    rnd.shuffle(dts)
    ours, ref = YTVISEval(gt, dts).stats(), brute_force(gt, dts)
    assert ref["AR1"] == pytest.approx(0.2) and ref["AR10"] == pytest.approx(0.4)
    for key, val in ref.items():
        assert abs(ours[key] - val) < TOL, (key, ours[key], val)
