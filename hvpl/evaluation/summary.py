"""``hvpl summarize``: every run's per-step metrics -> results/summary.csv (+ per-class and final tables) and plots.

Reads, per run folder ``{results}/{scenario}/{method}/seed{seed}``:
``step{t}/metrics.json``, ``forgetting.json`` (run level), the last line of ``step{t}/train_log.jsonl``
(``{"event": "done", "train_seconds", "iterations", "trainable_params", "total_params"}``), and per scenario
``{results}/data/{scenario}/classes.json`` and ``split_info.json``.

Writes (all atomically):
- ``out_csv``: one row per (scenario, method, seed, step); the columns of pipeline.md first (``COLUMNS``),
  then ``EXTRA_COLUMNS``. Metrics are fractions, -1 where undefined; forgetting columns are empty at step 0
  and wherever forgetting is undefined (joint runs, missing forgetting.json).
- ``summary_per_class.csv`` next to it: per-class AP/AR1 of every step (long format).
- ``summary_final.csv`` next to it: mean/std over seeds of the final step per (scenario, method).
- ``plots_dir/*.png``: see :mod:`hvpl.evaluation.plots`.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_files, atomic_path, read_json, staged_dir
from hvpl.utils.logging import log

COLUMNS = ["scenario", "dataset", "method", "seed", "step", "num_classes", "AP", "AP50", "AP75", "AR1", "AR10",
           "AP_old", "AP_new", "FAP", "FAR1", "F_AP", "trainable_params", "train_seconds"]
EXTRA_COLUMNS = ["AP_small", "AP_medium", "AP_large", "AR100", "AR_small", "AR_medium", "AR_large",
                 "FAP_task", "FAR1_task", "total_params", "iterations", "num_steps", "final_step", "resplit",
                 "split_seed", "init_weights"]
STAT_COLUMNS = ["AP", "AP50", "AP75", "AR1", "AR10", "AP_small", "AP_medium", "AP_large", "AR100", "AR_small",
                "AR_medium", "AR_large"]
FORGETTING_COLUMNS = ["FAP", "FAR1", "F_AP", "FAP_task", "FAR1_task"]
FINAL_METRICS = ["AP", "AP50", "AP75", "AR1", "AR10", "AP_old", "AP_new", "FAP", "FAR1", "F_AP"]
SKIP_SCENARIOS = {"data", "plots"}
BASE_PREFIX = "_base_"     # shared step-0 runs of the workflow (common.smk BASE_PREFIX) are not reported
STEP_DIR = re.compile(r"^step(\d+)$")
SEED_DIR = re.compile(r"^seed(\d+)$")


def find_runs(results_dir: Path) -> list:
    """Every ``{scenario}/{method}/seed{seed}`` folder under ``results_dir`` holding a step with metrics."""
    runs = []
    for run in sorted(results_dir.glob("*/*/seed*")):
        scenario, method = run.parent.parent.name, run.parent.name
        if scenario in SKIP_SCENARIOS or method.startswith(BASE_PREFIX) or not SEED_DIR.match(run.name):
            continue
        if any(run.glob("step*/metrics.json")):
            runs.append(run)
    return runs


def last_json_line(path: Path):
    """The last non-empty line of a JSON-lines file as a dict, or None if the file is missing/unreadable."""
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    try:
        obj = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _scenario_info(results_dir: Path, scenario: str, cache: dict) -> dict:
    """classes.json + split_info.json of a scenario (empty dicts when absent)."""
    if scenario not in cache:
        d = results_dir / "data" / scenario
        classes = read_json(d / "classes.json") if (d / "classes.json").is_file() else {}
        split = read_json(d / "split_info.json") if (d / "split_info.json").is_file() else {}
        cache[scenario] = {"classes": classes, "split": split}
    return cache[scenario]


def _step_dirs(run: Path) -> list:
    """[(t, folder)] of the run's steps that have a metrics.json, by step index."""
    found = [(int(STEP_DIR.match(p.name).group(1)), p) for p in run.iterdir()
             if p.is_dir() and STEP_DIR.match(p.name) and (p / "metrics.json").is_file()]
    return sorted(found)


def _forgetting_by_step(run: Path) -> dict:
    path = run / "forgetting.json"
    if not path.is_file():
        return {}
    data = read_json(path)
    return {e["step"]: e for e in data.get("per_step", [])} if isinstance(data, dict) else {}


def _num_seen(metrics: dict, steps: list, t: int):
    if "seen_classes" in metrics:
        return len(metrics["seen_classes"])
    if steps:
        return sum(len(s) for s in steps[:t + 1])
    return len(metrics.get("per_class", {}))


def run_rows(results_dir: Path, run: Path, cache: dict) -> tuple:
    """(summary rows, per-class rows) of one run folder."""
    scenario, method, seed = run.parent.parent.name, run.parent.name, int(SEED_DIR.match(run.name).group(1))
    info = _scenario_info(results_dir, scenario, cache)
    steps = info["classes"].get("steps") or []
    forgetting = _forgetting_by_step(run)
    rows, class_rows = [], []
    for t, step_dir in _step_dirs(run):
        metrics = read_json(step_dir / "metrics.json")
        if not isinstance(metrics, dict) or "stats" not in metrics:
            raise HVPLError(f"{step_dir / 'metrics.json'}: stats: missing (not an 'hvpl evaluate' output)")
        done = last_json_line(step_dir / "train_log.jsonl") or {}
        forg = forgetting.get(t, {})
        row = {"scenario": scenario, "dataset": info["classes"].get("dataset", info["split"].get("dataset", "")),
               "method": method, "seed": seed, "step": t, "num_classes": _num_seen(metrics, steps, t)}
        row.update({k: metrics["stats"].get(k, -1.0) for k in STAT_COLUMNS})
        row["AP_old"] = metrics.get("AP_old", forg.get("AP_old", -1.0))
        row["AP_new"] = metrics.get("AP_new", forg.get("AP_new", -1.0))
        row.update({k: (forg.get(k) if t > 0 else None) for k in FORGETTING_COLUMNS})
        row.update({"trainable_params": done.get("trainable_params"), "train_seconds": done.get("train_seconds"),
                    "total_params": done.get("total_params"), "iterations": done.get("iterations"),
                    "num_steps": len(steps) or None, "final_step": bool(steps) and t == len(steps) - 1,
                    "resplit": info["classes"].get("resplit", info["split"].get("resplit")),
                    "split_seed": info["classes"].get("split_seed", info["split"].get("split_seed")),
                    "init_weights": done.get("init_weights")})
        rows.append(row)
        for cat, vals in metrics.get("per_class", {}).items():
            class_rows.append({"scenario": scenario, "method": method, "seed": seed, "step": t,
                               "category_id": int(cat), "AP": vals.get("AP"), "AR1": vals.get("AR1")})
    return rows, class_rows


def defined_values(values: pd.Series, column: str) -> pd.Series:
    """The defined entries of a column: metrics use -1 for undefined; forgetting columns use empty (F_AP may be
    any number in [-1, 1]: a negative value is backward transfer)."""
    vals = pd.to_numeric(values, errors="coerce").dropna()
    return vals if column in FORGETTING_COLUMNS else vals[vals > -1]


def final_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean/std over seeds of each (scenario, method)'s last step; -1 (undefined) values are left out."""
    if df.empty:
        return pd.DataFrame(columns=["scenario", "method", "step", "num_seeds"])
    last = df[df["step"] == df.groupby(["scenario", "method"])["step"].transform("max")]
    out = []
    for (scenario, method), g in last.groupby(["scenario", "method"], sort=True):
        row = {"scenario": scenario, "dataset": g["dataset"].iloc[0], "method": method,
               "step": int(g["step"].iloc[0]), "num_seeds": len(g)}
        for k in FINAL_METRICS:
            vals = defined_values(g[k], k)
            row[f"{k}_mean"] = vals.mean() if len(vals) else None
            row[f"{k}_std"] = vals.std(ddof=0) if len(vals) else None
        out.append(row)
    return pd.DataFrame(out)


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def write_outputs(tables: dict, plots_dir: Path, draw) -> list:
    """Write ``tables`` ({path: DataFrame}) and the plots ``draw(folder)`` makes, all or none: the CSVs as
    temporaries and the plots into a staged folder, renamed into place once everything is written. Returns
    what ``draw`` returned."""
    with atomic_files(list(tables)) as temps, staged_dir(plots_dir) as stage:
        for df, tmp in zip(tables.values(), temps):
            df.to_csv(tmp, index=False)
        return draw(stage)


def summarize(results_dir: Path, out_csv: Path, plots_dir: Path, runs: list | None = None) -> pd.DataFrame:
    """Collect every run (or the given run folders) into summary.csv, the side tables and the plots."""
    from hvpl.evaluation.plots import make_plots

    results_dir, out_csv = Path(results_dir), Path(out_csv)
    if not results_dir.is_dir():
        raise HVPLError(f"summarize: results folder {results_dir} does not exist")
    run_dirs = find_runs(results_dir) if not runs else [Path(r) for r in runs]
    if not run_dirs:
        raise HVPLError(f"summarize: no run under {results_dir} (runs are {results_dir}/<scenario>/<method>/seed<N>/"
                        "step<t>/metrics.json)")
    cache: dict = {}
    rows, class_rows = [], []
    for run in run_dirs:
        if not run.is_dir() or not SEED_DIR.match(run.name):
            raise HVPLError(f"summarize: run folder {run} does not exist or is not named seed<N>")
        r, c = run_rows(results_dir, run, cache)
        rows += r
        class_rows += c
    df = pd.DataFrame(rows, columns=COLUMNS + EXTRA_COLUMNS)
    df = df.sort_values(["scenario", "method", "seed", "step"], kind="mergesort").reset_index(drop=True)
    per_class = pd.DataFrame(class_rows, columns=["scenario", "method", "seed", "step", "category_id", "AP", "AR1"])
    names = {sc: info["classes"] for sc, info in cache.items()}
    tables = {out_csv: df, out_csv.parent / "summary_per_class.csv": per_class,
              out_csv.parent / "summary_final.csv": final_table(df)}
    written = write_outputs(tables, Path(plots_dir), lambda folder: make_plots(df, per_class, names, folder))
    log(f"summarize: {len(df)} rows from {len(run_dirs)} runs -> {out_csv}; {len(written)} plots in {plots_dir}")
    return df
