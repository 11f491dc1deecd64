"""Training parity, authors' side: one training forward/backward of their whole HVPL on a seeded clip.

    PARITY_WORK=/tmp/parity_work_t /tmp/parity_venv_t/bin/python tools/parity/train_parity_model_authors.py \
        --task 1 --weights $PARITY_WORK/authors_step1.pth --out /tmp/model_step1.pt

Their model as the reference harness loads it (``../shared/parity/authors_side.load_model``: seeded weights in their
naming, float64 with the pixel decoder as a float32 island), switched to training mode, runs ``HVPL.train_model``
(HVPL_model.py:304-346) on one clip of T = 5 frames with targets, and the backward of the summed weighted losses.
Taken out on both sides in the same way: random point draws (every draw returns one seeded point set per size,
as in train_parity_authors.py) and the tree-scan context encoder (identity: its training grid differs by design,
known difference 3; its layers are compared on a shared grid by the forward-parity harness). The frame criterion's
class weights stay float32 as in their float32 model (its CE casts logits to float32).
Saves images, targets, losses and the gradient of every trainable parameter, by their name.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = Path(os.environ.get("PARITY_HARNESS", HERE.parents[1] / ".." / "shared" / "parity"))
sys.path.insert(0, str(HARNESS))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402
from authors_side import load_model  # noqa: E402  (their code on sys.path, stubs)
from train_parity_authors import _FixedRandTorch, fixed_points  # noqa: E402

FRAMES, SIZE, INSTANCES, SEED = 5, (64, 96), 3, 11


def make_clip(task: int, classes: list[int], seed: int) -> dict:
    """Seeded frames (T, 3, H, W) 0..255 and N instances (rectangles; instance 2 absent from frame 1) of the
    step's own classes (contiguous indices, as their dataset mapper gives them)."""
    g = torch.Generator().manual_seed(seed)
    H, W = SIZE
    images = torch.randint(0, 256, (FRAMES, 3, H, W), generator=g).double()
    first = sum(classes[:task])
    labels = first + torch.randint(0, classes[task], (INSTANCES,), generator=g)
    masks = torch.zeros(INSTANCES, FRAMES, H, W, dtype=torch.bool)
    for n in range(INSTANCES):
        for t in range(FRAMES):
            if n == 2 and t == 1:
                continue
            y0 = int(torch.randint(0, H // 2, (1,), generator=g))
            x0 = int(torch.randint(0, W // 2, (1,), generator=g))
            masks[n, t, y0:y0 + 8 + int(torch.randint(0, H // 2, (1,), generator=g)),
                  x0:x0 + 8 + int(torch.randint(0, W // 2, (1,), generator=g))] = True
    return {"images": images, "labels": labels, "masks": masks}


def batched_input(clip: dict) -> list[dict]:
    """Their dataset mapper's output for one clip: per frame an Instances with gt_classes, gt_ids, gt_masks."""
    from detectron2.structures import BitMasks, Instances

    per_frame = []
    for t in range(FRAMES):
        inst = Instances(tuple(clip["images"].shape[-2:]))
        present = clip["masks"][:, t].flatten(1).any(1)
        inst.gt_classes = clip["labels"].clone()
        inst.gt_ids = torch.where(present, torch.arange(INSTANCES), torch.full((INSTANCES,), -1))
        inst.gt_masks = BitMasks(clip["masks"][:, t])
        per_frame.append(inst)
    return [{"image": list(clip["images"]), "instances": per_frame, "video_len": FRAMES,
             "frame_idx": list(range(FRAMES))}]


def run(task: int, weights: Path) -> dict:
    import detectron2.projects.point_rend.point_features as pf
    import mask2former.modeling.matcher as fm
    import hvpl.modeling.vita_matcher as vm

    import torchvision   # the stub: mask2former/utils/misc.py asks it whether it is tracing
    torchvision._is_tracing = lambda: False
    # the deformable-attention CUDA op has no CPU backward: its PyTorch reference core (autograd) instead
    from mask2former.modeling.pixel_decoder.ops.functions import ms_deform_attn_func as msda
    msda.MSDeformAttnFunction.apply = staticmethod(
        lambda value, shapes, start, loc, weights, step: msda.ms_deform_attn_core_pytorch(value, shapes, loc, weights))
    cfg, model = load_model(task, weights)
    for mod in (pf, fm, vm):
        mod.torch = _FixedRandTorch()
    model.criterion.float()                                         # float32 class weights (see docstring)
    model.vita_module.encode_frame_query_mamba = lambda q, m: q     # context encoder out on both sides
    model.train()
    torch.set_default_dtype(torch.float64)                          # point draws in the predictions' dtype
    classes = [cfg.CONT.BASE_CLS] + [cfg.CONT.INC_CLS] * task
    clip = make_clip(task, classes, SEED)
    losses = model(batched_input(clip))
    sum(losses.values()).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    s = cfg.MODEL.MASK_FORMER
    sizes = {m: fixed_points(1, m)[0] for m in {s.TRAIN_NUM_POINTS, int(s.TRAIN_NUM_POINTS * s.OVERSAMPLE_RATIO),
                                               s.TRAIN_NUM_POINTS - int(s.IMPORTANCE_SAMPLE_RATIO * s.TRAIN_NUM_POINTS)}}
    return {"task": task, "clip": clip, "losses": {k: float(v) for k, v in losses.items()}, "grads": grads,
            "trainable_without_grad": no_grad, "points": sizes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", type=int, required=True)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    res = run(args.task, args.weights)
    torch.save(res, args.out)
    print(f"{args.out}: {len(res['losses'])} loss terms, {len(res['grads'])} gradients, "
          f"{len(res['trainable_without_grad'])} trainable without gradient")
    return 0


if __name__ == "__main__":
    sys.exit(main())
