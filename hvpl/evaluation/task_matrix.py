"""The task matrix of one run and the standard backward transfer (docs/evaluation.md).

R[i][j] = the AP (AR1) of task j's classes after step i, from the ``per_task`` entry of step i's metrics.json
(videos containing task-j classes, categories restricted to task j; protocol.md Section 4). A task not learned
yet (j > i) has no value (None); a task without a test video at step i is -1 (undefined), as in metrics.json.

BWT after step k (Lopez-Paz & Ranzato 2017) = mean over the tasks j < k of (R[k][j] - R[j][j]), undefined
values left out: negative = forgetting, positive = backward transfer. Unlike the paper's FAP it is not clipped
at 0, not divided by R[j][j] and not divided by the number of steps since task j was learned.

``matrix.csv`` (beside forgetting.json) holds one row per (metric, step): ``metric, step, task0, task1, ...``,
an empty cell for a task not learned yet.
"""
from __future__ import annotations

import csv
import io

from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_write_text

MATRIX_METRICS = ("AP", "AR1")


def _defined(x) -> bool:
    return x is not None and x > -1


def _task_value(metrics: dict, task: int, key: str, steps: list):
    """Task ``task``'s value in one step's metrics: its per_task entry, else the mean of its classes' defined
    per-class values (metrics.json written without --classes), else -1."""
    per_task = metrics.get("per_task")
    if per_task is not None:
        entry = per_task.get(str(task))
        return None if entry is None else float(entry[key])
    vals = [v[key] for c, v in metrics.get("per_class", {}).items() if int(c) in steps[task] and _defined(v[key])]
    return sum(vals) / len(vals) if vals else -1.0


def task_matrix(metrics_list: list, steps: list, key: str = "AP") -> list:
    """Rows of R for the run's steps: ``metrics_list[i]`` = metrics of the run's i-th step (its ``step`` entry
    says which); row i = [R[step_i][j] for j in tasks] with None for j > step_i."""
    rows = []
    for m in metrics_list:
        k = int(m["step"])
        rows.append([_task_value(m, j, key, steps) if j <= k else None for j in range(len(steps))])
    return rows


def backward_transfer(rows: list, run_steps: list, k: int):
    """BWT after step ``k`` from the matrix rows of the run's steps ``run_steps`` (consecutive from 0); None at
    step 0, for runs that do not start at step 0 (joint) and when no old task has both values defined."""
    if k < 1 or run_steps != list(range(len(run_steps))) or k not in run_steps:
        return None
    final = rows[run_steps.index(k)]
    terms = [final[j] - rows[j][j] for j in range(k) if _defined(final[j]) and _defined(rows[j][j])]
    return sum(terms) / len(terms) if terms else None


def matrix_csv_text(metrics_list: list, steps: list) -> str:
    """matrix.csv's text (see module docstring)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "step"] + [f"task{j}" for j in range(len(steps))])
    for key in MATRIX_METRICS:
        for m, row in zip(metrics_list, task_matrix(metrics_list, steps, key)):
            writer.writerow([key, int(m["step"])] + ["" if v is None else f"{v:.6f}" for v in row])
    return buf.getvalue()


def write_matrix_csv(path, metrics_list: list, steps: list) -> None:
    atomic_write_text(path, matrix_csv_text(metrics_list, steps))


def read_matrix_csv(path) -> dict:
    """{metric: {step: [R[step][j] or None]}} of a matrix.csv."""
    out: dict = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header or header[:2] != ["metric", "step"]:
            raise HVPLError(f"{path}: header: must start with 'metric,step'")
        for n, row in enumerate(reader, start=2):
            try:
                out.setdefault(row[0], {})[int(row[1])] = [float(v) if v != "" else None for v in row[2:]]
            except (IndexError, ValueError) as exc:
                raise HVPLError(f"{path}: line {n}: {exc}") from None
    return out
