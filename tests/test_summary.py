"""summarize(): summary.csv columns and values, side tables and plots from fake run folders."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hvpl.evaluation.summary import BASE_PREFIX, COLUMNS, summarize
from hvpl.utils.errors import HVPLError

STEPS = [[1, 2, 3, 4], [5, 6], [7, 8]]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _dump(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def fake_metrics(step: int, base: float) -> dict:
    seen = [c for s in STEPS[:step + 1] for c in s]
    stats = {k: base for k in ("AP", "AP50", "AP75", "AP_small", "AR1", "AR10", "AR100", "AR_small")}
    stats.update({"AP50": base + 0.1, "AP75": base - 0.05, "AR1": base / 2, "AR10": base * 0.8})
    stats.update({k: -1.0 for k in ("AP_medium", "AP_large", "AR_medium", "AR_large")})
    return {"stats": stats, "per_class": {str(c): {"AP": base + 0.01 * c, "AR1": base} for c in seen},
            "per_task": {str(t): {"AP": base, "AR1": base} for t in range(len(STEPS))},
            "AP_old": -1.0 if step == 0 else base - 0.1, "AP_new": base + 0.1, "step": step, "seen_classes": seen}


def fake_run(results: Path, scenario: str, method: str, seed: int, steps: list, base: float) -> Path:
    run = results / scenario / method / f"seed{seed}"
    for t in steps:
        d = run / f"step{t}"
        _dump(d / "metrics.json", fake_metrics(t, base - 0.1 * t))
        log = [{"iter": 0, "loss": 1.0}, {"event": "done", "train_seconds": 10.0 + t, "iterations": 100,
                                           "trainable_params": 1000 * (t + 1), "total_params": 5000}]
        (d / "train_log.jsonl").write_text("\n".join(json.dumps(x) for x in log) + "\n")
    per_step = [{"step": t, "FAP": None if t == 0 or method == "joint" else 0.1 * t, "FAR1": None if t == 0 else 0.2,
                 "FAP_task": None if t == 0 else 0.3, "FAR1_task": None if t == 0 else 0.4,
                 "F_AP": None if t == 0 else 0.05 * t, "AP_old": 0.0, "AP_new": 0.0, "AP_all": 0.0} for t in steps]
    if method == "joint":
        per_step = [dict(e, FAP=None, FAR1=None, FAP_task=None, FAR1_task=None, F_AP=None) for e in per_step]
    _dump(run / "forgetting.json", {"per_step": per_step})
    return run


def fake_results(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    for scenario in ("synth_4-2", "synth_b"):
        classes = {"scenario": scenario, "dataset": "synthetic", "class_order": list(range(1, 9)), "steps": STEPS,
                   "categories": [{"id": c, "name": f"class{c}"} for c in range(1, 9)], "resplit": True,
                   "split_seed": 0}
        _dump(results / "data" / scenario / "classes.json", classes)
        _dump(results / "data" / scenario / "split_info.json", {"dataset": "synthetic", "resplit": True})
        for seed, shift in ((0, 0.0), (1, 0.02)):
            fake_run(results, scenario, "hvpl", seed, [0, 1, 2], 0.5 + shift)
            fake_run(results, scenario, "finetune", seed, [0, 1, 2], 0.4 + shift)
        fake_run(results, scenario, "joint", 0, [2], 0.7)
    # the workflow's shared step-0 runs are not reported
    fake_run(results, "synth_4-2", "_base_context", 0, [0], 0.9)
    return results


def test_skips_the_folders_the_workflow_names_shared_step0_runs():
    common = Path(__file__).resolve().parents[1] / "workflow" / "rules" / "common.smk"
    assert f'BASE_PREFIX = "{BASE_PREFIX}"\n' in common.read_text()


def test_summary_columns_and_values(tmp_path):
    results = fake_results(tmp_path)
    out = results / "summary.csv"
    df = summarize(results, out, results / "plots")
    csv = pd.read_csv(out)
    assert list(csv.columns[:len(COLUMNS)]) == COLUMNS
    assert {"FAP_task", "FAR1_task", "resplit"} <= set(csv.columns)
    # 2 scenarios x (2 methods x 2 seeds x 3 steps + joint 1 step)
    assert len(csv) == 2 * (2 * 2 * 3 + 1) == len(df)
    assert "_base_context" not in set(csv["method"])

    row = csv[(csv.scenario == "synth_4-2") & (csv.method == "hvpl") & (csv.seed == 1) & (csv.step == 1)].iloc[0]
    base = 0.52 - 0.1
    assert row["dataset"] == "synthetic" and row["num_classes"] == 6
    assert row["AP"] == pytest.approx(base) and row["AP50"] == pytest.approx(base + 0.1)
    assert row["AP75"] == pytest.approx(base - 0.05) and row["AR1"] == pytest.approx(base / 2)
    assert row["AR10"] == pytest.approx(base * 0.8) and row["AP_medium"] == -1.0
    assert row["AP_old"] == pytest.approx(base - 0.1) and row["AP_new"] == pytest.approx(base + 0.1)
    assert row["FAP"] == pytest.approx(0.1) and row["FAR1"] == pytest.approx(0.2) and row["F_AP"] == pytest.approx(0.05)
    assert row["FAP_task"] == pytest.approx(0.3)
    assert row["trainable_params"] == 2000 and row["train_seconds"] == pytest.approx(11.0)
    assert bool(row["resplit"]) is True

    step0 = csv[(csv.method == "hvpl") & (csv.step == 0)]
    assert step0["AP_old"].eq(-1.0).all()
    for col in ("FAP", "FAR1", "F_AP"):
        assert step0[col].isna().all()
    joint = csv[csv.method == "joint"]
    assert list(joint["step"]) == [2, 2] and joint["FAP"].isna().all() and (joint["num_classes"] == 8).all()
    # forgetting columns are written empty (not "None" / "nan") in the CSV text
    first_data_line = out.read_text().splitlines()[1].split(",")
    assert first_data_line[COLUMNS.index("FAP")] == ""


def test_side_tables_and_plots(tmp_path):
    results = fake_results(tmp_path)
    summarize(results, results / "summary.csv", results / "plots")
    final = pd.read_csv(results / "summary_final.csv")
    hvpl = final[(final.scenario == "synth_4-2") & (final.method == "hvpl")].iloc[0]
    assert hvpl["step"] == 2 and hvpl["num_seeds"] == 2
    assert hvpl["AP_mean"] == pytest.approx(((0.5 - 0.2) + (0.52 - 0.2)) / 2)
    assert hvpl["AP_std"] == pytest.approx(0.01)
    assert math.isnan(final[(final.method == "joint")].iloc[0]["FAP_mean"])
    per_class = pd.read_csv(results / "summary_per_class.csv")
    assert len(per_class[(per_class.scenario == "synth_4-2") & (per_class.method == "hvpl")
                         & (per_class.seed == 0) & (per_class.step == 1)]) == 6
    names = sorted(p.name for p in (results / "plots").iterdir())
    assert "ap_per_step.png" in names and "forgetting_fap.png" in names
    assert "per_class_ap_synth_4-2_hvpl.png" in names and "per_class_ap_synth_b_joint.png" in names
    assert not [n for n in names if not n.endswith(".png")]          # no temporary files left
    for name in names:
        assert (results / "plots" / name).read_bytes()[:8] == PNG_MAGIC


def test_explicit_runs_and_missing_files(tmp_path):
    results = fake_results(tmp_path)
    run = results / "synth_4-2" / "hvpl" / "seed0"
    (run / "forgetting.json").unlink()
    (run / "step1" / "train_log.jsonl").unlink()
    df = summarize(results, results / "s.csv", results / "p", runs=[str(run)])
    assert len(df) == 3 and set(df["method"]) == {"hvpl"}
    assert df["FAP"].isna().all()
    assert pd.isna(df.loc[df.step == 1, "trainable_params"].iloc[0])
    assert df.loc[df.step == 2, "trainable_params"].iloc[0] == 3000


def test_no_results_or_no_run_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(HVPLError, match="does not exist"):
        summarize(tmp_path / "missing", tmp_path / "s.csv", tmp_path / "p")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HVPLError, match="no run under"):
        summarize(tmp_path / "empty", tmp_path / "s.csv", tmp_path / "p")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_cli_writes_next_to_the_results_dir_by_default(tmp_path):
    results = fake_results(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = subprocess.run([sys.executable, "-m", "hvpl.cli", "summarize", "--results-dir", str(results)],
                         cwd=elsewhere, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (results / "summary.csv").is_file() and list((results / "plots").glob("*.png"))
    assert list(elsewhere.iterdir()) == []


def test_negative_forgetting_is_a_value_not_undefined():
    from hvpl.evaluation.summary import defined_values

    col = pd.Series([-1.0, -0.2, None, 0.3])
    assert list(defined_values(col, "F_AP")) == [-1.0, -0.2, 0.3]     # backward transfer down to -1
    assert list(defined_values(pd.Series([-1.0, None, 0.3]), "AP")) == [0.3]   # -1 = undefined for metrics


_DIE_WHILE_PLOTTING = """
import os, signal, sys
from pathlib import Path
import matplotlib.figure
def dying(self, fname, *args, **kwargs):   # half a plot written, then killed (SIGKILL: no clean-up runs)
    Path(fname).write_bytes(b"half a png")
    os.kill(os.getpid(), signal.SIGKILL)
matplotlib.figure.Figure.savefig = dying
from hvpl.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_summarize_leaves_nothing_that_the_next_run_keeps(tmp_path):
    """Issue 19 4.9: a killed summarize left .ap_per_step.png.*.tmp in plots/ for good. Its temporaries now carry
    the host and process id; the next run removes those of a process that is gone."""
    results = fake_results(tmp_path)
    args = ["summarize", "--results-dir", str(results)]
    (results / "plots").mkdir()
    killed = subprocess.run([sys.executable, "-c", _DIE_WHILE_PLOTTING, *args], capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr

    def leftovers():
        return [p for p in results.rglob("*") if p.name.endswith(".tmp") or ".stage-" in p.name]

    assert leftovers()        # what the kill left behind
    assert not (results / "summary.csv").exists()   # and no half summary: the tables wait for the plots
    done = subprocess.run([sys.executable, "-m", "hvpl.cli", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert leftovers() == []
    assert (results / "summary.csv").is_file() and (results / "plots" / "ap_per_step.png").read_bytes()[:8] == \
        PNG_MAGIC


def test_single_run_std_is_empty_not_zero(tmp_path):
    results = fake_results(tmp_path)
    summarize(results, results / "summary.csv", results / "plots")
    final = pd.read_csv(results / "summary_final.csv", keep_default_na=False)
    joint = final[(final.scenario == "synth_4-2") & (final.method == "joint")].iloc[0]
    assert joint["num_runs"] == 1 and joint["AP_std"] == "" and float(joint["AP_mean"]) == pytest.approx(0.7 - 0.2)


def test_class_orders_are_a_column_and_pooled_in_the_final_table(tmp_path):
    """A run of class order 1 (folder NAME@order1, its own classes.json) is the same scenario with order 1; the
    final table has one row per order (mean over seeds) and one over every seed and order (order "all")."""
    results = fake_results(tmp_path)
    classes = json.loads((results / "data" / "synth_4-2" / "classes.json").read_text())
    _dump(results / "data" / "synth_4-2@order1" / "classes.json", dict(classes, order=1))
    fake_run(results, "synth_4-2@order1", "hvpl", 0, [0, 1, 2], 0.6)
    summarize(results, results / "summary.csv", results / "plots")
    csv = pd.read_csv(results / "summary.csv")
    assert list(csv.columns[:len(COLUMNS)]) == COLUMNS and "order" in csv.columns
    mine = csv[(csv.scenario == "synth_4-2") & (csv.method == "hvpl")]
    assert sorted(set(zip(mine["order"], mine["seed"]))) == [(0, 0), (0, 1), (1, 0)]
    assert "synth_4-2@order1" not in set(csv["scenario"])
    final = pd.read_csv(results / "summary_final.csv", keep_default_na=False)
    rows = final[(final.scenario == "synth_4-2") & (final.method == "hvpl")].set_index("order")
    assert sorted(rows.index) == ["0", "1", "all"]
    assert rows.loc["all", "num_runs"] == 3 and rows.loc["all", "num_orders"] == 2
    aps = [0.5 - 0.2, 0.52 - 0.2, 0.6 - 0.2]
    assert float(rows.loc["all", "AP_mean"]) == pytest.approx(sum(aps) / 3)
    assert rows.loc["1", "AP_std"] == ""
    assert "all" not in set(final[final.method == "finetune"]["order"])     # one order: no pooled row
    per_class = pd.read_csv(results / "summary_per_class.csv")
    assert set(per_class[per_class.scenario == "synth_4-2"]["order"]) == {0, 1}
    plots = {p.name for p in (results / "plots").iterdir()}
    assert {"per_class_ap_synth_4-2@order1_hvpl.png", "task_matrix_synth_4-2.png",
            "loss_curves_synth_4-2.png"} <= plots
    assert (results / "tables" / "synth_4-2.md").is_file()


def test_bwt_column_from_the_task_matrix(tmp_path):
    results = fake_results(tmp_path)
    # task 0's AP: 0.5 after step 0, 0.3 after step 2 (fake_metrics: every task = the run's base - 0.1 t)
    summarize(results, results / "summary.csv", results / "plots")
    csv = pd.read_csv(results / "summary.csv")
    row = csv[(csv.scenario == "synth_4-2") & (csv.method == "hvpl") & (csv.seed == 0)].set_index("step")
    assert math.isnan(row.loc[0, "BWT"])
    assert row.loc[1, "BWT"] == pytest.approx(0.4 - 0.5)
    # after step 2: tasks 0 and 1: ((0.3 - 0.5) + (0.3 - 0.4)) / 2
    assert row.loc[2, "BWT"] == pytest.approx(-0.15)
    assert csv[csv.method == "joint"]["BWT"].isna().all()
