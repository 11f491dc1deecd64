"""Training iteration time: a prompt step (t = 1) vs step 0, per method, at a small size.

A prompt step trains only prompts + class heads: the trunk (backbone + pixel decoder) runs without autograd
and frozen weights get no gradient, so one iteration should cost well under step 0's (target ratio <= 0.4).
Data loading is included (the same ClipDataset in both). Models are untrained (the timing does not depend on
the weights). Also reported: the step-1 time of the frozen trunk's forward and the ratio the step would reach
if that forward cost nothing (a lower bound for anything done to frozen parts). Prints a table and writes
``bench/out/iteration.json``.

    python bench/bench_iteration.py [--scenario synth_4-2] [--methods hvpl eclipse finetune] [--iters 10]
                                    [--warmup 2] [--threads 1] [--device cpu] [--sizes 0 128]
                                    [--model paper_r50]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hvpl.config import load_run_config
from hvpl.continual.growth import count_trainable
from hvpl.continual.ogc import gpm_update
from hvpl.data.splits import make_scenario_split
from hvpl.data.synthetic import generate_synthetic
from hvpl.engine import step_plan
from hvpl.engine import trainer as tr
from hvpl.engine.distributed import DistInfo, resolve_device
from hvpl.engine.model_file import model_file_dict
from hvpl.utils.io import atomic_write_json

OUT = Path(__file__).resolve().parent / "out" / "iteration.json"
BENCH_VIDEOS = 40   # enough videos for a split with every class; the timing does not depend on it
TARGET_RATIO = 0.4


PHASES = ("load", "forward", "backward", "update")


class _Timed:
    """A step's trainer with its timings: seconds per timed iteration and per phase (train_iteration's marks)."""

    def __init__(self, cfg, step: int, split: Path, prev, info, tmp: Path):
        name = "train_all.json" if cfg["method"] == "joint" else f"train_step{step}.json"
        plan, dataset = step_plan.plan_step(cfg, step, split / name, prev, seed=0)
        tr.seed_everything(0)
        self.plan = plan
        self.model = step_plan.build_step_model(cfg, plan, prev).to(info.device)
        basis = None
        if plan.method.ogc and step >= 1:
            C = cfg["model"]["hidden_dim"]
            basis = gpm_update(torch.randn(C, 4 * C, generator=torch.Generator().manual_seed(0)), None, 0.7)
        self.trainer = tr.StepTrainer(cfg, plan, self.model, dataset, info, seed=0, out_dir=tmp, ckpt_dir=tmp,
                                      basis=basis, fingerprint="bench")
        self.trainer.ddp.train()
        self.cuda = info.device.type == "cuda"
        self.times: list[float] = []
        self.phases: dict[str, list[float]] = {p: [] for p in PHASES}
        self.trunk_times: list[float] = []   # backbone + pixel decoder forward, per timed iteration
        # CUDA: this step's peak memory over the timed iterations, as if it ran alone: its resident state
        # (model + optimizer) plus its iteration's peak above what was allocated before it (the other step's
        # trainer is resident on the same GPU during the round-robin, so max_memory_allocated alone overstates).
        self.peak_bytes = 0
        self._trunk_acc = 0.0
        self._time_trunk()
        self.module_times: dict[str, list[float]] = {}   # forward seconds per top-level module, per iteration
        self._module_acc: dict[str, float] = {}
        self._time_modules()
        self.it = 0

    def _time_modules(self) -> None:
        """Forward hooks accumulating each top-level module's (and the criterion's) forward time."""
        parts = list(self.model.named_children()) + [("criterion", self.trainer.criterion)]
        for name, module in parts:
            start = {}

            def pre(mod, args, name=name, start=start):
                start[name] = self._now()

            def post(mod, args, out, name=name, start=start):
                self._module_acc[name] = self._module_acc.get(name, 0.0) + self._now() - start[name]
            module.register_forward_pre_hook(pre)
            module.register_forward_hook(post)

    def _time_trunk(self) -> None:
        """Wrap the model's trunk (an instance attribute shadowing the method) to accumulate its forward time."""
        trunk = self.model.trunk

        def timed(frames):
            start = self._now()
            out = trunk(frames)
            self._trunk_acc += self._now() - start
            return out

        self.model.trunk = timed

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def iteration(self, record: bool) -> None:
        last = [self._now()]
        start = last[0]

        def mark(phase: str) -> None:
            now = self._now()
            if record:
                self.phases[phase].append(now - last[0])
            last[0] = now

        self._trunk_acc = 0.0
        self._module_acc = {}
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        self.trainer.train_iteration(self.it, mark)
        self.it += 1
        if record:
            self.times.append(self._now() - start)
            self.trunk_times.append(self._trunk_acc)
            for name, secs in self._module_acc.items():
                self.module_times.setdefault(name, []).append(secs)
            if self.cuda:
                own = _resident_bytes(self.model, self.trainer.optimizer)
                self.peak_bytes = max(self.peak_bytes, own + torch.cuda.max_memory_allocated() - before)

    def phase_medians(self) -> dict[str, float]:
        return {p: statistics.median(v) for p, v in self.phases.items()}

    def module_medians(self) -> dict[str, float]:
        return {name: statistics.median(v) for name, v in self.module_times.items()}


def _resident_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the model's parameters, gradients and buffers and of the optimizer's state (each storage once)."""
    tensors = list(model.parameters()) + [p.grad for p in model.parameters() if p.grad is not None]
    tensors += list(model.buffers())
    tensors += [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _size_overrides(size: int | None) -> list[str]:
    """--set items putting frames and every input size at ``size`` pixels (None: the scenario's)."""
    if size is None:
        return []
    return [f"scenario.synthetic.height={size}", f"scenario.synthetic.width={size}",
            f"scenario.input.min_size_train=[{size}]", f"scenario.input.max_size_train={size}",
            f"scenario.input.min_size_test={size}", f"scenario.input.max_size_test={size}"]


def run(scenario: str, methods: list[str], iters: int, warmup: int, threads: int, device: str,
        size: int | None = None, model: str | None = None) -> list[dict]:
    torch.set_num_threads(threads)
    info = DistInfo(0, 1, 0, resolve_device(device))
    sets = _size_overrides(size)
    sc = load_run_config(scenario, "hvpl", model, sets)["scenario"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = dict(sc["synthetic"], num_videos=BENCH_VIDEOS)
        generate_synthetic(Path(tmp) / "data", num_classes=sc["num_classes"], **spec)
        split = Path(tmp) / "split"
        make_scenario_split(sc, Path(tmp) / "data", split, seed=0)
        for method in methods:
            cfg = load_run_config(scenario, method, model, sets)
            step0 = _Timed(cfg, 0, split, None, info, Path(tmp))
            for _ in range(warmup):
                step0.iteration(record=False)
            runs = [step0]
            if method != "joint":
                prev = dict(model_file_dict(cfg, step0.plan, step0.model), _path="<bench step 0>")
                step1 = _Timed(cfg, 1, split, prev, info, Path(tmp))
                for _ in range(warmup):
                    step1.iteration(record=False)
                runs.append(step1)
            for _ in range(iters):   # round-robin: changes of load on a shared machine hit both steps alike
                for run_ in runs:
                    run_.iteration(record=True)
            t0 = step0.times
            row = {"method": method, "step0_s": statistics.median(t0), "step0_min_s": min(t0),
                   "step0_trainable": count_trainable(step0.model)[0], "step0_phases_s": step0.phase_medians(),
               "step0_trunk_s": statistics.median(step0.trunk_times), "step0_modules_s": step0.module_medians(),
               "step0_peak_mib": step0.peak_bytes / 2 ** 20}
            if method != "joint":
                t1, ph1 = step1.times, step1.phase_medians()
                row.update(step1_s=statistics.median(t1), step1_min_s=min(t1), step1_phases_s=ph1,
                           step1_modules_s=step1.module_medians(),
                           # what a prompt step cannot skip (clips, forward pass, criterion) over step 0
                           load_forward_share=(ph1["load"] + ph1["forward"]) / statistics.median(t0),
                           step1_trunk_s=statistics.median(step1.trunk_times),
                           step1_peak_mib=step1.peak_bytes / 2 ** 20,
                           # the ratio if the frozen trunk (backbone + pixel decoder) cost nothing at step 1
                           trunk_free_ratio=((statistics.median(t1) - statistics.median(step1.trunk_times))
                                             / statistics.median(t0) if step1.model._trunk_frozen() else None),
                           step1_trainable=count_trainable(step1.model)[0],
                           ratio=statistics.median(t1) / statistics.median(t0), ratio_min=min(t1) / min(t0))
            rows.append(dict(row, size=size or sc["input"]["max_size_train"], model=cfg["model"]["name"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="synth_4-2")
    ap.add_argument("--methods", nargs="+", default=["hvpl", "eclipse", "finetune"])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0], help="frame/input sizes (0: the scenario's)")
    ap.add_argument("--model", default=None, help="model config (default: the scenario's, tiny for synth_4-2)")
    args = ap.parse_args()
    rows = [r for size in args.sizes
            for r in run(args.scenario, args.methods, args.iters, args.warmup, args.threads, args.device,
                         size or None, args.model)]
    print("median (min) seconds per iteration; ratio = step 1 / step 0 of the medians (of the minima)")
    print(f"{'model':<10}{'size':>5} {'method':<14}{'step0 s/it':>16}{'step1 s/it':>16}{'ratio':>14}{'trainable0':>11}"
          f"{'trainable1':>11}")
    for r in rows:
        nan = float("nan")
        print(f"{r['model']:<10}{r['size']:>5} {r['method']:<14}{r['step0_s']:>8.4f} ({r['step0_min_s']:.4f})"
              f"{r.get('step1_s', nan):>8.4f} ({r.get('step1_min_s', nan):.4f})"
              f"{r.get('ratio', nan):>7.3f} ({r.get('ratio_min', nan):.3f}){r['step0_trainable']:>11,}"
              f"{r.get('step1_trainable', 0):>11,}")
    print("\nmedian ms per phase (load / forward+criterion / backward / update); share = step-1 load+forward "
          "over a step-0 iteration")
    for r in rows:
        for step in (0, 1):
            ph = r.get(f"step{step}_phases_s")
            if ph:
                share = f"   share {r['load_forward_share']:.3f}" if step == 1 else ""
                if step == 1 and r["trunk_free_ratio"] is not None:
                    share += (f"   frozen trunk {r['step1_trunk_s'] * 1e3:.1f} ms (ratio without it "
                              f"{r['trunk_free_ratio']:.3f})")
                print(f"{r['model']:<10}{r['size']:>5} {r['method']:<14} step {step}: "
                      + " / ".join(f"{ph[p] * 1e3:.1f}" for p in PHASES) + share)
    print("\nmedian forward ms per module (hooks; the criterion included), step 0 / step 1")
    for r in rows:
        names = list(r["step0_modules_s"])
        cells = [f"{n} {r['step0_modules_s'][n] * 1e3:.1f}"
                 + (f" / {r['step1_modules_s'][n] * 1e3:.1f}" if n in r.get("step1_modules_s", {}) else "")
                 for n in names]
        print(f"{r['model']:<10}{r['size']:>5} {r['method']:<14} " + ", ".join(cells))
    if args.device.startswith("cuda"):
        print("\npeak CUDA memory allocated during an iteration (MiB), step 0 / step 1")
        for r in rows:
            print(f"{r['model']:<10}{r['size']:>5} {r['method']:<14}{r['step0_peak_mib']:>9.0f} / "
                  f"{r.get('step1_peak_mib', float('nan')):.0f}")
    atomic_write_json(OUT, {"scenario": args.scenario, "model": args.model, "device": args.device,
                            "threads": args.threads,
                            "iters": args.iters, "warmup": args.warmup, "target_ratio": TARGET_RATIO,
                            "machine": platform.processor() or platform.machine(),
                            "torch": torch.__version__, "rows": rows})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
