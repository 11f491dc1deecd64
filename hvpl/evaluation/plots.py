"""Plots of the summary tables (matplotlib Agg, PNG, written atomically).

- ``ap_per_step.png``: AP (%) after each step per method, mean over seeds (+- std band), one panel per
  scenario; joint training (a single step) is a star at its step with a dotted upper-bound line.
- ``forgetting_fap.png``: paper FAP (%) after each step k >= 1 per method, one panel per scenario.
- ``per_class_ap_{scenario}_{method}.png``: per-class AP (%) over the steps (mean over seeds); classes in
  class order, blank before a class is introduced; class order k >= 1: ``per_class_ap_{scenario}@order{k}_...``.
- ``task_matrix_{scenario}.png``: the task matrix R[i][j] (AP %, task j after step i), mean over seeds and
  orders, one panel per method.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from hvpl.evaluation.summary import defined_values  # noqa: E402
from hvpl.utils.io import atomic_path  # noqa: E402

PANEL_SIZE = (4.8, 3.6)       # inches per scenario panel
MAX_COLS = 3                  # panels per row
DPI = 110
JOINT = "joint"
PERCENT = 100.0
MAX_ANNOTATED_CELLS = 400     # heatmaps up to this size print their values


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _panels(n: int):
    cols = min(n, MAX_COLS)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _mean_std(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Per (method, step): mean and std over seeds of ``col``, undefined (-1 / empty) values dropped."""
    d = df[["method", "step", col]].copy()
    d[col] = defined_values(d[col], col)
    d = d.dropna(subset=[col])
    return d.groupby(["method", "step"])[col].agg(["mean", "std"]).reset_index().fillna({"std": 0.0})


def _method_colors(methods) -> dict:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % cmap.N) for i, m in enumerate(sorted(methods))}


def plot_metric_per_step(df: pd.DataFrame, col: str, ylabel: str, path: Path, colors: dict,
                         min_step: int = 0) -> Path | None:
    """One panel per scenario, one line per method (joint: star + dotted line); None when nothing to draw.

    ``colors``: {method: colour}, shared by every figure so that a method keeps its colour.
    """
    df = df[df["step"] >= min_step]
    scenarios = sorted(df["scenario"].unique())
    if not scenarios:
        return None
    fig, axes = _panels(len(scenarios))
    for ax, scenario in zip(axes, scenarios):
        stats = _mean_std(df[df["scenario"] == scenario], col)
        for method, g in stats.groupby("method"):
            y, err = g["mean"].to_numpy() * PERCENT, g["std"].to_numpy() * PERCENT
            if method == JOINT:
                ax.plot(g["step"], y, "*", ms=14, color=colors[method], label=method)
                ax.axhline(y[-1], ls=":", color=colors[method], lw=1)
                continue
            ax.plot(g["step"], y, "o-", color=colors[method], label=method)
            ax.fill_between(g["step"], y - err, y + err, color=colors[method], alpha=0.15, lw=0)
        ax.set_title(scenario)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        steps = sorted(df[df["scenario"] == scenario]["step"].unique())
        ax.set_xticks(steps)
        ax.grid(alpha=0.3)
        if stats.shape[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_per_class_heatmap(per_class: pd.DataFrame, classes: dict, scenario: str, method: str,
                           path: Path) -> Path | None:
    """Per-class AP (%) heatmap: rows = classes in class order, columns = steps; blank = not seen / undefined."""
    d = per_class[(per_class["scenario"] == scenario) & (per_class["method"] == method)].copy()
    d["AP"] = pd.to_numeric(d["AP"], errors="coerce")
    d = d[d["AP"] > -1]
    if d.empty:
        return None
    table = d.groupby(["category_id", "step"])["AP"].mean().unstack("step")
    order = [c for c in (classes.get("class_order") or []) if c in table.index]
    order += [c for c in sorted(table.index) if c not in order]
    table = table.reindex(order)
    names = {c["id"]: c.get("name", str(c["id"])) for c in classes.get("categories", [])}
    values = np.ma.masked_invalid(table.to_numpy(dtype=float) * PERCENT)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * table.shape[1], 1.2 + 0.28 * table.shape[0]))
    im = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=PERCENT)
    ax.set_xticks(range(table.shape[1]), [str(s) for s in table.columns])
    ax.set_yticks(range(table.shape[0]), [f"{c} {names.get(c, '')}".strip() for c in table.index], fontsize=7)
    ax.set_xlabel("step")
    ax.set_title(f"per-class AP (%)\n{scenario} / {method}", fontsize=9)
    if table.size <= MAX_ANNOTATED_CELLS:
        for (i, j), v in np.ndenumerate(values.filled(np.nan)):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6,
                        color="black" if v > PERCENT / 2 else "white")
    fig.colorbar(im, ax=ax, fraction=0.08)
    fig.tight_layout()
    return _save(fig, path)


def _folder(scenario: str, order: int) -> str:
    return scenario if int(order) == 0 else f"{scenario}@order{int(order)}"


def _draw_matrix(ax, table: pd.DataFrame, title: str) -> None:
    values = np.ma.masked_invalid(table.to_numpy(dtype=float) * PERCENT)
    ax.imshow(values, cmap="viridis", vmin=0, vmax=PERCENT)
    ax.set_xticks(range(table.shape[1]), [str(j) for j in table.columns])
    ax.set_yticks(range(table.shape[0]), [str(i) for i in table.index])
    ax.set_xlabel("task j")
    ax.set_ylabel("after step i")
    ax.set_title(title, fontsize=9)
    if table.size <= MAX_ANNOTATED_CELLS:
        for (i, j), v in np.ndenumerate(values.filled(np.nan)):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="black" if v > PERCENT / 2 else "white")


def plot_task_matrices(matrix: pd.DataFrame, plots_dir: Path, metric: str = "AP") -> list:
    """``task_matrix_{scenario}.png`` per scenario from long-format entries (scenario, order, method, seed,
    metric, step, task, value); R[i][j] as mean over seeds and orders, blank for tasks not learned yet."""
    if matrix.empty:
        return []
    d = matrix[matrix["metric"] == metric]
    written = []
    for scenario, g in d.groupby("scenario", sort=True):
        methods = sorted(g["method"].unique())
        fig, axes = _panels(len(methods))
        for ax, method in zip(axes, methods):
            table = g[g["method"] == method].groupby(["step", "task"])["value"].mean().unstack("task")
            runs = g[g["method"] == method][["order", "seed"]].drop_duplicates().shape[0]
            _draw_matrix(ax, table, f"{method}: {metric} (%) of task j, {runs} run(s)")
        fig.suptitle(f"task matrix, {scenario}", fontsize=10)
        fig.tight_layout()
        written.append(_save(fig, plots_dir / f"task_matrix_{scenario}.png"))
    return written


def make_plots(df: pd.DataFrame, per_class: pd.DataFrame, classes: dict, plots_dir: Path) -> list:
    """Write every plot; ``classes`` = {(scenario, order): classes.json dict}. Returns the paths written."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    colors = _method_colors(df["method"].unique())
    written = [plot_metric_per_step(df, "AP", "AP (%)", plots_dir / "ap_per_step.png", colors),
               plot_metric_per_step(df[df["method"] != JOINT], "FAP", "FAP (%)", plots_dir / "forgetting_fap.png",
                                    colors, min_step=1)]
    for (scenario, order, method), _ in per_class.groupby(["scenario", "order", "method"]):
        one = per_class[per_class["order"] == order]
        written.append(plot_per_class_heatmap(one, classes.get((scenario, int(order)), {}), scenario, method,
                                              plots_dir / f"per_class_ap_{_folder(scenario, order)}_{method}.png"))
    return [p for p in written if p is not None]
