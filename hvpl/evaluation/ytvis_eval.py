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

from hvpl.data.masks import FrameAreas, frame_areas

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
    """One GT annotation or detection: per-frame RLEs (None where absent), per-frame areas, mean area."""

    id: int
    frames: list            # length T = video length; pycocotools RLE dict or None
    areas: np.ndarray       # (T,) int64 mask areas, 0 where absent
    avg_area: float
    score: float = 1.0
    iscrowd: int = 0


def to_rle(segm, height: int, width: int):
    """One frame's segmentation (polygon list, uncompressed or compressed RLE, None) as a pycocotools RLE.
    An empty polygon list counts as a missing frame, as in the reference (``if a:``)."""
    if segm is None or (isinstance(segm, list) and not segm):
        return None
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    if isinstance(segm.get("counts"), list):
        return mask_utils.frPyObjects(segm, height, width)
    return segm


def to_rle_and_area(segm, height: int, width: int, entry: int = 0, frame: int = 0) -> tuple:
    """(RLE or None, area) of a frame that is not a compressed RLE string of the video's size."""
    rle = to_rle(segm, height, width)
    return rle, (0 if rle is None else int(mask_utils.area(rle)))


def mean_area(areas) -> float:
    """Mean of the truthy per-frame areas (0 / None skipped), 0 when there is none (reference ``avg_area``)."""
    kept = [a for a in areas if a]
    return float(np.array(kept).mean()) if kept else 0


def _frames(entry: dict, i: int, fa: FrameAreas) -> list:
    frames = list(entry["segmentations"])
    for t, rle in fa.converted.get(i, {}).items():
        frames[t] = rle
    return frames


def build_tracks(gt: dict, results: list, max_det: int, gt_areas: FrameAreas | None = None,
                 res_areas: FrameAreas | None = None):
    """Group GT annotations and detections by (video_id, category_id).

    Returns ``(gts, dts)``: dicts (video_id, category_id) -> list[Track]. GT keeps file order; detections are
    ordered by descending score with a stable sort and truncated to ``max_det``; detection ids are their
    1-based position in ``results`` (as ``loadRes`` assigns them). GT ``avg_area`` comes from the ``areas``
    field (computed from the masks when it is absent), detection ``avg_area`` from the masks. ``gt_areas`` /
    ``res_areas``: :func:`frame_areas` of the two lists when already computed.
    """
    videos = {v["id"]: v for v in gt["videos"]}
    gt_areas = gt_areas or frame_areas(gt["annotations"], videos, to_rle_and_area)
    res_areas = res_areas or frame_areas(results, videos, to_rle_and_area)
    gts: dict = {}
    for i, ann in enumerate(gt["annotations"]):
        areas = gt_areas.of(i)
        given = ann.get("areas")
        avg = mean_area(given) if given is not None else _mean_positive(areas)
        track = Track(ann["id"], _frames(ann, i, gt_areas), areas, avg, iscrowd=int(bool(ann.get("iscrowd", 0))))
        gts.setdefault((ann["video_id"], ann["category_id"]), []).append(track)
    dts: dict = {}
    for i, res in enumerate(results):
        areas = res_areas.of(i)
        track = Track(i + 1, _frames(res, i, res_areas), areas, _mean_positive(areas), score=float(res["score"]))
        dts.setdefault((res["video_id"], res["category_id"]), []).append(track)
    for key, tracks in dts.items():
        order = np.argsort([-t.score for t in tracks], kind="mergesort")
        dts[key] = [tracks[i] for i in order][:max_det]
    return gts, dts


def _mean_positive(areas: np.ndarray) -> float:
    """:func:`mean_area` of integer areas (T,): exact integer sums, so the same value as the reference's."""
    kept = areas[areas > 0]
    return float(kept.mean()) if kept.size else 0


def track_iou_table(dts: list, gts: list) -> np.ndarray:
    """(D, G) video IoU: summed per-frame intersections over summed per-frame unions (frames with no mask skipped).

    The union of a pair is the sum of both tracks' areas minus the intersections; pycocotools measures only
    the intersections of frames where both tracks have a mask. Sums of integer pixel counts are exact, so the
    result is the reference's (which adds merged-mask areas frame by frame) to the last bit.
    """
    inter = np.zeros((len(dts), len(gts)), dtype=np.int64)
    if not dts or not gts:
        return inter.astype(np.float64)
    for i, d in enumerate(dts):
        for j, g in enumerate(gts):
            inter[i, j] = sum(int(mask_utils.area(mask_utils.merge([df, gf], True)))
                              for df, gf in zip(d.frames, g.frames) if df is not None and gf is not None)
    union = (np.array([d.areas.sum() for d in dts])[:, None] + np.array([g.areas.sum() for g in gts])[None, :]
             - inter)
    return np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)


def _ignore_flags(gts: list, area_rng) -> tuple:
    lo, hi = area_rng
    return tuple(1 if (g.iscrowd or g.avg_area < lo or g.avg_area > hi) else 0 for g in gts)


def greedy_match(gts: list, dts: list, ious: np.ndarray, g_ign: tuple, iou_thrs: np.ndarray):
    """Greedy COCO matching of one (video, category) given the GT ignore flags (reference ``evaluateVid``).

    Returns (gt_ignore (G,) in matching order, dt_matches (T, D) matched GT id or 0, dt_ignore (T, D) float).
    """
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
        rows = ious.tolist()
        for ti, thr in enumerate(iou_thrs):
            for di, d in enumerate(dts):
                best, m = min([thr, 1 - 1e-10]), -1
                row = rows[di]
                for gi in range(num_g):
                    if gtm[ti, gi] > 0 and not iscrowd[gi]:
                        continue
                    if m > -1 and gt_ig[m] == 0 and gt_ig[gi] == 1:
                        break
                    if row[gi] < best:
                        continue
                    best, m = row[gi], gi
                if m == -1:
                    continue
                dt_ig[ti, di] = gt_ig[m]
                dtm[ti, di] = gts[m].id
                gtm[ti, m] = d.id
    return gt_ig, dtm, dt_ig


def match_pair(gts: list, dts: list, ious: np.ndarray, area_rngs, iou_thrs: np.ndarray) -> list:
    """Greedy COCO matching of one (video, category) for each area range (reference ``evaluateVid``, maxDet = all).

    Returns per area range None when there is neither GT nor detection, else a dict with ``dt_matches`` (T, D)
    (matched GT id, 0 = none), ``dt_ignore`` (T, D) bool, ``gt_ignore`` (G,) and ``dt_scores`` (D,). The matching
    depends on the range only through the GT ignore flags: ranges with the same flags share one.
    """
    if not gts and not dts:
        return [None] * len(area_rngs)
    matched: dict = {}
    d_area = np.array([d.avg_area for d in dts])
    scores = [d.score for d in dts]
    out = []
    for lo, hi in area_rngs:
        g_ign = _ignore_flags(gts, (lo, hi))
        if g_ign not in matched:
            matched[g_ign] = greedy_match(gts, dts, ious, g_ign, iou_thrs)
        gt_ig, dtm, dt_ig = matched[g_ign]
        out_of_rng = (d_area < lo) | (d_area > hi)
        dt_ig = np.logical_or(dt_ig, np.logical_and(dtm == 0, out_of_rng[None, :]))
        out.append({"dt_matches": dtm, "dt_ignore": dt_ig, "gt_ignore": gt_ig, "dt_scores": scores})
    return out


def _precision_recall(dtm: np.ndarray, dt_ig: np.ndarray, npig: int, rec_thrs: np.ndarray):
    """Precision (T, R) and recall (T,) of detections (T, D) already in descending score order.

    Cumulative TP/FP counts are float64 as in the reference (``np.float``: float32 would round the recall
    under numpy 1 and shift the sampled recall points); the right-to-left running maximum of precision and the
    left-sided search of the recall thresholds are the reference's loops, vectorised (both exact).
    """
    tps = np.logical_and(dtm, np.logical_not(dt_ig))
    fps = np.logical_and(np.logical_not(dtm), np.logical_not(dt_ig))
    tp_sum = np.cumsum(tps, axis=1).astype(np.float64)
    fp_sum = np.cumsum(fps, axis=1).astype(np.float64)
    num_t, nd = tp_sum.shape
    precision, recall = np.zeros((num_t, len(rec_thrs))), np.zeros(num_t)
    if nd == 0:
        return precision, recall
    rc = tp_sum / npig
    pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
    recall[:] = rc[:, -1]
    for t in range(num_t):
        pi = np.searchsorted(rc[t], rec_thrs, side="left")
        found = pi < nd
        precision[t, found] = pr[t, pi[found]]
    return precision, recall


def accumulate(evals: list, max_dets, rec_thrs: np.ndarray) -> list:
    """Per max_det: precision (T, R) and recall (T,) of one (category, area range) from its per-video matches.

    ``evals`` are the non-None :func:`match_pair` results in ascending video-id order. Each video contributes
    its ``max_det`` best detections; all are then ranked by score (stable). An entry is None when there is no
    non-ignored GT (the reference leaves -1 there).
    """
    gt_ig = np.concatenate([e["gt_ignore"] for e in evals])
    npig = np.count_nonzero(gt_ig == 0)
    if npig == 0:
        return [None] * len(max_dets)
    scores = np.concatenate([e["dt_scores"] for e in evals])
    rank = np.concatenate([np.arange(len(e["dt_scores"])) for e in evals])   # rank within its video
    dtm = np.concatenate([e["dt_matches"] for e in evals], axis=1)
    dt_ig = np.concatenate([e["dt_ignore"] for e in evals], axis=1)
    out, done = [], {}
    for max_det in max_dets:
        kept = int(np.count_nonzero(rank < max_det))
        if kept not in done:   # the same detections as a smaller max_det: the same numbers
            sel = np.flatnonzero(rank < max_det)
            inds = sel[np.argsort(-scores[sel], kind="mergesort")]
            done[kept] = _precision_recall(dtm[:, inds], dt_ig[:, inds], npig, rec_thrs)
        out.append(done[kept])
    return out


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

    ``gt``: a validated YouTube-VIS dict; ``results``: a validated list of result dicts (see evaluate.py);
    ``areas``: their :func:`frame_areas` (GT, results) when the validation already measured them.
    """

    def __init__(self, gt: dict, results: list, params: EvalParams | None = None, areas: tuple | None = None):
        self.params = params or EvalParams()
        self.video_ids = sorted({v["id"] for v in gt["videos"]})
        self.cat_ids = sorted({c["id"] for c in gt["categories"]})
        self._cat_videos: dict = {}
        for ann in gt["annotations"]:
            self._cat_videos.setdefault(ann["category_id"], set()).add(ann["video_id"])
        self._gts, self._dts = build_tracks(gt, results, max(self.params.max_dets), *(areas or ()))
        self._matches: dict = {}

    def evaluate(self) -> "YTVISEval":
        """Compute every pair's IoU table and its matches for each area range (idempotent)."""
        if self._matches:
            return self
        p = self.params
        keys = sorted(set(self._gts) | set(self._dts))
        for key in progress(keys, total=len(keys), desc="evaluate"):
            gts, dts = self._gts.get(key, []), self._dts.get(key, [])
            self._matches[key] = match_pair(gts, dts, track_iou_table(dts, gts), p.area_rngs, p.iou_thrs)
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
                for m, out in enumerate(accumulate(evals, p.max_dets, p.rec_thrs)):
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
