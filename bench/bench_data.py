"""Data-pipeline throughput on this machine for a synthetic scenario (default synth_4-2).

Measures: dataset generation (``hvpl synth``), the scenario split, training clips/s of ``ClipDataset`` over
``train_step0.json`` with the scenario's step-0 clip length, and test videos/s of ``VideoDataset``.
Prints a table and writes ``bench/out/data.json``.

    python bench/bench_data.py [--scenario synth_4-2] [--clips 400] [--threads 1]
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from hvpl.config import load_scenario
from hvpl.data.clip_dataset import ClipDataset, VideoDataset
from hvpl.data.splits import make_scenario_split
from hvpl.data.synthetic import generate_synthetic
from hvpl.utils.io import atomic_write_json

OUT = Path(__file__).resolve().parent / "out" / "data.json"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run(scenario_name: str, clips: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    sc = load_scenario(scenario_name)
    spec = sc["synthetic"]
    tr = sc["train"]
    with tempfile.TemporaryDirectory() as tmp:
        root, split = Path(tmp) / "synth", Path(tmp) / "split"
        _, gen_s = timed(lambda: generate_synthetic(root, num_classes=sc["num_classes"], **spec))
        _, split_s = timed(lambda: make_scenario_split(sc, root, split, seed=None))
        ds, init_s = timed(lambda: ClipDataset(split / "train_step0.json", tr["frames_step0"], tr["frame_range"],
                                               sc["input"], seed=0))
        _, clip_s = timed(lambda: [ds[i] for i in range(clips)])
        vd = VideoDataset(split / "test_step0.json", sc["input"])
        n_vid = min(len(vd), clips)
        _, vid_s = timed(lambda: [vd[i] for i in range(n_vid)])
    frames = spec["num_videos"] * spec["num_frames"]
    return {"scenario": scenario_name, "threads": threads, "python": platform.python_version(),
            "torch": torch.__version__,
            "dataset": {k: spec[k] for k in ("num_videos", "num_frames", "height", "width", "max_instances")},
            "generate_s": gen_s, "generate_frames_per_s": frames / gen_s, "split_s": split_s,
            "clip_dataset_init_s": init_s, "clip_frames": tr["frames_step0"], "clips": clips,
            "clips_per_s": clips / clip_s, "videos": n_vid, "test_videos_per_s": n_vid / vid_s}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenario", default="synth_4-2")
    p.add_argument("--clips", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    res = run(args.scenario, args.clips, args.threads)
    d = res["dataset"]
    rows = [("generate (hvpl synth)", f"{res['generate_s']:.2f} s",
             f"{d['num_videos']} videos x {d['num_frames']} frames {d['height']}x{d['width']}"),
            ("split (hvpl split)", f"{res['split_s']:.2f} s", ""),
            ("ClipDataset init", f"{res['clip_dataset_init_s']:.2f} s", "validation + frame-file check"),
            ("training clips", f"{res['clips_per_s']:.1f} clips/s", f"T={res['clip_frames']}, {res['clips']} clips"),
            ("test videos", f"{res['test_videos_per_s']:.1f} videos/s", f"{res['videos']} whole videos")]
    print(f"data pipeline, scenario {args.scenario}, {args.threads} torch thread(s)")
    for name, value, note in rows:
        print(f"  {name:<24} {value:>16}   {note}")
    atomic_write_json(args.out, res)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
