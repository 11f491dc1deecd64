"""``train_step()``: one continual step of one (scenario, method, seed), resumable, single- or multi-process.

Step 0 (and joint training) builds a fresh model; step t >= 1 rebuilds step t-1's ``model_final.pth`` and
grows it for the step's new classes (hvpl.continual.growth); the method decides what trains. Each iteration:
forward the global batch's local shard (bf16 autocast on CUDA, float32 on CPU), the criterion per clip with a
generator seeded by (seed, step, iteration, slot), backward (DDP averages), OGC projection of the newest frame
prompt content, gradient clipping, AdamW step, LR schedule. Every random draw depends only on the seed, the
iteration and the clip's slot in the global batch, so a resumed run and an N-process run see exactly what an
uninterrupted single-process run sees.

Outputs (rank 0, atomic): ``out_dir/model_final.pth`` (DESIGN.md) and ``out_dir/train_log.jsonl``; periodic
checkpoints in ``ckpt_dir`` (default ``out_dir.parent / "checkpoints" / out_dir.name``), with a live copy of
the log there, replaced once the step has finished by its finished record (hvpl.engine.checkpoint): a rerun with
the same configuration, input files and code restores the outputs instead of training; any change trains afresh.
"""
from __future__ import annotations

import json
import os
import random
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hvpl.continual.methods import Method, get_method
from hvpl.engine import checkpoint as ckpt_mod
from hvpl.engine.batching import split_outputs
from hvpl.engine.distributed import (DistInfo, all_gather_objects, all_reduce_sum, barrier, distributed_context,
                                     unwrap, wrap_model)
from hvpl.engine.optim import build_optimizer, build_scheduler, clip_gradients
from hvpl.engine.init_weights import describe_init
from hvpl.engine.loader import Batch, default_workers, iterate_batches, read_batch
from hvpl.engine.authors_checkpoint import load_model_or_authors
from hvpl.engine.model_file import FINAL_NAME, LOG_NAME, model_file_dict
from hvpl.engine.step_plan import StepPlan, build_step_model, coco_json_for, plan_step
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_files, atomic_write_text, write_torch
from hvpl.utils.logging import log, progress
from hvpl.utils.tensorboard import iterations_before, open_writer, write_train_scalars

SEED_STRIDE = 1_000_003   # mixes (seed, step, iteration, slot) into one generator seed


def clip_seed(seed: int, step: int, iteration: int, slot: int) -> int:
    """Seed of the loss's random draws (point sampling) for one clip of one iteration."""
    return ((((seed * SEED_STRIDE) + step) * SEED_STRIDE + iteration) * SEED_STRIDE + slot) % (2 ** 63)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def default_ckpt_dir(out_dir: Path) -> Path:
    return out_dir.parent / "checkpoints" / out_dir.name


def _no_mark(phase: str) -> None:
    return None


def _format_terms(values: dict[str, float]) -> str:
    bad = [k for k, v in values.items() if not np.isfinite(v)]
    return ", ".join(f"{k}={values[k]:.6g}" for k in bad + [k for k in values if k not in bad])


# ---------------------------------------------------------------------------------------------------- run
@dataclass
class _State:
    """Everything of the loop that a checkpoint must restore besides model/optimizer/scheduler/RNG."""
    iteration: int = 0
    train_seconds: float = 0.0
    log_lines: list = field(default_factory=list)
    window: dict = field(default_factory=dict)   # loss sums since the last log line
    window_count: int = 0

    def as_dict(self) -> dict:
        return {"iteration": self.iteration, "train_seconds": self.train_seconds, "log_lines": self.log_lines,
                "window": self.window, "window_count": self.window_count}


class StepTrainer:
    """The training loop of one step (built by :func:`train_step`)."""

    def __init__(self, cfg: dict, plan: StepPlan, model, dataset, info: DistInfo, *, seed: int, out_dir: Path,
                 ckpt_dir: Path, basis: torch.Tensor | None, fingerprint: str, workers: int = 0, tb_writer=None,
                 iterations_before: int = 0):
        from hvpl.model.criterion import SetCriterion

        self.cfg, self.plan, self.info, self.seed = cfg, plan, info, seed
        self.train_cfg = cfg["scenario"]["train"]
        self.out_dir, self.ckpt_dir, self.fingerprint = out_dir, ckpt_dir, fingerprint
        self.dataset, self.workers = dataset, workers
        self.model = model
        self.criterion = SetCriterion(cfg["model"]["loss"], sum(plan.classes_per_task)).to(info.device)
        self.optimizer = build_optimizer(model, self.train_cfg)
        self.scheduler = build_scheduler(self.optimizer, self.train_cfg, drop=plan.lr_drop)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.ddp = wrap_model(model, info)
        self.projector = None
        if basis is not None:
            from hvpl.continual.ogc import OGCProjector

            self.projector = OGCProjector(model.frame_decoder.prompts[plan.step - 1].content, basis)
        self.state = _State()
        self.tb, self.grad_norm = tb_writer, None   # TensorBoard (hvpl.utils.tensorboard), rank 0 only
        self.tb_offset = iterations_before           # the run's iterations before this step (TensorBoard x)
        self.autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                                       enabled=info.device.type == "cuda")

    # ---------------------------------------------------------------------------------- checkpoints
    def resume(self) -> None:
        state = ckpt_mod.load_latest(self.ckpt_dir, self.fingerprint)
        barrier(self.info)   # every rank has read before rank 0 may prune
        if self.info.is_main:
            ckpt_mod.remove_others(self.ckpt_dir, None if state is None else state["iteration"])
        if state is None:
            return
        unwrap(self.ddp).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rngs = state["rng"]
        ckpt_mod.set_rng_state(rngs[self.info.rank] if self.info.rank < len(rngs) else rngs[0])
        self.state = _State(**state["loop"])
        if self.info.is_main:
            self._write_live_log()

    def save_checkpoint(self) -> None:
        rngs = all_gather_objects(ckpt_mod.rng_state(), self.info)
        if not self.info.is_main:
            return
        ckpt_mod.save_checkpoint(self.ckpt_dir, self.state.iteration, {
            "fingerprint": self.fingerprint, "model": unwrap(self.ddp).state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "rng": rngs,
            "data": {"next_draw": self.state.iteration * int(self.train_cfg["batch_size"])},
            "loop": self.state.as_dict(), "world_size": self.info.world_size})

    def _write_live_log(self) -> None:
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.ckpt_dir / LOG_NAME, "".join(json.dumps(x) + "\n" for x in self.state.log_lines))

    # ---------------------------------------------------------------------------------- one iteration
    def _pad_value(self) -> torch.Tensor:
        return unwrap(self.ddp).pixel_mean.flatten().cpu()

    def _losses(self, it: int, batch: Batch) -> dict[str, torch.Tensor]:
        """Forward + per-clip criterion; the terms averaged over the local clips."""
        dev = self.info.device
        images = batch.images.to(dev, non_blocking=True)
        targets = [{k: (v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in t.items()}
                   for t in batch.targets]
        with self.autocast:
            outputs = self.ddp(images)
        terms: dict[str, torch.Tensor] = {}
        slots = batch.slots
        per_clip = split_outputs(outputs, len(slots), images.shape[1])
        for j, slot in enumerate(slots):
            gen = torch.Generator(device=dev).manual_seed(clip_seed(self.seed, self.plan.step, it, slot))
            for name, value in self.criterion(per_clip[j], [targets[j]], gen).items():
                terms[name] = terms.get(name, 0.0) + value.float() / len(slots)
        return terms

    def _check_finite(self, it: int, loss: torch.Tensor, terms: dict) -> dict[str, float]:
        """Global (process-mean) values of the loss and its terms; non-finite -> HVPLError on every rank."""
        names = ["loss", *terms]
        vals = torch.stack([loss.detach().float(), *(t.detach().float() for t in terms.values())])
        vals = (all_reduce_sum(vals, self.info) / self.info.world_size).cpu().tolist()
        values = dict(zip(names, vals))
        if not all(np.isfinite(v) for v in vals):
            raise HVPLError(f"step {self.plan.step}: non-finite loss at iteration {it + 1}: "
                            f"{_format_terms(values)}")
        return values

    def train_iteration(self, it: int, mark: Callable[[str], None] | None = None,
                        batch: Batch | None = None) -> dict[str, float]:
        """One iteration on ``batch`` (None: read iteration ``it``'s here); ``mark(phase)`` (benchmarks) is called
        after "load", "forward" (model + criterion), "backward" and "update" (OGC, clipping, AdamW, schedule)."""
        mark = mark or _no_mark
        if batch is None:
            batch = read_batch(self.dataset, it, int(self.train_cfg["batch_size"]), self.info, self._pad_value())
        mark("load")
        terms = self._losses(it, batch)
        loss = sum(terms.values())
        values = self._check_finite(it, loss, terms)
        mark("forward")
        loss.backward()
        mark("backward")
        if self.projector is not None:
            self.projector.apply()
        norm = clip_gradients(self.trainable, self.train_cfg.get("clip_grad"))
        if self.tb is not None:
            self.grad_norm = norm if norm is not None else _grad_norm(self.trainable)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        mark("update")
        return values

    # ---------------------------------------------------------------------------------- loop
    def run(self, after_iteration: Callable[[int], None] | None = None) -> None:
        """Iterations from the resumed one to the step's last; ``after_iteration(i)`` after iteration i."""
        iters, start = self.plan.iters, self.state.iteration
        self.ddp.train()
        steps = range(start, iters)
        if self.info.is_main:
            steps = progress(steps, total=iters - start, desc=f"train step {self.plan.step}")
        batches = iterate_batches(self.dataset, int(self.train_cfg["batch_size"]), self.info, start, iters,
                                  workers=self.workers, pad_value=self._pad_value())
        with closing(batches):
            self._loop(steps, batches, after_iteration)

    def _loop(self, steps, batches, after_iteration) -> None:
        st, iters = self.state, self.plan.iters
        log_period = max(1, int(self.train_cfg.get("log_period", 1)))
        ckpt_period = int(self.train_cfg.get("checkpoint_period", 0) or 0)
        for it in steps:
            lr = max(g["lr"] for g in self.optimizer.param_groups)
            tic = time.perf_counter()
            values = self.train_iteration(it, batch=next(batches))
            seconds = time.perf_counter() - tic
            st.train_seconds += seconds
            st.iteration = it + 1
            if self.tb is not None:
                write_train_scalars(self.tb, self.tb_offset + it + 1, values, lr, self.grad_norm, seconds)
            for k, v in values.items():
                st.window[k] = st.window.get(k, 0.0) + v
            st.window_count += 1
            if (it + 1) % log_period == 0 or it + 1 == iters:
                line = {"iter": it + 1, "lr": lr, **{k: v / st.window_count for k, v in st.window.items()},
                        "time": round(st.train_seconds, 3)}
                st.log_lines.append(line)
                st.window, st.window_count = {}, 0
                if self.info.is_main:
                    self._write_live_log()
            if ckpt_period and (it + 1) % ckpt_period == 0 and it + 1 < iters:
                self.save_checkpoint()
            if after_iteration is not None:
                after_iteration(it + 1)

    def finish(self, total_params: tuple[int, int]) -> None:
        """Write model_final.pth and train_log.jsonl (rank 0; both or neither)."""
        if not self.info.is_main:
            return
        trainable, total = total_params
        plan = self.plan
        done = {"event": "done", "train_seconds": round(self.state.train_seconds, 3), "iterations": plan.iters,
                "trainable_params": trainable, "total_params": total, "init_weights": describe_init(self.cfg)}
        lines = self.state.log_lines + [done]
        with atomic_files([self.out_dir / FINAL_NAME, self.out_dir / LOG_NAME]) as (model_tmp, log_tmp):
            write_torch(model_tmp, {
                **model_file_dict(self.cfg, plan, unwrap(self.ddp)), "trainable_params": trainable,
                "total_params": total, "train_seconds": self.state.train_seconds, "iterations": plan.iters,
                "run_iterations": self.tb_offset + plan.iters})
            log_tmp.write_text("".join(json.dumps(x) + "\n" for x in lines))
        if self.tb is not None:
            self.tb.close()


def _grad_norm(params) -> float:
    """The global L2 norm of the gradients (TensorBoard's train/grad_norm when clipping is off)."""
    norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def _set_threads(threads: int | None) -> None:
    if threads:
        per_proc = max(1, int(threads) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.set_num_threads(per_proc)


def _warn_if_no_lr_drop(cfg: dict, plan: StepPlan) -> None:
    """A step-0 schedule whose drop falls after the last iteration (e.g. step0_iters shortened by --set alone)."""
    drop = int(cfg["scenario"]["train"]["step0_lr_drop"])
    if plan.lr_drop and drop >= plan.iters:
        log(f"warning: step0_lr_drop = {drop} >= {plan.iters} iterations: the LR is not dropped in this step "
            f"(set scenario.train.step0_lr_drop below the iterations for the protocol's schedule)")


def _input_digests(cfg: dict, plan, train_json, prev_model, ogc_basis) -> dict:
    """Content digests of the files a step trains from (part of the resume fingerprint)."""
    files = {"train_json": train_json, "prev_model": prev_model, "ogc_basis": ogc_basis}
    coco = coco_json_for(Path(train_json), plan.step, plan.method.joint)
    if (cfg["scenario"].get("data") or {}).get("use_coco") and coco.is_file():
        files["coco_json"] = coco
    return {name: ckpt_mod.file_digest(path) for name, path in files.items()}


def train_step(cfg: dict, *, step: int, train_json, out_dir, prev_model=None, ogc_basis=None, ckpt_dir=None,
               seed: int = 0, device: str = "cpu", threads: int | None = None, workers: int | None = None,
               frame_check: str = "decode", after_iteration: Callable[[int], None] | None = None,
               tensorboard_dir=None) -> Path:
    """Train one continual step (see the module doc). Returns the path of ``model_final.pth``.

    ``workers``: data-loading processes (hvpl.engine.loader; None: its default for the device); the result
    does not depend on it.
    ``frame_check``: ``decode`` decodes every training frame once before the first iteration (cached per dataset,
    hvpl.data.frame_check); ``exists`` only checks that the files exist.
    ``after_iteration(i)`` is called after iteration i (1-based) completes; tests use it to simulate crashes.
    ``tensorboard_dir``: the run's TensorBoard folder (hvpl.utils.tensorboard; None or no package: none written).
    """
    from hvpl.data.frame_check import verify_dataset_frames
    from hvpl.continual.growth import count_trainable
    from hvpl.continual.ogc import load_basis

    _set_threads(threads)
    out_dir = Path(out_dir)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir else default_ckpt_dir(out_dir)
    method: Method = get_method(cfg["method"])
    with distributed_context(device) as info:
        # our model_final.pth, or an authors' checkpoint of step t-1 (converted for this run's config)
        prev = load_model_or_authors(prev_model, cfg, step - 1 if step >= 1 else None,
                                     Path(train_json).parent / "classes.json") if prev_model else None
        plan, dataset = plan_step(cfg, step, Path(train_json), prev, seed)
        seed_everything(seed)
        model = build_step_model(cfg, plan, prev).to(info.device)
        basis = None
        if method.ogc and plan.step >= 1 and not method.joint:
            if ogc_basis is None:
                raise HVPLError(f"method '{method.name}' uses OGC: step {step} needs --ogc-basis "
                                f"(hvpl ogc-memory --step {step} ...)")
            basis = load_basis(ogc_basis, channels=cfg["model"]["hidden_dim"], step=step,
                               space="sample" if method.ogc_authors else "channel")
        elif ogc_basis is not None:
            log(f"method '{method.name}' at step {step} does not use OGC: {ogc_basis} ignored")
        if frame_check == "decode":   # after the cheap checks of the other inputs
            verify_dataset_frames(dataset, threads)
        counts = count_trainable(model)
        used_basis = ogc_basis if basis is not None else None
        fp = ckpt_mod.fingerprint(cfg, step, seed, str(Path(train_json).name), plan.iters,
                                  _input_digests(cfg, plan, train_json, prev_model, used_basis))
        done_fp = ckpt_mod.fingerprint(fp, ckpt_mod.code_digest())
        if _restored(ckpt_dir, out_dir, done_fp, info):
            return out_dir / FINAL_NAME
        workers = default_workers(info.device, threads) if workers is None else int(workers)
        trainer = StepTrainer(cfg, plan, model, dataset, info, seed=seed, out_dir=out_dir, ckpt_dir=ckpt_dir,
                              basis=basis, fingerprint=fp, workers=workers,
                              tb_writer=open_writer(tensorboard_dir) if info.is_main else None,
                              iterations_before=iterations_before(cfg, plan, prev))
        trainer.resume()
        if info.is_main:
            _warn_if_no_lr_drop(cfg, plan)
            log(f"step {step} ({method.name}): {plan.iters} iterations from {trainer.state.iteration}, "
                f"{counts[0]:,} trainable / {counts[1]:,} parameters, {info.world_size} process(es) on "
                f"{info.device}, {workers} data worker(s) per process")
        trainer.run(after_iteration)
        trainer.finish(counts)
        barrier(info)
        if info.is_main:   # the checkpoints give way to the finished record (module doc)
            ckpt_mod.record_finished(ckpt_dir, [out_dir / FINAL_NAME, out_dir / LOG_NAME], done_fp)
            ckpt_mod.remove_checkpoints(ckpt_dir, also=(LOG_NAME,))
    return out_dir / FINAL_NAME


def _restored(ckpt_dir: Path, out_dir: Path, done_fp: str, info: DistInfo) -> bool:
    """True when this step finished before with the same fingerprint: its outputs are put back (rank 0) and
    nothing is trained. A record of another fingerprint is dropped (it can never be restored)."""
    names = ckpt_mod.finished_files(ckpt_dir, done_fp)
    barrier(info)   # every rank has decided before rank 0 changes the folder
    if info.is_main:
        if names:
            ckpt_mod.restore_finished(ckpt_dir, out_dir, names)
        else:
            ckpt_mod.drop_finished(ckpt_dir)
    barrier(info)
    return names is not None
