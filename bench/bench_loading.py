"""Paper-size data loading: the cost of one training clip, and how much of it data workers hide.

Synthetic videos at YouTube-VIS's frame size (720x1280 by default) are read through ``ClipDataset`` with a
paper scenario's input settings (the frames' transform is also timed alone, uint8 as the dataset does it vs
float) (ytvis2019_20-2: 5-frame clips, multi-scale resize + crop, flip) and batched
by ``hvpl.engine.loader.iterate_batches`` as ``hvpl train`` does. A training iteration on a GPU barely needs the
CPU, so it is stood in for by sleeping ``--compute-ms`` per iteration: with 0 workers the main thread reads every
batch before it computes (wall = read + compute); with workers the batches are read ahead and the main thread
waits only if they fall behind. Prints a table and writes ``bench/out/loading.json``.

    python bench/bench_loading.py [--scenario ytvis2019_20-2] [--height 720] [--width 1280] [--iters 12]
                                  [--compute-ms 150] [--workers 0 1 2]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hvpl.config import load_scenario
from hvpl.data.clip_dataset import ClipDataset, load_frames
from hvpl.data.transforms import apply_to_images, sample_clip_transform
from hvpl.data.synthetic import generate_synthetic
from hvpl.engine.distributed import DistInfo
from hvpl.engine.loader import iterate_batches, read_batch
from hvpl.model.hvpl import PIXEL_MEAN
from hvpl.utils.io import atomic_write_json

OUT = Path(__file__).resolve().parent / "out" / "loading.json"
PAD_VALUE = torch.tensor(PIXEL_MEAN)


def _dataset(tmp: Path, sc: dict, height: int, width: int, videos: int) -> ClipDataset:
    train = sc["train"]
    frames = max(train["frames_step0"], 8)
    generate_synthetic(tmp, num_classes=8, num_videos=videos, num_frames=frames, height=height, width=width,
                       max_instances=3, seed=0)
    return ClipDataset(tmp / "train.json", train["frames_step0"], train["frame_range"], sc["input"], seed=0,
                       image_root=tmp / "train" / "JPEGImages")


def _simulated_training(ds, batch: int, iters: int, compute_s: float, workers: int) -> dict:
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    waits = []
    start = time.perf_counter()
    batches = iterate_batches(ds, batch, info, 0, iters, workers=workers, pad_value=PAD_VALUE)
    for _ in range(iters):
        tic = time.perf_counter()
        next(batches)
        waits.append(time.perf_counter() - tic)
        time.sleep(compute_s)
    batches.close()
    total = time.perf_counter() - start
    # the first batch waits for the workers to start: reported apart, left out of the steady state
    return {"workers": workers, "first_wait_ms": waits[0] * 1e3, "wait_ms": statistics.median(waits[1:]) * 1e3,
            "iteration_ms": (total - waits[0]) / (iters - 1) * 1e3}


def _resize_ms(ds: ClipDataset, height: int, width: int, reps: int) -> dict:
    """Median ms to transform one clip's frames (a training transform of the scenario), uint8 vs float."""
    frames = load_frames(ds.root, ds.videos[0], list(range(ds.num_frames)), ds.json_path)
    rng = np.random.default_rng(0)
    times = {"uint8": [], "float": []}
    for _ in range(reps):
        tf = sample_clip_transform(rng, height, width, ds.input_cfg, train=True)
        for kind, x in (("uint8", frames), ("float", frames.float())):
            tic = time.perf_counter()
            apply_to_images(x, tf)
            times[kind].append(time.perf_counter() - tic)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def run(scenario: str, height: int, width: int, iters: int, compute_ms: float, workers: list[int]) -> dict:
    torch.set_num_threads(1)
    sc = load_scenario(scenario)
    batch = int(sc["train"]["batch_size"])
    with tempfile.TemporaryDirectory() as tmp:
        ds = _dataset(Path(tmp), sc, height, width, videos=6)
        info = DistInfo(0, 1, 0, torch.device("cpu"))
        read_batch(ds, 0, batch, info, PAD_VALUE)
        clip_s = []
        for i in range(iters * batch):
            tic = time.perf_counter()
            ds[i]
            clip_s.append(time.perf_counter() - tic)
        resize = _resize_ms(ds, height, width, reps=iters)
        rows = [_simulated_training(ds, batch, iters, compute_ms / 1e3, w) for w in workers]
    return {"scenario": scenario, "frame_size": [height, width], "clip_frames": sc["train"]["frames_step0"],
            "batch_size": batch, "clip_ms": statistics.median(clip_s) * 1e3, "resize_ms": resize,
            "compute_ms": compute_ms,
            "iters": iters, "rows": rows, "machine": platform.processor() or platform.machine(),
            "torch": torch.__version__}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="ytvis2019_20-2")
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--compute-ms", type=float, default=150.0, help="stand-in for a GPU iteration (sleep)")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    res = run(args.scenario, args.height, args.width, args.iters, args.compute_ms, args.workers)
    print(f"{args.scenario} clips ({res['clip_frames']} frames) from {args.height}x{args.width} frames: "
          f"{res['clip_ms']:.1f} ms per clip on the main thread (1 torch thread), batch {res['batch_size']}")
    print(f"  of which the frames' transform: {res['resize_ms']['uint8']:.1f} ms resized as uint8 "
          f"({res['resize_ms']['float']:.1f} ms as float)")
    print(f"simulated training, {args.compute_ms:.0f} ms of compute per iteration, {args.iters} iterations")
    print(f"{'workers':>8}{'ms / iteration':>16}{'main-thread wait':>18}{'first batch':>13}")
    for r in res["rows"]:
        print(f"{r['workers']:>8}{r['iteration_ms']:>16.1f}{r['wait_ms']:>15.1f} ms{r['first_wait_ms']:>10.0f} ms")
    atomic_write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
