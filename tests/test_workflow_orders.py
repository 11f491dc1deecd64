"""Class orders in the workflow, slow (real runs): results made by the code before orders existed are order 0's and
are not redone after the upgrade; a second order adds its own split and runs, and the summary, task matrices,
paper-style tables and TensorBoard logs cover both."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from workflow_helpers import (REPO, RUN_TIMEOUT_S, SUMMARY_COLUMNS, file_digest, job_counts, read_summary,
                              run_snakemake, snakemake_env)

# The last commit of the workflow before class orders (results layout results/{scenario}/{method}/seed{seed}/).
# main just before class orders were merged (after the parity fixes, which retrain every older run: their
# model files carry the tree-scan conv bias that no longer exists)
PRE_ORDERS_COMMIT = "3aad21f63c7d92cebb04ba253b825476714fbb26"
METHODS = ["hvpl", "finetune", "joint"]
# a few iterations per step: the point is the job graph, not the numbers
FAST = {"scenario.train.step0_iters": 4, "scenario.train.step0_lr_drop": 3, "scenario.train.inc_iters": 2,
        "scenario.train.checkpoint_period": 0, "scenario.train.ogc_samples": 4}
# jobs that a finished run must not redo (forgetting may: it gained the matrix.csv output; summarize must)
RUN_RULES = {"synthesize", "split", "train", "share_step0", "ogc_memory", "evaluate"}


def _config(path: Path, **changes) -> Path:
    cfg = {"scenarios": ["synth_smoke"], "methods": METHODS, "seeds": [0], "overrides": {"synth_smoke": FAST}}
    cfg.update(changes)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _old_code(dest: Path) -> Path:
    """The repository at PRE_ORDERS_COMMIT (Snakefile, workflow, profiles, config, envs, hvpl) with an `hvpl` command
    that runs that commit's package; skips when the commit is not in this checkout (e.g. a shallow clone)."""
    res = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", PRE_ORDERS_COMMIT, "Snakefile",
                          "workflow", "profiles", "config", "envs", "hvpl"], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"commit {PRE_ORDERS_COMMIT[:9]} not available: {res.stderr.decode()[:200]}")
    dest.mkdir()
    with tarfile.open(fileobj=io.BytesIO(res.stdout)) as tar:
        tar.extractall(dest, filter="data")
    (dest / "bin").mkdir()
    shim = dest / "bin" / "hvpl"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hvpl.cli "$@"\n')
    shim.chmod(0o755)
    return dest


def _planned_jobs(output: str) -> list:
    """(rule, output line) of every job of a dry run."""
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", output)
    jobs = []
    for b in blocks:
        m = re.match(r"(?:local)?rule (\w+):", b)
        if m:
            out = re.search(r"^\s+output: (.*)$", b, re.MULTILINE)
            jobs.append((m.group(1), out.group(1) if out else ""))
    return jobs


@pytest.fixture(scope="module")
def pre_orders_results(tmp_path_factory):
    """A results tree made entirely by the pre-orders code (its workflow and its `hvpl`)."""
    base = tmp_path_factory.mktemp("upgrade")
    old = _old_code(base / "old")
    work = base / "work"
    work.mkdir()
    cfg = _config(base / "config.yaml")
    env = snakemake_env()
    env["PATH"] = f"{old / 'bin'}:{env['PATH']}"
    env["PYTHONPATH"] = str(old)
    res = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(old / "Snakefile"), "--directory",
                          str(work), "--cores", "2", "all", "--configfile", str(cfg)], cwd=work, env=env,
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-5000:]
    assert not (work / "results" / "synth_smoke" / "hvpl" / "seed0" / "matrix.csv").exists()
    return work, cfg


@pytest.mark.slow
def test_results_made_before_orders_are_not_redone(pre_orders_results, tmp_path):
    work, cfg = pre_orders_results
    res = run_snakemake("-n", "all", "--configfile", str(cfg), workdir=work)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    jobs = _planned_jobs(out)
    assert not [j for j in jobs if j[0] in RUN_RULES], out[-3000:]
    # post-processing only: the new matrix.csv (forgetting), the summary and the overlay grids (visualize)
    assert set(job_counts(out)) <= {"forgetting", "summarize", "visualize", "all"}, job_counts(out)

    # with a second class order, order 0's runs stay as they are; order 1 gets its own split and runs
    two = _config(tmp_path / "two.yaml", orders=[0, 1])
    res = run_snakemake("-n", "all", "--configfile", str(two), workdir=work)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = _planned_jobs(res.stdout + res.stderr)
    redone = [j for j in jobs if j[0] in RUN_RULES and "@order1" not in j[1] and j[0] != "synthesize"]
    assert not redone, redone
    assert ("split", "results/data/synth_smoke@order1") in jobs
    assert not [j for j in jobs if j[0] == "synthesize"]       # the data is shared by every order


@pytest.mark.slow
def test_a_second_order_runs_and_is_summarized(pre_orders_results, tmp_path):
    """The upgraded workflow with orders [0, 1] on the pre-orders results: order 0's models are untouched, order 1
    is a permutation recorded in classes.json, and the summary, matrices, tables and TensorBoard logs have both."""
    work, _ = pre_orders_results
    results = work / "results"
    models = {p: file_digest(p) for p in results.rglob("model_final.pth")}
    two = _config(tmp_path / "two.yaml", orders=[0, 1])
    res = run_snakemake("--cores", "2", "all", "--configfile", str(two), workdir=work, timeout=RUN_TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-5000:]
    assert {p: file_digest(p) for p in models} == models

    own = json.loads((results / "data" / "synth_smoke" / "classes.json").read_text())
    perm = json.loads((results / "data" / "synth_smoke@order1" / "classes.json").read_text())
    assert perm["order"] == 1 and sorted(perm["class_order"]) == sorted(own["class_order"])
    assert perm["class_order"] != own["class_order"]
    split0 = json.loads((results / "data" / "synth_smoke" / "split_info.json").read_text())
    split1 = json.loads((results / "data" / "synth_smoke@order1" / "split_info.json").read_text())
    assert split1["test_video_ids"] == split0["test_video_ids"]       # orders differ in the class order only

    with open(results / "summary.csv") as f:
        header = f.readline().strip().split(",")
    assert header[:len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS and "order" in header and "BWT" in header
    rows = read_summary(results / "summary.csv")
    assert {(r["order"], r["method"]) for r in rows} == {(o, m) for o in ("0", "1") for m in METHODS}
    assert all(r["scenario"] == "synth_smoke" for r in rows)
    final = read_summary(results / "summary_final.csv")
    pooled = [r for r in final if r["order"] == "all" and r["method"] == "hvpl"]
    assert len(pooled) == 1 and pooled[0]["num_runs"] == "2" and pooled[0]["num_orders"] == "2"
    single = [r for r in final if r["order"] == "1" and r["method"] == "hvpl"]
    assert single[0]["AP_std"] == ""                                  # one run: no spread, not 0

    for order_dir in ("synth_smoke", "synth_smoke@order1"):
        matrix = (results / order_dir / "finetune" / "seed0" / "matrix.csv").read_text().splitlines()
        assert matrix[0] == "metric,step,task0,task1,task2" and len(matrix) == 1 + 2 * 3
    assert (results / "tables" / "synth_smoke.md").is_file() and (results / "tables" / "synth_smoke.tex").is_file()
    plots = {p.name for p in (results / "plots").glob("*.png")}
    assert {"task_matrix_synth_smoke.png", "loss_curves_synth_smoke.png"} <= plots
    assert "per_class_ap_synth_smoke@order1_hvpl.png" in plots

    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(results / "synth_smoke@order1" / "hvpl" / "seed0" / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/grad_norm", "train/iter_seconds", "eval/AP"} <= set(tags)
    steps = [e.step for e in acc.Scalars("train/loss")]
    n0, n_inc = FAST["scenario.train.step0_iters"], FAST["scenario.train.inc_iters"]
    assert steps == list(range(1, n0 + 2 * n_inc + 1))      # step 0 (shared) then steps 1, 2, one run
    # one eval/AP per step (the event files of the shared step 0 and of later steps are read in file order)
    assert sorted(e.step for e in acc.Scalars("eval/AP")) == [0, 1, 2]


def test_dry_run_plans_one_split_and_run_set_per_order(tmp_path):
    """orders [0, 2]: order 0 as before (plain folders, no --order), order 2 in its own folders with
    `hvpl split --order 2`; training reads the order's split under the plain scenario name."""
    from workflow_helpers import expected_counts, shell_commands

    cfg = _config(tmp_path / "orders.yaml", methods=["hvpl", "joint"], orders=[0, 2])
    res = run_snakemake("-n", "-p", "all", "--configfile", str(cfg), workdir=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    one = expected_counts(["hvpl", "joint"])
    assert job_counts(out) == {k: (v if k in ("synthesize", "summarize", "all") else 2 * v) for k, v in one.items()}
    splits = [ln for ln in out.splitlines() if "hvpl split --scenario" in ln]
    assert len(splits) == 2
    (plain,) = [s for s in splits if "--out results/data/synth_smoke " in s]
    (drawn,) = [s for s in splits if "--out results/data/synth_smoke@order2 " in s]
    assert "--order" not in plain and "--order 2 " in drawn
    train = [c for c in shell_commands(out) if c.startswith("hvpl train") and "@order2" in c]
    assert train and all("--scenario synth_smoke " in c for c in train)
    assert any("--train-json results/data/synth_smoke@order2/train_step1.json" in c
               and "--out-dir results/synth_smoke@order2/hvpl/seed0/step1 " in c
               and "--tensorboard results/synth_smoke@order2/hvpl/seed0/tensorboard " in c for c in train)
    evaluate = [c for c in shell_commands(out) if c.startswith("(hvpl predict")]
    assert all("--tensorboard results/" in c for c in evaluate)

    res = run_snakemake("-n", "-p", "all", "--configfile", str(cfg), "--config", "tensorboard=false",
                        workdir=tmp_path)
    assert res.returncode == 0 and "--tensorboard" not in res.stdout + res.stderr
