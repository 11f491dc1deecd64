"""TensorBoard event files of one run (optional: the ``tensorboard`` package, extra ``hvpl[tb]``).

One TensorBoard run per (scenario, order, method, seed): the workflow gives every step's ``hvpl train`` and
``hvpl evaluate`` of a run the same folder (``results/{scenario}/{method}/seed{seed}/tensorboard``), each process
adding its own event file, so ``tensorboard --logdir results/`` lists the runs side by side.

Tags: ``train/<loss term>`` (``train/loss`` = the total), ``train/lr``, ``train/grad_norm`` (before clipping),
``train/iter_seconds``, against the run's global iteration (the iterations of the earlier steps come first, see
:func:`iterations_before`); ``eval/<metric>`` (AP, AP50, AP75, AR1, AR10, AP_old, AP_new) against the step.
Without the package (or without a folder) :func:`open_writer` returns None and nothing is written.
"""
from __future__ import annotations

from pathlib import Path

from hvpl.utils.logging import log

EVAL_TAGS = ("AP", "AP50", "AP75", "AR1", "AR10")


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def open_writer(logdir):
    """A ``SummaryWriter`` on ``logdir``, or None when ``logdir`` is None or tensorboard is not installed."""
    if logdir is None:
        return None
    if not tensorboard_available():
        log(f"tensorboard is not installed (pip install 'hvpl[tb]'): no event files in {logdir}")
        return None
    from torch.utils.tensorboard import SummaryWriter

    Path(logdir).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(logdir))


def iteration_offset(train_cfg: dict, step: int, first: bool) -> int:
    """Iterations of a run before step ``step`` by the scenario's schedule: 0 for a first step (step 0, joint),
    else step 0's iterations plus ``inc_iters`` per earlier incremental step."""
    if first:
        return 0
    return int(train_cfg["step0_iters"]) + (step - 1) * int(train_cfg["inc_iters"])


def iterations_before(cfg: dict, plan, prev: dict | None) -> int:
    """The run's iterations before this step: the previous step's model file records them (``run_iterations``;
    the workflow passes step-0-only overrides to step 0 alone, so this step's config may not know step 0's
    count); a file written before that key existed falls back to the scenario's schedule."""
    if prev is None:
        return 0
    if "run_iterations" in prev:
        return int(prev["run_iterations"])
    return iteration_offset(cfg["scenario"]["train"], plan.step, plan.step == 0 or plan.method.joint)


def write_train_scalars(writer, iteration: int, values: dict, lr: float, grad_norm, seconds: float) -> None:
    """One iteration's scalars (see module docstring); ``values`` = {term: loss value}."""
    for name, value in values.items():
        writer.add_scalar(f"train/{name}", value, iteration)
    writer.add_scalar("train/lr", lr, iteration)
    if grad_norm is not None:
        writer.add_scalar("train/grad_norm", grad_norm, iteration)
    writer.add_scalar("train/iter_seconds", seconds, iteration)


def write_eval_scalars(logdir, metrics: dict, step: int) -> None:
    """A step's metrics (``eval/*``, defined values only) into the run's folder ``logdir``."""
    writer = open_writer(logdir)
    if writer is None:
        return
    values = {k: metrics["stats"][k] for k in EVAL_TAGS if k in metrics.get("stats", {})}
    values.update({k: metrics[k] for k in ("AP_old", "AP_new") if k in metrics})
    for name, value in values.items():
        if value is not None and value > -1:
            writer.add_scalar(f"eval/{name}", value, step)
    writer.close()
