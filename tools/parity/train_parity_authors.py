"""Training parity, authors' side: their frame and video criteria (matchers included) on seeded predictions.

Runs the AUTHORS' code only (never this project's ``hvpl``: both packages have that name), from the tree that
``/work/shared/parity/setup_sources.sh`` assembles in $PARITY_WORK (JiahuaDong/HVPL + VITA's Mask2Former files +
detectron2's Python sources):

    PARITY_WORK=/tmp/parity_work_t MIRROR=... bash ../shared/parity/setup_sources.sh
    PARITY_WORK=/tmp/parity_work_t /tmp/parity_venv_t/bin/python tools/parity/train_parity_authors.py --out F.pt

What it runs, as ``HVPL.train_model`` does (HVPL_model.py:318-346): ``SetCriterion`` (HVPL's
mask2former/modeling/criterion.py) with VITA's ``HungarianMatcher`` over 10 frame-decoder levels, then
``VitaSetCriterion`` with ``VitaHungarianMatcher`` over 3 clip-decoder layers x L = 3 frame layers, fed the last L
frame matchings (``fg_indices``) for the similarity loss; losses multiplied by their ``weight_dict``; backward of
their sum. Options as the 20-2 script (FOCAL True = softmax CE, weights 2/5/5, sim 0.5, no-object 0.1).

Random points are taken out on both sides the same way: every uniform draw of shape (n, m, 2) returns one fixed,
seeded set of m points for each of the n rows (``fixed_points``). Matching then uses one fixed point set, and the
loss points are still chosen by importance sampling, from the same fixed candidates for every mask; since that
choice depends only on the mask, batching order cannot change it. Predictions are float64 leaves; the output
holds inputs, points, losses, assignments and the gradient of every prediction tensor.
"""
from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path

import torch

WORK = Path(os.environ.get("PARITY_WORK", "/tmp/parity_work"))
# torchvision / cv2 stand-ins of the reference harness (names only; nothing here calls them)
STUBS = Path(os.environ.get("PARITY_STUBS", Path(__file__).resolve().parents[2] / ".." / "shared" / "parity" / "stubs"))
for p in (STUBS, WORK / "authors", WORK / "src" / "detectron2_repo"):
    sys.path.insert(0, str(p))
for _pkg in ("mask2former", "hvpl"):          # skip their __init__ files (data pipeline imports)
    _m = types.ModuleType(_pkg)
    _m.__path__ = [str(WORK / "authors" / _pkg)]
    sys.modules[_pkg] = _m

SIZES = {"B": 1, "T": 3, "Qf": 6, "Qv": 5, "K": 4, "C": 8, "h": 6, "w": 7, "stride": 4, "N": 3,
         "frame_levels": 10, "L": 3, "D": 3, "points": 16, "oversample": 3.0, "importance": 0.75}
WEIGHTS = {"class": 2.0, "mask": 5.0, "dice": 5.0, "sim": 0.5, "no_object": 0.1}
POINT_SEED = 1000


def fixed_points(n: int, m: int, dtype=torch.float64) -> torch.Tensor:
    """(n, m, 2): the same seeded m points for each of n rows (the stand-in for every torch.rand point draw)."""
    base = torch.rand(m, 2, generator=torch.Generator().manual_seed(POINT_SEED + m), dtype=torch.float64)
    return base.to(dtype).expand(n, m, 2).clone()


class _FixedRandTorch:
    """A module-level ``torch`` whose ``rand`` returns ``fixed_points`` (everything else is torch)."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def rand(*size, device=None, dtype=None, **kw):
        size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list, torch.Size)) else size
        n, m, two = size
        assert two == 2, size
        return fixed_points(n, m, dtype or torch.get_default_dtype()).to(device or "cpu")


def make_inputs(seed: int) -> dict:
    """Seeded predictions (float64 leaves) and targets, in the authors' layouts."""
    s, g = SIZES, torch.Generator().manual_seed(seed)
    B, T, K, N = s["B"], s["T"], s["K"], s["N"]
    H, W = s["h"] * s["stride"], s["w"] * s["stride"]

    def leaf(*shape, scale=1.0):   # float32-representable values: the committed fixture stores them exactly
        return (scale * torch.randn(*shape, generator=g)).double().requires_grad_(True)

    # targets: N instances per clip, random rectangles; instance 2 absent from frame 1
    masks = torch.zeros(B, N, T, H, W)
    for b in range(B):
        for n in range(N):
            for t in range(T):
                if n == 2 and t == 1:
                    continue
                y0, x0 = (int(v) for v in torch.randint(0, H // 2, (1,), generator=g).tolist() +
                          torch.randint(0, W // 2, (1,), generator=g).tolist())
                hh, ww = (int(v) for v in torch.randint(4, H // 2, (2,), generator=g).tolist())
                masks[b, n, t, y0:y0 + hh, x0:x0 + ww] = 1.0
    labels = torch.randint(0, K, (B, N), generator=g)
    frame = [{"pred_logits": leaf(B * T, s["Qf"], K + 1), "pred_masks": leaf(B * T, s["Qf"], s["h"], s["w"], scale=3.0)}
             for _ in range(s["frame_levels"])]
    video = [{"pred_logits": leaf(s["L"], B, s["Qv"], K + 1),
              "pred_masks": leaf(s["L"], B, s["Qv"], T, s["h"], s["w"], scale=3.0)} for _ in range(s["D"])]
    embeds = {"pred_fq_embed": leaf(s["L"], B, T, s["Qf"], s["C"], scale=0.5),
              "pred_cq_embed": leaf(s["L"], B, s["Qv"], s["C"], scale=0.5)}
    return {"sizes": s, "weights": WEIGHTS, "labels": labels, "masks": masks, "frame": frame, "video": video,
            "embeds": embeds}


def authors_targets(inp: dict):
    """HVPL.prepare_targets (HVPL_model.py:349-405) on the clip targets: frame targets per frame (present
    instances), clip targets with ids (N, T), -1 where absent."""
    frame_targets, clip_targets = [], []
    T = inp["sizes"]["T"]
    for b in range(inp["labels"].shape[0]):
        masks = inp["masks"][b]                                         # (N, T, H, W)
        present = masks.flatten(2).sum(-1) > 0                          # (N, T)
        ids = torch.arange(masks.shape[0])[:, None].expand(-1, T).clone()
        ids[~present] = -1
        valid_clip = present.any(1)
        clip_targets.append({"labels": inp["labels"][b][valid_clip], "ids": ids[valid_clip],
                             "masks": masks[valid_clip].double(), "video_len": T, "frame_idx": list(range(T))})
        for t in range(T):
            keep = ids[valid_clip][:, t] != -1
            frame_targets.append({"labels": inp["labels"][b][valid_clip][keep], "ids": ids[valid_clip][keep, t],
                                  "masks": masks[valid_clip][keep, t].double()})
    return frame_targets, clip_targets


def build_criteria():
    import torchvision   # the stub: mask2former/utils/misc.py asks it whether it is tracing
    torchvision._is_tracing = lambda: False
    import detectron2.projects.point_rend.point_features as pf
    import mask2former.modeling.matcher as fm
    import hvpl.modeling.vita_matcher as vm
    from mask2former.modeling.criterion import SetCriterion
    from hvpl.modeling.vita_criterion import VitaSetCriterion

    for mod in (pf, fm, vm):
        mod.torch = _FixedRandTorch()
    s, w = SIZES, WEIGHTS
    # HVPL_model.py:151-233 (from_config), with the sizes above
    weight_dict = {"loss_ce": w["class"], "loss_mask": w["mask"], "loss_dice": w["dice"]}
    for i in range(s["frame_levels"] - 1):
        weight_dict.update({f"{k}_{i}": v for k, v in list(weight_dict.items())[:3]})
    crit = SetCriterion(s["K"], matcher=fm.HungarianMatcher(w["class"], w["mask"], w["dice"], s["points"]),
                        weight_dict=weight_dict, eos_coef=w["no_object"], losses=["labels", "masks"],
                        num_points=s["points"], oversample_ratio=s["oversample"],
                        importance_sample_ratio=s["importance"], vita_last_layer_num=s["L"], focal=True,
                        focal_gamma=1.0, focal_alpha=5.0)
    vwd = {"loss_vita_ce": w["class"], "loss_vita_mask": w["mask"], "loss_vita_dice": w["dice"],
           "loss_vita_sim": w["sim"]}
    for i in range(s["D"] - 1):
        vwd.update({f"{k}_{i}": v for k, v in list(vwd.items())[:4]})
    vcrit = VitaSetCriterion(s["K"], matcher=vm.VitaHungarianMatcher(w["class"], w["mask"], w["dice"], s["points"]),
                             weight_dict=vwd, eos_coef=w["no_object"],
                             losses=["vita_labels", "vita_masks", "fg_sim"], num_points=s["points"],
                             oversample_ratio=s["oversample"], importance_sample_ratio=s["importance"],
                             sim_use_clip=True, focal=True, focal_gamma=1.0, focal_alpha=5.0)
    return crit, vcrit


def run(seed: int) -> dict:
    inp = make_inputs(seed)
    crit, vcrit = build_criteria()           # float32 class weights: their frame CE casts logits to float32
    vcrit.double()                           # their video CE takes the logits' dtype (float64 here)
    torch.set_default_dtype(torch.float64)   # their point draws follow the default dtype (float64 predictions)
    frame_targets, clip_targets = authors_targets(inp)
    fr = inp["frame"]
    outputs = {**fr[-1], "aux_outputs": fr[:-1]}
    matched = {}
    orig_fm, orig_vm = crit.matcher.forward, vcrit.matcher.forward
    crit.matcher.forward = lambda o, t: matched.setdefault("frame", []).append(orig_fm(o, t)) or matched["frame"][-1]
    vcrit.matcher.forward = lambda o, t: matched.setdefault("video", []).append(orig_vm(o, t)) or matched["video"][-1]
    losses, fg_indices = crit(outputs, frame_targets)
    losses = {k: v * crit.weight_dict[k] for k, v in losses.items() if k in crit.weight_dict}
    vid = inp["video"]
    vita_out = {**vid[-1], **inp["embeds"], "aux_outputs": vid[:-1]}
    vlosses = vcrit(vita_out, clip_targets, frame_targets, fg_indices)
    vlosses = {k: v * vcrit.weight_dict[k] for k, v in vlosses.items() if k in vcrit.weight_dict}
    losses.update(vlosses)
    sum(losses.values()).backward()
    leaves = {f"frame{i}.{k}": v for i, lv in enumerate(fr) for k, v in lv.items()}
    leaves.update({f"video{d}.{k}": v for d, lv in enumerate(vid) for k, v in lv.items()})
    leaves.update(inp["embeds"])
    # matcher calls in order: frame final, then aux 0..8; video final, then aux 0..1
    return {"sizes": inp["sizes"], "weights": inp["weights"], "seed": seed,
            "labels": inp["labels"], "masks": inp["masks"],
            "predictions": {k: v.detach().clone() for k, v in leaves.items()},
            "grads": {k: v.grad.detach().clone() for k, v in leaves.items()},
            "losses": {k: float(v) for k, v in losses.items()},
            "frame_matches": [[(i.tolist(), j.tolist()) for i, j in m] for m in matched["frame"]],
            "video_matches": [[(i.tolist(), j.tolist()) for i, j in m] for m in matched["video"]],
            "points": {m: fixed_points(1, m)[0] for m in {SIZES["points"], int(SIZES["points"] * SIZES["oversample"]),
                                                          SIZES["points"] - int(SIZES["importance"] * SIZES["points"])}},
            "point_seed": POINT_SEED}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    res = run(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(res, args.out)
    print(f"{args.out}: {len(res['losses'])} loss terms, {len(res['grads'])} gradients")
    for k, v in sorted(res["losses"].items()):
        print(f"  {k} {v:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
