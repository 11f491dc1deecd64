"""The task matrix R[i][j] and the backward transfer BWT (hvpl.evaluation.task_matrix), on hand-made metrics."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hvpl.evaluation.task_matrix import backward_transfer, matrix_csv_text, read_matrix_csv, task_matrix

STEPS = [[1, 2], [3, 4], [5, 6]]
# R[i][j] = AP of task j after step i (the worked example of docs/evaluation.md)
R = [[0.60, None, None],
     [0.40, 0.50, None],
     [0.30, 0.20, 0.70]]


def metrics_of(rows, ar_scale=0.5):
    out = []
    for i, row in enumerate(rows):
        per_task = {str(j): {"AP": v, "AR1": v * ar_scale} for j, v in enumerate(row) if v is not None}
        out.append({"step": i, "stats": {"AP": 0.0}, "per_class": {}, "per_task": per_task})
    return out


def test_matrix_rows_come_from_per_task_and_leave_future_tasks_empty():
    assert task_matrix(metrics_of(R), STEPS, "AP") == R
    ar = task_matrix(metrics_of(R), STEPS, "AR1")
    assert ar[2] == [pytest.approx(0.15), pytest.approx(0.10), pytest.approx(0.35)] and ar[0][1:] == [None, None]


def test_bwt_is_the_mean_change_of_old_tasks():
    rows, steps = R, [0, 1, 2]
    assert backward_transfer(rows, steps, 0) is None
    assert backward_transfer(rows, steps, 1) == pytest.approx(0.40 - 0.60)
    # after step 2: ((0.30 - 0.60) + (0.20 - 0.50)) / 2 = -0.30
    assert backward_transfer(rows, steps, 2) == pytest.approx(-0.30)
    # an undefined value (-1: no test video) is left out, not counted as 0
    holed = [r[:] for r in R]
    holed[2][1] = -1.0
    assert backward_transfer(holed, steps, 2) == pytest.approx(0.30 - 0.60)
    # joint training has one step (not from 0): no BWT
    assert backward_transfer([R[2]], [2], 2) is None


def test_without_per_task_the_task_value_is_its_classes_mean():
    m = {"step": 1, "stats": {"AP": 0.0},
         "per_class": {"1": {"AP": 0.2, "AR1": 0.1}, "2": {"AP": 0.4, "AR1": 0.3}, "3": {"AP": -1.0, "AR1": -1.0},
                       "4": {"AP": -1.0, "AR1": -1.0}}}
    row = task_matrix([m], STEPS, "AP")[0]
    assert row[0] == pytest.approx(0.3) and row[1] == -1.0 and row[2] is None


def test_matrix_csv_round_trip(tmp_path):
    text = matrix_csv_text(metrics_of(R), STEPS)
    lines = text.splitlines()
    assert lines[0] == "metric,step,task0,task1,task2"
    assert lines[1] == "AP,0,0.600000,," and len(lines) == 1 + 2 * 3
    path = tmp_path / "matrix.csv"
    path.write_text(text)
    back = read_matrix_csv(path)
    assert back["AP"][2] == pytest.approx([0.3, 0.2, 0.7]) and back["AR1"][0][1] is None


def test_forgetting_cli_writes_the_matrix_and_bwt(tmp_path):
    paths = []
    for i, m in enumerate(metrics_of(R)):
        m["per_class"] = {str(c): {"AP": 0.5, "AR1": 0.5} for t in STEPS[:i + 1] for c in t}
        paths.append(tmp_path / f"m{i}.json")
        paths[-1].write_text(json.dumps(m))
    (tmp_path / "classes.json").write_text(json.dumps({"steps": STEPS}))
    res = subprocess.run([sys.executable, "-m", "hvpl.cli", "forgetting", "--metrics", *map(str, paths),
                          "--classes", str(tmp_path / "classes.json"), "--out", str(tmp_path / "f.json"),
                          "--matrix", str(tmp_path / "matrix.csv")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    per_step = json.loads((tmp_path / "f.json").read_text())["per_step"]
    assert per_step[0]["BWT"] is None and per_step[2]["BWT"] == pytest.approx(-0.30)
    assert per_step[2]["BWT_AR1"] == pytest.approx(-0.15)
    assert read_matrix_csv(tmp_path / "matrix.csv")["AP"][1][:2] == pytest.approx([0.4, 0.5])


def test_the_worked_example_of_docs_evaluation():
    """docs/evaluation.md's example: every forgetting measure after step 2, by hand there."""
    from hvpl.evaluation.forgetting import compute_forgetting

    per_class = [{1: 0.70, 2: 0.50}, {1: 0.50, 2: 0.30, 3: 0.60, 4: 0.40},
                 {1: 0.40, 2: 0.20, 3: 0.10, 4: 0.30, 5: 0.70, 6: 0.70}]
    metrics = metrics_of(R, ar_scale=1.0)
    for m, pc in zip(metrics, per_class):
        m["per_class"] = {str(c): {"AP": v, "AR1": v} for c, v in pc.items()}
    final = compute_forgetting(metrics, STEPS)["per_step"][2]
    assert final["FAP"] == pytest.approx((0.30 / 0.70 / 2 + 0.30 / 0.50 / 2 + 0.50 / 0.60 + 0.10 / 0.40) / 4)
    assert final["FAP"] == pytest.approx(0.3994, abs=5e-5)
    assert final["FAP_task"] == pytest.approx(0.425)
    assert final["F_AP"] == pytest.approx(0.30)
    assert final["BWT"] == pytest.approx(-0.30)
