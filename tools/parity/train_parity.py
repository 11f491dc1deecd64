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
import gzip
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
    ap.add_argument("--authors", type=Path)
    ap.add_argument("--fixture", type=Path)
    ap.add_argument("--report", type=Path)
    ap.add_argument("--groups", type=Path, help="train_parity_groups_authors.py's JSON: compare trainable sets "
                                                "and optimizer groups instead")
    args = ap.parse_args(argv)
    if args.groups:
        table = groups_table(json.loads(args.groups.read_text()))
        diff = groups_differences(table)
        print(json.dumps(diff, indent=1))
        if args.fixture:
            args.fixture.mkdir(parents=True, exist_ok=True)
            with gzip.open(args.fixture / "authors_groups.json.gz", "wt") as f:
                f.write(json.dumps(groups_fixture(table)) + "\n")
        return 0
    res = torch.load(args.authors, weights_only=False)
    report = compare(res, run_ours(res))
    text = json.dumps(report, indent=1)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    if args.fixture:
        write_fixture(res, args.fixture)
    return 0



# ------------------------------------------------------------------------ trainable set and optimizer groups
SCENARIO = "ytvis2019_20-2"


def ours_groups(step: int, method: str = "hvpl") -> dict:
    """{our parameter name: {"trainable", "lr_mult", "weight_decay"}} of the step-``step`` paper model."""
    from hvpl.config import classes_per_step, load_run_config
    from hvpl.continual.growth import set_trainable
    from hvpl.engine.optim import param_groups
    from hvpl.model.hvpl import HVPLModel, without_weight_files

    cfg = load_run_config(SCENARIO, method)
    classes = classes_per_step(cfg["scenario"])[:step + 1]
    model = HVPLModel(without_weight_files(cfg["model"]), method, cfg["scenario"]["prompts_per_task"], classes)
    set_trainable(model, method, step)
    train = cfg["scenario"]["train"]
    out = {n: {"trainable": bool(p.requires_grad)} for n, p in model.named_parameters()}
    for g in param_groups(model, train):
        for n in g["names"]:
            out[n].update(lr_mult=g["lr"] / float(train["lr"]), weight_decay=g["weight_decay"])
    return out


def authors_to_ours(name: str) -> str | None:
    """An authors' parameter name -> ours: hvpl's converter, then the reference harness's gap rules (dev time
    only; ``PARITY_HARNESS`` = ../shared/parity), ``pos[l]`` rows collapsed to the stacked ``pos``."""
    import os
    import re

    from hvpl.engine.init_weights import vita_to_hvpl_name

    sys.path.insert(0, os.environ.get("PARITY_HARNESS", str(Path(__file__).resolve().parents[2] / ".." / "shared"
                                                               / "parity")))
    import mapping

    gap = mapping.gap_name(name)
    return re.sub(r"\[\d+\]$", "", gap[0]) if gap else vita_to_hvpl_name(name)


def groups_table(authors: dict, steps=(0, 1, 2)) -> dict:
    """Per step: every authors' parameter with its counterpart's (trainable, lr_mult, weight_decay) on both sides."""
    table = {}
    for step in steps:
        ours = ours_groups(step)
        rows = []
        for name, a in authors[str(step)]["params"].items():
            o_name = authors_to_ours(name)
            o = ours.get(o_name)
            rows.append({"authors": name, "ours": o_name if o is not None else None,
                         "authors_attrs": a, "ours_attrs": o})
        mapped = {r["ours"] for r in rows}
        unmatched_ours = [n for n, v in ours.items() if n not in mapped and v["trainable"]]
        table[str(step)] = {"rows": rows, "ours_trainable_without_authors_counterpart": unmatched_ours}
    return table


def groups_fixture(table: dict) -> dict:
    """Compact fixture: per step, {our name: [trainable, lr_mult, weight_decay]} as the AUTHORS set their
    counterpart(s) (several authors' tensors may map to one of ours: the per-layer positional prompts), plus the
    authors' names that have no counterpart."""
    out = {}
    for step, t in table.items():
        attrs, unmapped = {}, []
        for r in t["rows"]:
            a = r["authors_attrs"]
            if r["ours"] is None:
                unmapped.append(r["authors"])
                continue
            value = [a["trainable"], a.get("lr_mult"), a.get("weight_decay")]
            if attrs.setdefault(r["ours"], value) != value:
                raise ValueError(f"{r['ours']}: its authors' counterparts disagree")
        out[step] = {"ours": attrs, "authors_unmapped": unmapped}
    return out


def groups_differences(table: dict) -> dict:
    """Rows whose attributes differ, per step: {step: [(authors name, ours name, authors attrs, ours attrs)]}."""
    out = {}
    for step, t in table.items():
        diff = []
        for r in t["rows"]:
            a, o = r["authors_attrs"], r["ours_attrs"]
            if o is None or a.get("trainable") != o.get("trainable") or (a.get("trainable") and (
                    abs(a["lr_mult"] - o["lr_mult"]) > 1e-12 or a["weight_decay"] != o["weight_decay"])):
                diff.append((r["authors"], r["ours"], a, o))
        out[step] = {"differ": diff, "ours_only_trainable": t["ours_trainable_without_authors_counterpart"]}
    return out


if __name__ == "__main__":
    sys.exit(main())
