"""Forward + backward time per clip of one training iteration, and where it goes, at step 0 and at a prompt step.

Model and data: the model YAML of ``--scenario`` (default synth_4-2 -> tiny), ``train.batch_size`` clips of
``train.frames_step0`` / ``frames_inc`` frames from a small synthetic dataset rendered with the scenario's
settings (64 x 64). Step 0 trains everything; step 1 of ``--method`` (default hvpl) is the step-0 model grown
with ``hvpl.continual.growth`` (via ``hvpl.engine.step_plan.build_step_model``), trainable set applied. Weights are
untrained: the timing does not depend on them. The optimizer step and data loading are NOT included.

Method (wall clock, ``time.perf_counter``; on CUDA every boundary is preceded by ``torch.cuda.synchronize``):
forward pre/post hooks on the model's modules accumulate the inclusive time of each module call during
``model(images)``; the criterion (per clip, as in the trainer) and ``loss.backward()`` are timed around the
calls. Parts, exclusive and summing to the iteration exactly:

    backbone       model.backbone
    pixel_dec      model.pixel_decoder
    frame_dec      model.frame_decoder + model.frame_classifier
    tree_scan      model.video_decoder.context_encoder (the tree-scan video context encoder)
    video_rest     model.video_decoder (minus tree_scan) + video_decoder.mask_features + model.video_classifier
    fwd_other      the rest of model.forward (normalisation/padding, reshapes, output dicts)
    losses         SetCriterion forward for every clip (matching included) + summing the terms
    backward       loss.backward() (all parts' gradients; at a prompt step the trunk has no graph)

The (step, threads) configurations run round-robin, one iteration each in turn, so that changes of the
machine's load affect all of them alike. Each part's value is the median over ``--iters`` timed iterations (after ``--warmup``); the shares are each
median over the sum of the part medians, so they add up to 100 %. ``iter_med`` is the median of the measured
iteration totals (close to, not equal to, the sum). Per clip = per iteration / batch_size.

    python bench/bench_model.py [--threads 2 1] [--iters 10] [--warmup 2] [--scenario synth_4-2]
                                [--method hvpl] [--device cpu]

Prints a table and writes ``bench/out/model.json``. Timings on a shared machine are noisy: the load average
at the start and the end is recorded; compare runs only at similar load.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hvpl.config import load_run_config
from hvpl.continual.growth import count_trainable
from hvpl.data.splits import make_scenario_split
from hvpl.data.synthetic import generate_synthetic
from hvpl.engine import batching
from hvpl.engine import step_plan
from hvpl.engine import trainer as tr
from hvpl.engine.model_file import model_file_dict
from hvpl.model.criterion import SetCriterion
from hvpl.model.hvpl import PIXEL_MEAN
from hvpl.utils.io import atomic_write_json

OUT = Path(__file__).resolve().parent / "out" / "model.json"
BENCH_VIDEOS = 40   # enough videos for a split with every class; the timing does not depend on it
METHOD_NOTE = ("wall clock; forward pre/post hooks time the model parts inside model(images); criterion (per clip) "
               "and loss.backward() timed around the calls; fwd_other = forward minus the hooked parts; "
               "configurations interleaved round-robin; part = median over iters, share = part median / sum of part medians; optimizer step and data "
               "loading excluded; per clip = per iteration / batch_size")
PARTS = ["backbone", "pixel_dec", "frame_dec", "tree_scan", "video_rest", "fwd_other", "losses", "backward"]


class StageTimer:
    """Accumulates the inclusive wall time of module calls, keyed by a name, via forward pre/post hooks."""

    def __init__(self, sync):
        self.sync = sync
        self.totals: dict[str, float] = {}
        self._start: dict[int, float] = {}
        self._handles = []

    def add(self, key: str, module: torch.nn.Module) -> None:
        def pre(mod, args):
            self.sync()
            self._start[id(mod)] = time.perf_counter()

        def post(mod, args, out):
            self.sync()
            self.totals[key] = self.totals.get(key, 0.0) + time.perf_counter() - self._start.pop(id(mod))

        self._handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def reset(self) -> None:
        self.totals = {}

    def get(self, key: str) -> float:
        return self.totals.get(key, 0.0)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def attach_timer(model, sync) -> StageTimer:
    """Hooks on the parts listed in the module docstring (keys = module names)."""
    timer = StageTimer(sync)
    vd = model.video_decoder
    for key, mod in [("backbone", model.backbone), ("pixel_decoder", model.pixel_decoder),
                     ("frame_decoder", model.frame_decoder), ("frame_classifier", model.frame_classifier),
                     ("video_decoder", vd), ("context_encoder", vd.context_encoder),
                     ("video_mask_features", vd.mask_features), ("video_classifier", model.video_classifier)]:
        timer.add(key, mod)
    return timer


def time_iteration(model, criterion, images, targets, timer: StageTimer, sync, seed: int) -> dict:
    """One forward + criterion + backward; returns the parts (seconds) of PARTS plus ``iter`` and ``cpu``."""
    timer.reset()
    model.zero_grad(set_to_none=True)
    sync()
    cpu0, t0 = time.process_time(), time.perf_counter()
    outputs = model(images)
    sync()
    t1 = time.perf_counter()
    loss = 0.0
    per_clip = batching.split_outputs(outputs, len(targets), images.shape[1])  # as the trainer does
    for j, clip in enumerate(targets):
        gen = torch.Generator(device=images.device).manual_seed(seed + j)
        for value in criterion(per_clip[j], [clip], gen).values():
            loss = loss + value / len(targets)
    sync()
    t2 = time.perf_counter()
    loss.backward()
    sync()
    t3, cpu3 = time.perf_counter(), time.process_time()
    g = timer.get
    parts = {"backbone": g("backbone"), "pixel_dec": g("pixel_decoder"),
             "frame_dec": g("frame_decoder") + g("frame_classifier"), "tree_scan": g("context_encoder"),
             "video_rest": g("video_decoder") - g("context_encoder") + g("video_mask_features")
             + g("video_classifier")}
    parts["fwd_other"] = (t1 - t0) - sum(parts.values())
    parts.update(losses=t2 - t1, backward=t3 - t2, iter=t3 - t0, cpu=cpu3 - cpu0)
    return parts


def fixed_batch(dataset, batch_size: int, device) -> tuple[torch.Tensor, list[dict]]:
    """The first ``batch_size`` clips (same inputs every iteration): images (B, T, 3, H, W), target dicts."""
    clips = [dataset[i] for i in range(batch_size)]
    images = batching.pad_clips(clips, torch.tensor(PIXEL_MEAN)).to(device)
    targets = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in c.items() if k != "images"}
               for c in clips]
    return images, targets


def build_steps(cfg: dict, split: Path) -> list[tuple]:
    """[(step, plan, model, dataset)] for step 0 and step 1 (the step-0 model grown)."""
    tr.seed_everything(0)
    plan0, data0 = step_plan.plan_step(cfg, 0, split / "train_step0.json", None, seed=0)
    model0 = step_plan.build_step_model(cfg, plan0, None)
    prev = dict(model_file_dict(cfg, plan0, model0), _path="<bench step 0>")
    plan1, data1 = step_plan.plan_step(cfg, 1, split / "train_step1.json", prev, seed=0)
    model1 = step_plan.build_step_model(cfg, plan1, prev)
    return [(0, plan0, model0, data0), (1, plan1, model1, data1)]


class Config:
    """One (step, threads) measurement: the model, criterion, fixed batch and hooks of a step."""

    def __init__(self, cfg, step, plan, model, dataset, device, threads):
        self.step, self.threads, self.model = step, threads, model
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        model.to(device).train()
        self.criterion = SetCriterion(cfg["model"]["loss"], sum(plan.classes_per_task)).to(device)
        self.images, self.targets = fixed_batch(dataset, int(cfg["scenario"]["train"]["batch_size"]), device)
        self.runs: list[dict] = []

    def run_once(self, it: int, keep: bool) -> None:
        torch.set_num_threads(self.threads)
        timer = attach_timer(self.model, self.sync)
        try:
            parts = time_iteration(self.model, self.criterion, self.images, self.targets, timer, self.sync, it)
        finally:
            timer.remove()
        if keep:
            self.runs.append(parts)

    def summary(self) -> dict:
        runs = self.runs
        med = {k: statistics.median(r[k] for r in runs) for k in PARTS + ["iter", "cpu"]}
        total = sum(med[k] for k in PARTS)
        b = self.images.shape[0]
        trainable, params = count_trainable(self.model)
        return {"step": self.step, "threads": self.threads, "batch_size": b, "frames": self.images.shape[1],
                "input_hw": list(self.images.shape[-2:]), "trainable": trainable, "params": params,
                "ms_per_iter": {k: 1e3 * v for k, v in med.items()}, "sum_parts_ms": 1e3 * total,
                "ms_per_clip": 1e3 * total / b, "iter_med_ms_per_clip": 1e3 * med["iter"] / b,
                "iter_min_ms": 1e3 * min(r["iter"] for r in runs),
                "iter_max_ms": 1e3 * max(r["iter"] for r in runs),
                "share": {k: med[k] / total for k in PARTS}}


def run_interleaved(configs: list[Config], iters: int, warmup: int) -> list[dict]:
    """Round-robin: every iteration runs each configuration once, so load changes hit all of them alike."""
    for it in range(warmup + iters):
        for c in configs:
            c.run_once(it, keep=it >= warmup)
    return [c.summary() for c in configs]


def print_table(rows: list[dict]) -> None:
    head = f"{'step':>4}{'thr':>4}{'ms/clip':>9}{'iter_med':>9}  " + "".join(f"{p:>11}" for p in PARTS)
    print("forward+backward per clip (ms, median; iter_med = median iteration total / batch) and share of parts")
    print(head)
    for r in rows:
        print(f"{r['step']:>4}{r['threads']:>4}{r['ms_per_clip']:>9.1f}{r['iter_med_ms_per_clip']:>9.1f}  "
              + "".join(f"{100 * r['share'][p]:>10.1f}%" for p in PARTS))
    print("\nper-iteration medians (ms; batch of clips)")
    print(f"{'step':>4}{'thr':>4}" + "".join(f"{p:>11}" for p in PARTS) + f"{'trainable':>11}")
    for r in rows:
        print(f"{r['step']:>4}{r['threads']:>4}" + "".join(f"{r['ms_per_iter'][p]:>11.1f}" for p in PARTS)
              + f"{r['trainable']:>11,}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="synth_4-2")
    ap.add_argument("--method", default="hvpl", help="a prompt method for step 1 (default hvpl)")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    load_start = os.getloadavg()
    print(f"load average at start (1/5/15 min): {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f} "
          f"on {os.cpu_count()} cores")
    device = torch.device(args.device)
    cfg = load_run_config(args.scenario, args.method)
    sc = cfg["scenario"]
    with tempfile.TemporaryDirectory() as tmp:
        spec = dict(sc["synthetic"], num_videos=BENCH_VIDEOS)
        generate_synthetic(Path(tmp) / "data", num_classes=sc["num_classes"], **spec)
        make_scenario_split(sc, Path(tmp) / "data", Path(tmp) / "split", seed=0)
        steps = build_steps(cfg, Path(tmp) / "split")
        configs = [Config(cfg, step, plan, model, dataset, device, threads)
                   for threads in args.threads for step, plan, model, dataset in steps]
        rows = run_interleaved(configs, args.iters, args.warmup)
    load_end = os.getloadavg()
    print_table(rows)
    print(f"load average at end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")
    atomic_write_json(OUT, {"scenario": args.scenario, "method": args.method, "model": cfg["model"]["name"],
                            "device": args.device, "iters": args.iters, "warmup": args.warmup,
                            "loadavg_start": list(load_start), "loadavg_end": list(load_end),
                            "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
                            "torch": torch.__version__, "parts": PARTS,
                            "method_note": METHOD_NOTE, "rows": rows})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
