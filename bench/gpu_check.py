"""GPU check: run every device-specific path end to end, then time training iterations, in one command.

Meant for a machine with a GPU (``--device cuda``): step 0 and an OGC prompt step trained with bf16 autocast,
the OGC memory, inference and evaluation on the device, inference agreement with the CPU, a ``torchrun`` run
(NCCL, two processes on two GPUs; with one GPU only the launch, said so in the row), and ``bench_iteration``
timings with peak memory (``--timing-model paper_r50 --sizes 360`` for the paper-size step). With ``--device cpu`` the same flow runs on CPU (gloo, two
processes): a check of the script itself. Everything is on a small synthetic split in a temporary folder.
Prints a table and writes ``bench/out/gpu_check.json``; exits non-zero if a check fails.

    python bench/gpu_check.py [--device cuda] [--iters 20] [--timing-model paper_r50] [--sizes 360]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_iteration  # noqa: E402

from hvpl.config import load_run_config  # noqa: E402
from hvpl.continual.ogc import build_memory  # noqa: E402
from hvpl.data.splits import make_scenario_split  # noqa: E402
from hvpl.data.synthetic import generate_synthetic  # noqa: E402
from hvpl.engine.distributed import resolve_device  # noqa: E402
from hvpl.engine.loader import default_workers  # noqa: E402
from hvpl.engine.model_file import FINAL_NAME, load_model_file  # noqa: E402
from hvpl.engine.predict import predict  # noqa: E402
from hvpl.engine.trainer import train_step  # noqa: E402
from hvpl.evaluation.evaluate import evaluate_files  # noqa: E402
from hvpl.utils.io import atomic_write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "gpu_check.json"
SCENARIO = "synth_4-2"
NUM_VIDEOS = 40


class Checks:
    """Runs named checks, records ok / detail / seconds, never stops at a failure."""

    def __init__(self):
        self.rows: list[dict] = []

    def run(self, name: str, fn) -> object:
        start = time.perf_counter()
        try:
            value, detail = fn()
            ok = True
        except Exception as exc:   # a failed check is reported, the next ones still run
            value, ok, detail = None, False, f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        self.rows.append({"check": name, "ok": ok, "detail": detail, "seconds": time.perf_counter() - start})
        print(f"[gpu_check] {'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
        return value


def _last_loss(out_dir: Path) -> float:
    lines = [json.loads(x) for x in (out_dir / "train_log.jsonl").read_text().splitlines() if x.strip()]
    losses = [x["loss"] for x in lines if "loss" in x]
    if not losses or not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"{out_dir / 'train_log.jsonl'}: no finite losses logged")
    return losses[-1]


def _weights_diff(a: Path, b: Path) -> float:
    sa, sb = load_model_file(a)["model"], load_model_file(b)["model"]
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


def _score_diff(a: Path, b: Path) -> tuple[int, int, float]:
    """Detections of two predictions files and the largest difference between their k-th best scores per
    video (robust to ties reordering)."""
    def ranked(path: Path) -> dict:
        per_video: dict = {}
        for r in json.loads(path.read_text()):
            per_video.setdefault(r["video_id"], []).append(r["score"])
        return {v: sorted(s, reverse=True) for v, s in per_video.items()}
    ra, rb = ranked(a), ranked(b)
    diffs = [abs(x - y) for v in ra.keys() & rb.keys() for x, y in zip(ra[v], rb[v])]
    return sum(map(len, ra.values())), sum(map(len, rb.values())), max(diffs, default=0.0)


def _torchrun(cfg_sets: list[str], split: Path, out: Path, device: str, nproc: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "hvpl.cli", "train", "--scenario", SCENARIO, "--method", "hvpl", "--step", "0",
           "--train-json", str(split / "train_step0.json"), "--out-dir", str(out), "--device", device]
    for item in cfg_sets:
        cmd += ["--set", item]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


@dataclass
class _Setup:
    """What the check groups share: device, iterations per step, the run config with its --set items, folders
    (``work``: data/, split/, run/ with run/step0/ and run/step1/)."""
    device: str
    iters: int
    work: Path
    sets: list[str]
    cfg: dict

    @property
    def split(self) -> Path:
        return self.work / "split"

    @property
    def run(self) -> Path:
        return self.work / "run"

    def step_dir(self, step: int) -> Path:
        return self.run / f"step{step}"


def _setup(device: str, iters: int, work: Path) -> _Setup:
    sets = [f"scenario.train.step0_iters={iters}", f"scenario.train.step0_lr_drop={max(1, iters - 1)}",
            f"scenario.train.inc_iters={iters}", "scenario.train.checkpoint_period=0",
            f"scenario.train.log_period={max(1, iters // 4)}", "scenario.train.ogc_samples=16"]
    return _Setup(device, iters, work, sets, load_run_config(SCENARIO, "hvpl", None, sets))


def _check_data(s: _Setup, checks: Checks) -> None:
    sc = s.cfg["scenario"]

    def make_data():
        data = s.work / "data"
        generate_synthetic(data, num_classes=sc["num_classes"], **dict(sc["synthetic"], num_videos=NUM_VIDEOS))
        classes = make_scenario_split(sc, data, s.split, seed=0)
        return classes, f"{NUM_VIDEOS} videos, steps {classes['steps']}"

    checks.run("synthetic split", make_data)


def _train(s: _Setup, step: int, **kw):
    """A check training ``step`` into run/step{step}/ (``kw``: prev_model, ogc_basis)."""
    def go():
        out = s.step_dir(step)
        path = train_step(s.cfg, step=step, train_json=s.split / f"train_step{step}.json", out_dir=out, seed=0,
                          device=s.device, **kw)
        workers = default_workers(resolve_device(s.device), None)
        return path, f"{s.iters} iterations, last logged loss {_last_loss(out):.3f}, {workers} data worker(s)"
    return go


def _check_train(s: _Setup, checks: Checks) -> None:
    checks.run(f"train step 0 on {s.device}", _train(s, 0))


def _check_ogc(s: _Setup, checks: Checks) -> None:
    """The OGC memory of step 1, then step 1 of hvpl trained with it."""
    basis, prev = s.run / "step1_ogc_basis.pt", s.step_dir(0) / FINAL_NAME
    checks.run(f"OGC memory on {s.device}", lambda: (build_memory(
        s.cfg, step=1, prev_model=prev, train_json=s.split / "train_step0.json", out=basis, seed=0,
        device=s.device), f"basis {tuple(torch.load(basis, weights_only=True)['basis'].shape)}"))
    checks.run(f"train hvpl step 1 (OGC) on {s.device}", _train(s, 1, prev_model=prev, ogc_basis=basis))


def _check_predict(s: _Setup, checks: Checks) -> None:
    def infer():
        model, test = s.step_dir(1) / FINAL_NAME, s.split / "test_step1.json"
        preds, cpu_preds = s.run / "predictions.json", s.run / "predictions_cpu.json"
        predict(model, test, preds, device=s.device)
        predict(model, test, cpu_preds, device="cpu")
        stats = evaluate_files(test, preds, s.run / "metrics.json", s.split / "classes.json", 1)
        n_dev, n_cpu, diff = _score_diff(preds, cpu_preds)
        ap = stats["stats"]["AP"]
        return diff, f"AP {ap:.4f}; {n_dev} / {n_cpu} detections ({s.device} / cpu), max score difference {diff:.2e}"

    checks.run(f"predict + evaluate on {s.device}, compared with cpu", infer)


def _check_ddp(s: _Setup, checks: Checks) -> None:
    def ddp():
        # 2 processes (the scenario's batch of 2 clips splits into 1 per process); NCCL needs one GPU per
        # process, so with a single visible GPU only the torchrun launch on CUDA is exercised, and said so.
        cuda = s.device.startswith("cuda")
        nproc = min(2, torch.cuda.device_count()) if cuda else 2
        out = s.run / "ddp" / "step0"
        res = _torchrun(s.sets, s.split, out, s.device, nproc)
        if res.returncode != 0:
            raise RuntimeError(f"torchrun exited {res.returncode}: {res.stderr[-2000:]}")
        diff = _weights_diff(out / FINAL_NAME, s.step_dir(0) / FINAL_NAME)
        backend = "nccl" if cuda else "gloo"
        note = "" if nproc >= 2 else "; ONE GPU visible: NCCL between processes not tested (needs 2 GPUs)"
        return diff, f"{nproc} process(es), {backend}; max weight difference to the 1-process run {diff:.2e}{note}"

    checks.run("torchrun step 0", ddp)


def _check_claim(s: _Setup, checks: Checks) -> None:
    if s.device.startswith("cuda"):
        checks.run("hvpl claim-gpus (local GPU runs of the workflow)", lambda: _claim_check(s.work))


CHECK_GROUPS = (_check_data, _check_train, _check_ogc, _check_predict, _check_ddp, _check_claim)


def run_checks(device: str, iters: int, work: Path, checks: Checks) -> None:
    """Every check group in order on one small synthetic split under ``work`` (each needs the ones before)."""
    setup = _setup(device, iters, work)
    for group in CHECK_GROUPS:
        group(setup, checks)


def _claim_check(work: Path):
    """A job started through `hvpl claim-gpus --count 1` sees exactly one GPU, and a CUDA tensor works there."""
    probe = "import os, torch; torch.ones(1, device='cuda'); print(torch.cuda.device_count(), " \
            "os.environ['CUDA_VISIBLE_DEVICES'])"
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    env.update(HVPL_GPU_LOCK_DIR=str(work / "gpu-locks"), PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "hvpl.cli", "claim-gpus", "--count", "1", "--", sys.executable, "-c",
                          probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"claim-gpus exited {res.returncode}: {res.stderr[-2000:]}")
    count, visible = res.stdout.split()
    if count != "1":
        raise RuntimeError(f"the job saw {count} GPUs (CUDA_VISIBLE_DEVICES={visible}), expected 1")
    return None, f"the job saw 1 GPU (CUDA_VISIBLE_DEVICES={visible})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--iters", type=int, default=20, help="training iterations per step of the end-to-end run")
    ap.add_argument("--timing-model", default=None, help="model config of the timings (default: the scenario's)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0], help="timing input sizes (0: the scenario's)")
    ap.add_argument("--timing-iters", type=int, default=10)
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(f"[gpu_check] --device {args.device}: torch {torch.__version__} (CUDA build: {torch.version.cuda}) "
                 "sees no GPU; install a CUDA build for this driver: make install TORCH_SPEC=... PIP_EXTRA=...")
    env = {"device": args.device, "torch": torch.__version__, "cuda": torch.version.cuda,
           "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
           "machine": platform.processor() or platform.machine()}
    print(f"[gpu_check] {env}", flush=True)
    checks = Checks()
    with tempfile.TemporaryDirectory() as tmp:
        run_checks(args.device, args.iters, Path(tmp), checks)
    def timing_rows():
        rows = [r for size in args.sizes for r in bench_iteration.run(
            SCENARIO, ["hvpl"], args.timing_iters, 2, 1, args.device, size or None, args.timing_model)]
        return rows, f"{len(rows)} row(s)"

    timings = checks.run("iteration timings", timing_rows)
    print(f"\n{'check':<48}{'ok':>5}{'s':>8}  detail")
    for r in checks.rows:
        print(f"{r['check']:<48}{'yes' if r['ok'] else 'NO':>5}{r['seconds']:>8.1f}  {r['detail']}")
    for r in timings or []:
        print(f"timing {r['model']} {r['size']} px: step 0 {r['step0_s'] * 1e3:.1f} ms/it "
              f"(peak {r['step0_peak_mib']:.0f} MiB), hvpl step 1 {r['step1_s'] * 1e3:.1f} ms/it "
              f"(peak {r['step1_peak_mib']:.0f} MiB), ratio {r['ratio']:.3f}")
    atomic_write_json(OUT, {"env": env, "iters": args.iters, "checks": checks.rows, "timings": timings})
    print(f"wrote {OUT}")
    sys.exit(0 if all(r["ok"] for r in checks.rows) else 1)


if __name__ == "__main__":
    main()
