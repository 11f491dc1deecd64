"""Training parity, our side: hvpl's SetCriterion on the predictions the authors' criteria scored.

    PYTHONPATH=. .venv/bin/python tools/parity/train_parity.py --authors F.pt [--fixture tests/data/train_parity]

``F.pt`` comes from ``tools/parity/train_parity_authors.py`` (run in the parity venv with the authors' code). Both
sides get the same float64 prediction leaves and targets and the same fixed point sets (every uniform point
draw returns the seeded set of its size, ``fixed_points``; importance sampling still picks among them per mask).
Compared: assignment of every frame level and every (clip layer, frame layer) video level; every loss term (the
authors' video term of clip layer d pools the L frame layers, ours keeps one term per (d, l): theirs = the sum of
ours over l); the gradient of every prediction tensor. ``--fixture`` writes the inputs and the authors' numbers,
float32-rounded, for ``tests/test_train_parity.py`` (no third-party code at test time).
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from pathlib import Path

import torch


@contextmanager
def fixed_point_draws(points: dict):
    """Every ``rand_points((.., m, 2))`` / ``rand_points((m, 2))`` returns the stored set of m points."""
    import hvpl.model.matcher as matcher
    import hvpl.model.point_sampling as ps

    def rand_points(shape, generator=None, device=None, dtype=torch.float32):
        *lead, m, two = shape
        base = points[m].to(dtype)
        return base.expand(*lead, m, two).clone().to(device or "cpu")

    saved = ps.rand_points, matcher.rand_points
    ps.rand_points = matcher.rand_points = rand_points
    try:
        yield
    finally:
        ps.rand_points, matcher.rand_points = saved


def leaves(res: dict) -> dict:
    """Fresh float64 leaves with the authors' prediction values."""
    return {k: v.detach().clone().double().requires_grad_(True) for k, v in res["predictions"].items()}


def ours_outputs(res: dict, p: dict) -> dict:
    """The authors' predictions in hvpl's training output layout (docs/DESIGN.md "Model")."""
    s = res["sizes"]
    fr = [{"pred_logits": p[f"frame{i}.pred_logits"], "pred_masks": p[f"frame{i}.pred_masks"]}
          for i in range(s["frame_levels"])]
    vid = [{"pred_logits": p[f"video{d}.pred_logits"][l], "pred_masks": p[f"video{d}.pred_masks"][l]}
           for d in range(s["D"]) for l in range(s["L"])]
    return {"frame": {**fr[-1], "aux_outputs": fr[:-1]},
            "video": {**vid[-1], "aux_outputs": vid[:-1], "frame_layers": s["L"],
                      "pred_fq_embed": p["pred_fq_embed"].transpose(0, 1),
                      "pred_cq_embed": p["pred_cq_embed"].transpose(0, 1)}}


def ours_targets(res: dict) -> list[dict]:
    masks = res["masks"]                                            # (B, N, T, H, W)
    return [{"labels": res["labels"][b], "masks": masks[b].bool(),
             "present": masks[b].flatten(2).sum(-1) > 0} for b in range(masks.shape[0])]


def loss_cfg(res: dict) -> dict:
    s, w = res["sizes"], res["weights"]
    return {"class_weight": w["class"], "mask_weight": w["mask"], "dice_weight": w["dice"], "sim_weight": w["sim"],
            "no_object_weight": w["no_object"], "num_points": s["points"], "oversample_ratio": s["oversample"],
            "importance_sample_ratio": s["importance"]}


def run_ours(res: dict) -> dict:
    """hvpl's criterion on the authors' inputs -> losses, assignments (as their matcher call order), grads."""
    from hvpl.model.criterion import SetCriterion

    s = res["sizes"]
    crit = SetCriterion(loss_cfg(res), s["K"])
    p = leaves(res)
    calls = []
    orig = crit.matcher.match_levels

    def match_levels(*a, **k):
        out = orig(*a, **k)
        calls.append(out)
        return out

    crit.matcher.match_levels = match_levels
    with fixed_point_draws(res["points"]):
        losses = crit(ours_outputs(res, p), ours_targets(res))
    sum(losses.values()).backward()
    return {"losses": {k: float(v) for k, v in losses.items()}, "matches": calls,
            "grads": {k: v.grad for k, v in p.items()}}


def authors_key(name: str, s: dict) -> tuple[str, int]:
    """Our loss key -> (the authors' key, weight of ours in it). Video (d, l) levels flatten d-major."""
    level, term = name.split("_loss_")
    base, _, aux = term.partition("_aux")
    if level == "frame":
        return ("loss_" + base) + ("" if not aux else f"_{aux}"), 1
    if base == "sim":
        return "loss_vita_sim", 1
    k = s["D"] * s["L"] - 1 if not aux else int(aux)
    d = k // s["L"]
    return "loss_vita_" + base + ("" if d == s["D"] - 1 else f"_{d}"), 1


def compare(res: dict, ours: dict) -> dict:
    s = res["sizes"]
    pooled: dict[str, float] = {}
    for name, value in ours["losses"].items():
        key, _ = authors_key(name, s)
        pooled[key] = pooled.get(key, 0.0) + value
    loss_rows = {k: {"authors": v, "ours": pooled.get(k), "abs": abs(v - pooled.get(k, float("nan"))),
                     "rel": abs(v - pooled.get(k, float("nan"))) / max(abs(v), 1e-12)}
                 for k, v in res["losses"].items()}
    grad_rows = {}
    for k, g in res["grads"].items():
        d = (g.double() - ours["grads"][k].double()).abs().max().item()
        grad_rows[k] = {"abs": d, "rel": d / max(g.abs().max().item(), 1e-30)}
    # assignments: ours [frame L x B*T, video D*L x B]; theirs per matcher call (final first, then aux)
    frame_ours, video_ours = ours["matches"]
    frame_theirs = [res["frame_matches"][0]] + res["frame_matches"][1:]
    frame_ours_authors_order = [frame_ours[0]] + frame_ours[1:]
    same_frame = all([(i.tolist(), j.tolist()) for i, j in lv] == [tuple(x) for x in th]
                     for lv, th in zip(frame_ours_authors_order, frame_theirs))
    L, D = s["L"], s["D"]
    video_levels = video_ours[1:] + video_ours[:1]          # ours: [final, aux 0 ..] -> (d, l) d-major order
    same_video = True
    for d in range(D):
        call = res["video_matches"][0 if d == D - 1 else d + 1]   # theirs: final call first, then aux d
        for l in range(L):
            mine = video_levels[d * L + l]
            theirs = call[l * s["B"]:(l + 1) * s["B"]]
            same_video &= [(i.tolist(), j.tolist()) for i, j in mine] == [tuple(x) for x in theirs]
    return {"losses": loss_rows, "grads": grad_rows, "assignments_equal": {"frame": same_frame, "video": same_video},
            "max_loss_rel": max(r["rel"] for r in loss_rows.values()),
            "max_grad_rel": max(r["rel"] for r in grad_rows.values())}


def write_fixture(res: dict, out: Path) -> None:
    """Inputs (float32-exact predictions), the authors' losses, assignments and gradients (float32)."""
    out.mkdir(parents=True, exist_ok=True)
    fx = {"sizes": res["sizes"], "weights": res["weights"], "labels": res["labels"],
          "masks": res["masks"].bool(), "points": {m: v.float() for m, v in res["points"].items()},
          "predictions": {k: v.float() for k, v in res["predictions"].items()},
          "grads": {k: v.float() for k, v in res["grads"].items()}, "losses": res["losses"],
          "frame_matches": res["frame_matches"], "video_matches": res["video_matches"]}
    torch.save(fx, out / "authors_criterion.pt")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--authors", type=Path, required=True)
    ap.add_argument("--fixture", type=Path)
    ap.add_argument("--report", type=Path)
    args = ap.parse_args(argv)
    res = torch.load(args.authors, weights_only=False)
    report = compare(res, run_ours(res))
    text = json.dumps(report, indent=1)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    if args.fixture:
        write_fixture(res, args.fixture)
    return 0


if __name__ == "__main__":
    sys.exit(main())
