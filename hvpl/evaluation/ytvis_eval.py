"""YouTube-VIS video AP/AR, numerically equal to the reference ``ytvoseval.py`` (youtubevos cocoapi fork).

The work is split so that every breakdown (all classes, one class, one task, old/new) reuses one set of
per-(video, category) results:

1. :func:`build_tracks` turns GT annotations / detections into :class:`Track` objects grouped by
   (video_id, category_id) (detections sorted by score, stable, truncated to ``max(max_dets)``).
2. :meth:`YTVISEval.evaluate` computes the (D, G) track-IoU table of each pair once and runs the greedy COCO
   matching for each area range (same loop order and tie rules as the reference).
3. :meth:`YTVISEval.stats` accumulates the pairs of any (video set, category set) into the precision
   (T, R, K, A, M) / recall (T, K, A, M) arrays with the reference arithmetic and summarises the 12 stats.

Protocol: protocol.md Section 4 (the project's specification); what is implemented: docs/evaluation.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from hvpl.utils.logging import progress

STAT_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")
AREA_LABELS = ("all", "small", "medium", "large")


@dataclass(frozen=True)
class EvalParams:
    """Evaluation parameters of the reference (``Params(iouType='segm')`` of ytvoseval.py)."""

    iou_thrs: np.ndarray = field(default_factory=lambda: np.linspace(
        .5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True))
    rec_thrs: np.ndarray = field(default_factory=lambda: np.linspace(
        .0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True))
    max_dets: tuple = (1, 10, 100)
    area_rngs: tuple = ((0 ** 2, 1e5 ** 2), (0 ** 2, 128 ** 2), (128 ** 2, 256 ** 2), (256 ** 2, 1e5 ** 2))


@dataclass
class Track:
    """One GT annotation or detection: per-frame RLEs (None where absent) and its mean area."""

    id: int
    frames: list            # length = video length; dict RLE or None
    avg_area: float
    score: float = 1.0
    iscrowd: int = 0


def to_rle(segm, height: int, width: int):
    """Decode one frame's segmentation (polygon list, uncompressed or compressed RLE, None) to a compressed RLE.
    An empty polygon list counts as a missing frame, as in the reference (``if a:``)."""
    if segm is None or (isinstance(segm, list) and not segm):
        return None
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm.get("counts"), list):
        return mask_utils.frPyObjects(segm, height, width)
    counts = segm["counts"]
    return {"size": list(segm["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def mean_area(areas) -> float:
    """Mean of the truthy per-frame areas (0 / None skipped), 0 when there is none (reference ``avg_area``)."""
    kept = [a for a in areas if a]
    return float(np.array(kept).mean()) if kept else 0


def build_tracks(gt: dict, results: list, max_det: int):
    """Group GT annotations and detections by (video_id, category_id).

    Returns ``(gts, dts)``: dicts (video_id, category_id) -> list[Track]. GT keeps file order; detections are
    ordered by descending score with a stable sort and truncated to ``max_det``; detection ids are their
    1-based position in ``results`` (as ``loadRes`` assigns them). GT ``avg_area`` comes from the ``areas``
    field (computed from the masks when it is absent), detection ``avg_area`` from the masks.
    """
    videos = {v["id"]: v for v in gt["videos"]}
    gts: dict = {}
    for ann in gt["annotations"]:
        v = videos[ann["video_id"]]
        frames = [to_rle(s, v["height"], v["width"]) for s in ann["segmentations"]]
        areas = ann.get("areas")
        if areas is None:
            areas = [int(mask_utils.area(f)) if f is not None else None for f in frames]
        track = Track(ann["id"], frames, mean_area(areas), iscrowd=int(bool(ann.get("iscrowd", 0))))
        gts.setdefault((ann["video_id"], ann["category_id"]), []).append(track)
    dts: dict = {}
    for idx, res in enumerate(results):
        v = videos[res["video_id"]]
        frames = [to_rle(s, v["height"], v["width"]) for s in res["segmentations"]]
        areas = [int(mask_utils.area(f)) if f is not None else None for f in frames]
        track = Track(idx + 1, frames, mean_area(areas), score=float(res["score"]))
        dts.setdefault((res["video_id"], res["category_id"]), []).append(track)
    for key, tracks in dts.items():
        order = np.argsort([-t.score for t in tracks], kind="mergesort")
        dts[key] = [tracks[i] for i in order][:max_det]
    return gts, dts


def track_iou_table(dts: list, gts: list) -> np.ndarray:
    """(D, G) video IoU: summed per-frame intersections over summed per-frame unions (frames with no mask skipped)."""
    ious = np.zeros((len(dts), len(gts)))
    d_areas = [[int(mask_utils.area(f)) if f is not None else 0 for f in d.frames] for d in dts]
    g_areas = [[int(mask_utils.area(f)) if f is not None else 0 for f in g.frames] for g in gts]
    for i, d in enumerate(dts):
        for j, g in enumerate(gts):
            inter = union = 0.0
            for t, (df, gf) in enumerate(zip(d.frames, g.frames)):
                if df is not None and gf is not None:
                    both = int(mask_utils.area(mask_utils.merge([df, gf], True)))
                    inter += both
                    union += d_areas[i][t] + g_areas[j][t] - both
                elif gf is not None:
                    union += g_areas[j][t]
                elif df is not None:
                    union += d_areas[i][t]
            ious[i, j] = inter / union if union > 0 else 0.0
    return ious


def match_pair(gts: list, dts: list, ious: np.ndarray, area_rng, iou_thrs: np.ndarray):
    """Greedy COCO matching of one (video, category) for one area range (reference ``evaluateVid``, maxDet = all).

    Returns None when there is neither GT nor detection, else a dict with ``dt_matches`` (T, D) (matched GT id,
    0 = none), ``dt_ignore`` (T, D) bool, ``gt_ignore`` (G,) and ``dt_scores`` (D,).
    """
    if not gts and not dts:
        return None
    lo, hi = area_rng
    g_ign = [1 if (g.iscrowd or g.avg_area < lo or g.avg_area > hi) else 0 for g in gts]
    g_order = np.argsort(g_ign, kind="mergesort")
    gts = [gts[i] for i in g_order]
    gt_ig = np.array([g_ign[i] for i in g_order])
    iscrowd = [g.iscrowd for g in gts]
    ious = ious[:, g_order] if len(ious) > 0 else ious
    num_t, num_g, num_d = len(iou_thrs), len(gts), len(dts)
    gtm = np.zeros((num_t, num_g))
    dtm = np.zeros((num_t, num_d))
    dt_ig = np.zeros((num_t, num_d))
    if len(ious) != 0:
        for ti, thr in enumerate(iou_thrs):
            for di, d in enumerate(dts):
                best, m = min([thr, 1 - 1e-10]), -1
                for gi in range(num_g):
                    if gtm[ti, gi] > 0 and not iscrowd[gi]:
                        continue
                    if m > -1 and gt_ig[m] == 0 and gt_ig[gi] == 1:
                        break
                    if ious[di, gi] < best:
                        continue
                    best, m = ious[di, gi], gi
                if m == -1:
                    continue
                dt_ig[ti, di] = gt_ig[m]
                dtm[ti, di] = gts[m].id
                gtm[ti, m] = d.id
    out_of_rng = np.array([d.avg_area < lo or d.avg_area > hi for d in dts]).reshape((1, num_d))
    dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, np.repeat(out_of_rng, num_t, 0)))
    return {"dt_matches": dtm, "dt_ignore": dt_ig, "gt_ignore": gt_ig, "dt_scores": [d.score for d in dts]}


def accumulate_one(evals: list, max_det: int, rec_thrs: np.ndarray):
    """Precision (T, R) and recall (T,) of one (category, area range, maxDet) from its per-video matches.

    ``evals`` are the non-None :func:`match_pair` results in ascending video-id order. Returns None when there
    is no non-ignored GT (the reference leaves -1 there).
    """
    scores = np.concatenate([e["dt_scores"][0:max_det] for e in evals])
    inds = np.argsort(-scores, kind="mergesort")
    dtm = np.concatenate([e["dt_matches"][:, 0:max_det] for e in evals], axis=1)[:, inds]
    dt_ig = np.concatenate([e["dt_ignore"][:, 0:max_det] for e in evals], axis=1)[:, inds]
    gt_ig = np.concatenate([e["gt_ignore"] for e in evals])
    npig = np.count_nonzero(gt_ig == 0)
    if npig == 0:
        return None
    tps = np.logical_and(dtm, np.logical_not(dt_ig))
    fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
    tp_sum = np.cumsum(tps, axis=1).astype(dtype=np.float32)
    fp_sum = np.cumsum(fps, axis=1).astype(dtype=np.float32)
    num_t, num_r = dtm.shape[0], len(rec_thrs)
    precision, recall = np.zeros((num_t, num_r)), np.zeros(num_t)
    for t, (tp, fp) in enumerate(zip(tp_sum, fp_sum)):
        nd = len(tp)
        rc = tp / npig
        pr = (tp / (fp + tp + np.spacing(1))).tolist()
        recall[t] = rc[-1] if nd else 0
        for i in range(nd - 1, 0, -1):
            if pr[i] > pr[i - 1]:
                pr[i - 1] = pr[i]
        q = [0.0] * num_r
        for ri, pi in enumerate(np.searchsorted(rc, rec_thrs, side="left")):
            if pi >= nd:
                break
            q[ri] = pr[pi]
        precision[t] = np.array(q)
    return precision, recall


def _mean_defined(s: np.ndarray) -> float:
    kept = s[s > -1]
    return -1.0 if len(kept) == 0 else float(np.mean(kept))


def summarize(precision: np.ndarray, recall: np.ndarray, params: EvalParams) -> dict:
    """The 12 stats (reference ``summarize``) from precision (T, R, K, A, M) and recall (T, K, A, M)."""
    def one(ap: bool, iou_thr=None, area="all", max_det=params.max_dets[2]):
        a = AREA_LABELS.index(area)
        m = list(params.max_dets).index(max_det)
        s = precision if ap else recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == params.iou_thrs)[0]]
        s = s[:, :, :, a, m] if ap else s[:, :, a, m]
        return _mean_defined(s)

    md = params.max_dets
    values = [one(True), one(True, .5), one(True, .75), one(True, area="small"), one(True, area="medium"),
              one(True, area="large"), one(False, max_det=md[0]), one(False, max_det=md[1]), one(False),
              one(False, area="small"), one(False, area="medium"), one(False, area="large")]
    return dict(zip(STAT_NAMES, values))


class YTVISEval:
    """Evaluate YouTube-VIS results once per (video, category, area range); derive any breakdown from that.

    ``gt``: a validated YouTube-VIS dict; ``results``: a validated list of result dicts (see evaluate.py).
    """

    def __init__(self, gt: dict, results: list, params: EvalParams | None = None):
        self.params = params or EvalParams()
        self.video_ids = sorted({v["id"] for v in gt["videos"]})
        self.cat_ids = sorted({c["id"] for c in gt["categories"]})
        self._cat_videos: dict = {}
        for ann in gt["annotations"]:
            self._cat_videos.setdefault(ann["category_id"], set()).add(ann["video_id"])
        self._gts, self._dts = build_tracks(gt, results, max(self.params.max_dets))
        self._matches: dict = {}

    def evaluate(self) -> "YTVISEval":
        """Compute every pair's IoU table and its matches for each area range (idempotent)."""
        if self._matches:
            return self
        p = self.params
        keys = sorted(set(self._gts) | set(self._dts))
        for key in progress(keys, total=len(keys), desc="evaluate"):
            gts, dts = self._gts.get(key, []), self._dts.get(key, [])
            ious = track_iou_table(dts, gts)
            if not dts:
                ious = np.zeros((0, len(gts)))
            self._matches[key] = [match_pair(gts, dts, ious, rng, p.iou_thrs) for rng in p.area_rngs]
        return self

    def videos_with(self, cat_ids) -> list:
        """Sorted ids of the GT videos holding at least one annotation (crowd included) of ``cat_ids``."""
        found: set = set()
        for c in cat_ids:
            found |= self._cat_videos.get(c, set())
        return sorted(found)

    def arrays(self, video_ids=None, cat_ids=None):
        """precision (T, R, K, A, M) and recall (T, K, A, M) over a video set and category set (-1 = undefined)."""
        self.evaluate()
        p = self.params
        vids = self.video_ids if video_ids is None else sorted(set(video_ids))
        cats = self.cat_ids if cat_ids is None else sorted(set(cat_ids))
        num_t, num_r, num_a, num_m = len(p.iou_thrs), len(p.rec_thrs), len(p.area_rngs), len(p.max_dets)
        precision = -np.ones((num_t, num_r, len(cats), num_a, num_m))
        recall = -np.ones((num_t, len(cats), num_a, num_m))
        for k, cat in enumerate(cats):
            for a in range(num_a):
                evals = [self._matches[(v, cat)][a] for v in vids if (v, cat) in self._matches]
                evals = [e for e in evals if e is not None]
                if not evals:
                    continue
                for m, max_det in enumerate(p.max_dets):
                    out = accumulate_one(evals, max_det, p.rec_thrs)
                    if out is not None:
                        precision[:, :, k, a, m], recall[:, k, a, m] = out
        return precision, recall

    def stats(self, video_ids=None, cat_ids=None) -> dict:
        """The 12 stats over a video set (default: all GT videos) and category set (default: all GT categories)."""
        return summarize(*self.arrays(video_ids, cat_ids), self.params)

    def subset_stats(self, cat_ids) -> dict:
        """Paper protocol: videos containing any of ``cat_ids``, GT and categories restricted to ``cat_ids``."""
        cats = [c for c in cat_ids if c in set(self.cat_ids)]
        vids = self.videos_with(cats)
        if not vids:
            return dict.fromkeys(STAT_NAMES, -1.0)
        return self.stats(vids, cats)

    def per_class(self) -> dict:
        """{category id: {"AP", "AR1"}} with the paper protocol (videos containing the class, categories=[c])."""
        out = {}
        for cat in self.cat_ids:
            s = self.subset_stats([cat])
            out[cat] = {"AP": s["AP"], "AR1": s["AR1"]}
        return out
