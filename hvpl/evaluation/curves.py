"""Training curves from the ``train_log.jsonl`` of every step (for users without TensorBoard).

Each training step logs a line every ``log_period`` iterations: ``{"iter", "lr", "loss", <loss terms>, "time"}``
(the loss values averaged over the iterations since the previous line), and ends with a ``{"event": "done"}``
line. ``loss_curves_{scenario}.png``: one panel per step, the total loss against the iteration, one line per
method (mean over the runs: seeds and class orders).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from hvpl.evaluation.plots import _method_colors, _panels, _save

STEP_DIR = re.compile(r"^step(\d+)$")
NOT_LOSSES = ("iter", "lr", "time", "event")
TOTAL = "loss"


def read_train_log(path: Path) -> list:
    """The iteration lines of a train_log.jsonl (the "done" line and unreadable lines left out)."""
    lines = []
    for text in path.read_text().splitlines():
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "iter" in obj and "event" not in obj:
            lines.append(obj)
    return lines


def loss_curve_rows(run: Path, ids: dict) -> list:
    """Long-format {**ids, step, iter, term, value} of every loss value logged by the run's steps."""
    rows = []
    for step_dir in sorted(p for p in run.iterdir() if p.is_dir() and STEP_DIR.match(p.name)):
        log_path = step_dir / "train_log.jsonl"
        if not log_path.is_file():
            continue
        step = int(STEP_DIR.match(step_dir.name).group(1))
        for line in read_train_log(log_path):
            rows += [{**ids, "step": step, "iter": int(line["iter"]), "term": k, "value": float(v)}
                     for k, v in line.items() if k not in NOT_LOSSES and isinstance(v, (int, float))]
    return rows


def plot_loss_curves(curves: pd.DataFrame, plots_dir: Path) -> list:
    """``loss_curves_{scenario}.png`` per scenario (see module docstring); [] without logged losses."""
    if curves.empty:
        return []
    total = curves[curves["term"] == TOTAL]
    colors = _method_colors(total["method"].unique())
    written = []
    for scenario, g in total.groupby("scenario", sort=True):
        steps = sorted(g["step"].unique())
        fig, axes = _panels(len(steps))
        for ax, step in zip(axes, steps):
            mean = g[g["step"] == step].groupby(["method", "iter"])["value"].mean().reset_index()
            for method, m in mean.groupby("method"):
                ax.plot(m["iter"], m["value"], "-", color=colors[method], label=method)
            ax.set_title(f"{scenario}: step {step}")
            ax.set_xlabel("iteration")
            ax.set_ylabel("training loss")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, plots_dir / f"loss_curves_{scenario}.png"))
    return written
