"""Training parity, our side: one training forward/backward of hvpl's whole model on the authors' clip.

    PARITY_HARNESS=../shared/parity PYTHONPATH=. .venv/bin/python tools/parity/train_parity_model.py \
        --task 1 --weights $PARITY_WORK/authors_step1.pth --authors /tmp/model_step1.pt

Our model with the authors' seeded weights (the reference harness's ``ours_side.load_parity_model``: hvpl's
converter, then its gap rules; float64 with the pixel decoder as a float32 island), in training mode at the step's
group, the tree-scan context encoder replaced by the identity and the same fixed point sets as
``train_parity_model_authors.py``; hvpl's SetCriterion; backward of the summed losses. Prints every loss term
(authors' keys, ours pooled over frame layers) and the gradient of every trainable tensor against theirs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = Path(os.environ.get("PARITY_HARNESS", HERE.parents[1] / ".." / "shared" / "parity"))
sys.path.insert(0, str(HARNESS))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from torch import nn  # noqa: E402


def run(task: int, weights: Path, authors: dict) -> dict:
    from ours_side import load_parity_model, run_cfg
    from train_parity import fixed_point_draws

    from hvpl.model.criterion import SetCriterion

    model, _ = load_parity_model(task, weights)
    model.video_decoder.context_encoder = nn.Identity()
    model.train()
    cfg = run_cfg()
    clip = authors["clip"]
    targets = [{"labels": clip["labels"], "masks": clip["masks"],
                "present": clip["masks"].flatten(2).any(-1)}]
    crit = SetCriterion(cfg["model"]["loss"], model.num_classes)
    with fixed_point_draws(authors["points"]):
        out = model(clip["images"][None])
        losses = crit(out, targets)
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    return {"losses": {k: float(v) for k, v in losses.items()}, "grads": grads,
            "trainable": [n for n, p in model.named_parameters() if p.requires_grad]}


def pooled_losses(ours: dict, frame_levels: int, clip_layers: int, frame_layers: int) -> dict:
    """Our terms under the authors' keys (video: the L frame-layer terms of a clip layer summed)."""
    from train_parity import authors_key

    sizes = {"D": clip_layers, "L": frame_layers}
    out: dict[str, float] = {}
    for name, value in ours.items():
        key, _ = authors_key(name, sizes)
        out[key] = out.get(key, 0.0) + value
    return out


def compare(task: int, authors: dict, ours: dict) -> dict:
    from train_parity import authors_to_ours

    pooled = pooled_losses(ours["losses"], 10, 3, 3)
    losses = {k: {"authors": v, "ours": pooled.get(k), "rel": abs(v - pooled.get(k, float("nan"))) / abs(v)}
              for k, v in authors["losses"].items()}
    grads = {}
    for name, g in authors["grads"].items():
        o = authors_to_ours(name)
        m = re.match(r"^(.*prompt_embed)\.(\d+)\.(\d+)\.weight$", name)
        if o in ours["grads"]:
            og = ours["grads"][o]
            if m:                                    # per-layer positional prompts: row l of our stacked (L, P, C)
                og = og[int(m.group(3))]
            if og.shape != g.shape and og.numel() == g.numel():
                og = og.reshape(g.shape) if "conv" not in o else og.transpose(-1, -2).reshape(g.shape)
            d = float((g - og.to(g.dtype)).abs().max())
            grads[name] = {"ours": o, "abs": d, "rel": d / max(float(g.abs().max()), 1e-30)}
        else:
            grads[name] = {"ours": o, "abs": None, "rel": None}
    worst = sorted((v["rel"], k) for k, v in grads.items() if v["rel"] is not None)[-10:]
    return {"task": task, "losses": losses, "max_loss_rel": max(v["rel"] for v in losses.values()),
            "grads_compared": sum(v["rel"] is not None for v in grads.values()),
            "grads_missing_ours": [k for k, v in grads.items() if v["rel"] is None],
            "max_grad_rel": worst[-1][0] if worst else None, "worst_grads": worst,
            "authors_trainable_without_grad": authors["trainable_without_grad"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", type=int, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--authors", type=Path, required=True)
    ap.add_argument("--report", type=Path)
    args = ap.parse_args(argv)
    authors = torch.load(args.authors, weights_only=False)
    rep = compare(args.task, authors, run(args.task, args.weights, authors))
    text = json.dumps(rep, indent=1)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
