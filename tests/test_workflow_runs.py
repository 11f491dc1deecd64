"""The Snakemake workflow, slow (real runs in temporary working directories): the smoke run and its summary,
the report, no-op rerun, resume after SIGKILL of the whole process group, a step finished after Ctrl-C kept,
deleted files made again without training, a failing job."""
from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from hvpl.config import load_scenario, num_steps
from hvpl.continual.methods import METHODS

from workflow_helpers import (METRIC_COLUMNS, REPO, RUN_TIMEOUT_S, SMOKE, SUMMARY_COLUMNS, file_digest, read_summary,
                             run_snakemake, snakemake_cmd, snakemake_env, write_config)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The whole smoke workflow, uninterrupted, in a fresh working directory."""
    workdir = tmp_path_factory.mktemp("smoke")
    start = time.time()
    res = run_snakemake("--cores", "2", "all", "--configfile", str(SMOKE), workdir=workdir,
                        timeout=RUN_TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-5000:]
    return workdir, time.time() - start


@pytest.mark.slow
def test_smoke_run_writes_the_summary(smoke_run):
    workdir, _ = smoke_run
    summary = workdir / "results" / "summary.csv"
    rows = read_summary(summary)
    with open(summary, newline="") as f:
        header = next(csv.reader(f))
    assert header[:len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS
    cfg = yaml.safe_load(SMOKE.read_text())
    n = num_steps(load_scenario("synth_smoke"))
    expected = {(m, str(t)) for m in cfg["methods"] for t in ([n - 1] if METHODS[m].joint else range(n))}
    assert {(r["method"], r["step"]) for r in rows} == expected
    for r in rows:
        for col in ("AP", "AP50", "AR1"):
            assert float(r[col]) == -1 or 0.0 <= float(r[col]) <= 1.0
        if r["step"] == "0":
            assert r["FAP"] == "" and r["F_AP"] == ""
    assert list((workdir / "results" / "plots").glob("*.png"))
    for m in cfg["methods"]:
        run = workdir / "results" / "synth_smoke" / m / "seed0"
        assert (run / "forgetting.json").is_file()
        for t in ([n - 1] if METHODS[m].joint else range(n)):
            for name in ("model_final.pth", "predictions.json", "metrics.json", "train_log.jsonl"):
                assert (run / f"step{t}" / name).is_file(), run / f"step{t}" / name
            assert (run / f"step{t}" / "ogc_basis.pt").is_file() == (METHODS[m].ogc and t >= 1)
    assert list((workdir / "results" / "benchmarks").rglob("train_step0.tsv"))


@pytest.mark.slow
def test_report_holds_the_summary_and_plots(smoke_run, tmp_path):
    """`snakemake --report report.zip` (pipeline.md) after a run: the summary table and every plot are in it."""
    import zipfile

    workdir, _ = smoke_run
    report = tmp_path / "report.zip"
    res = run_snakemake("--report", str(report), "--configfile", str(SMOKE), workdir=workdir)
    assert res.returncode == 0, res.stderr
    names = zipfile.ZipFile(report).namelist()
    assert any(n.endswith("summary.csv") for n in names), names
    plots = {p.name for p in (workdir / "results" / "plots").glob("*.png")}
    assert plots and plots <= {Path(n).name for n in names}


@pytest.mark.slow
def test_rerun_after_completion_starts_no_job(smoke_run):
    workdir, _ = smoke_run
    models = {p: (p.stat().st_mtime_ns, file_digest(p)) for p in (workdir / "results").rglob("model_final.pth")}
    res = run_snakemake("--cores", "2", "all", "--configfile", str(SMOKE), workdir=workdir)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "Nothing to be done" in out, out
    assert "rule train" not in out and "localrule" not in out
    assert {p: (p.stat().st_mtime_ns, file_digest(p)) for p in models} == models


@pytest.mark.slow
@pytest.mark.parametrize("edit, reruns", [
    # an incremental-only setting: steps >= 1, not the shared step 0, the split or the OGC memories
    (lambda sc: sc["train"].update(inc_iters=sc["train"]["inc_iters"] + 1), {"train"}),
    # an OGC setting: the memories (steps >= 1 then retrain because their basis input is redone)
    (lambda sc: sc["train"].update(ogc_samples=sc["train"]["ogc_samples"] + 1), {"ogc_memory", "train"}),
    # a data-side key: the split (Snakemake names the first reason only: the jobs after it are planned because
    # their input, the split, is redone, step 0 included)
    (lambda sc: sc.update(class_order=list(range(sc["num_classes"], 0, -1))), {"split"}),
])
def test_editing_the_scenario_file_reruns_what_reads_the_change(smoke_run, tmp_path, edit, reruns):
    """The scenario file, edited (here a copy found first through $HVPL_CONFIG_DIR): a dry run plans the jobs
    whose settings changed, with "params changed" as the reason."""
    workdir, _ = smoke_run
    scenario = yaml.safe_load((REPO / "config" / "scenarios" / "synth_smoke.yaml").read_text())
    edit(scenario)
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "synth_smoke.yaml").write_text(yaml.safe_dump(scenario))
    res = run_snakemake("-n", "all", "--configfile", str(SMOKE), workdir=workdir,
                        env={"HVPL_CONFIG_DIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    blocks = re.split(r"\n(?=(?:local)?rule \w+:)", out)
    changed = {re.match(r"(?:local)?rule (\w+):", b).group(1) for b in blocks
               if re.match(r"(?:local)?rule \w+:", b) and re.search(r"reason: .*[Pp]arams have changed", b)}
    assert changed == reruns, out[-3000:]
    step0 = [b for b in out.split("\nrule ") if b.startswith("train:") and "--step 0 " in b]
    assert bool(step0) == ("split" in reruns)


def _interrupted_step(run: Path, step: int) -> bool:
    ckpts = run / "checkpoints" / f"step{step}"
    has_ckpt = ckpts.is_dir() and any(re.fullmatch(r"ckpt_\d+\.pt", p.name) for p in ckpts.iterdir())
    return has_ckpt and not (run / f"step{step}" / "model_final.pth").exists()


@pytest.mark.slow
def test_resume_after_sigkill(smoke_run, tmp_path):
    """Kill the whole process group while step 1 trains (step 0 finished); the same command finishes the
    run, keeps step 0, resumes step 1 from its checkpoint and matches the uninterrupted run's metrics."""
    ref_dir, _ = smoke_run
    cfg = write_config(tmp_path / "resume.yaml", methods=["hvpl"],
                       overrides={"synth_smoke": {"scenario.train.checkpoint_period": 3}})
    workdir = tmp_path / "work"
    workdir.mkdir()
    cmd = snakemake_cmd("--cores", "2", "all", "--configfile", str(cfg), workdir=workdir)
    run = workdir / "results" / "synth_smoke" / "hvpl" / "seed0"
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=snakemake_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        deadline = time.time() + RUN_TIMEOUT_S
        while not _interrupted_step(run, 1):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p: (p.stat().st_mtime_ns, file_digest(p)) for p in (workdir / "results").rglob("model_final.pth")}
    assert run / "step0" / "model_final.pth" in finished

    res = subprocess.run(cmd, cwd=workdir, env=snakemake_env(), capture_output=True, text=True,
                         timeout=RUN_TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-5000:]
    for path, state in finished.items():
        assert (path.stat().st_mtime_ns, file_digest(path)) == state, f"{path} was retrained"
    step1_log = (workdir / "results" / "logs" / "synth_smoke" / "hvpl" / "seed0" / "train_step1.log").read_text()
    start = re.search(r"iterations from (\d+)", step1_log)     # the trainer's start line
    assert start and int(start.group(1)) > 0, step1_log[-2000:]

    ref = {(r["method"], r["step"]): r for r in read_summary(ref_dir / "results" / "summary.csv")}
    got = read_summary(workdir / "results" / "summary.csv")
    assert {r["method"] for r in got} == {"hvpl"} and len(got) == num_steps(load_scenario("synth_smoke"))
    for r in got:
        want = ref[(r["method"], r["step"])]
        for col in METRIC_COLUMNS:
            assert r[col] == want[col], (r["step"], col, r[col], want[col])


@pytest.mark.slow
def test_failing_job_stops_with_its_log_and_nothing_downstream(tmp_path):
    cfg = write_config(tmp_path / "fail.yaml", methods=["eclipse"])
    split = tmp_path / "results" / "data" / "synth_smoke"
    target = "results/data/synth_smoke"   # the split rule's folder
    res = run_snakemake("--cores", "2", target, "--configfile", str(cfg), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    (split / "train_step0.json").write_text('{"videos": [')      # corrupt step-0 training data
    res = run_snakemake("--cores", "2", "all", "--configfile", str(cfg), workdir=tmp_path)
    assert res.returncode != 0
    log = "results/logs/synth_smoke/_base_context/seed0/train_step0.log"
    assert log in res.stderr, res.stderr[-3000:]
    assert "train_step0.json" in (tmp_path / log).read_text()
    results = tmp_path / "results"
    assert not list(results.rglob("model_final.pth"))
    assert not list(results.rglob("metrics.json"))
    assert not (results / "summary.csv").exists()


def _default_sigint() -> None:
    """In the child: SIGINT raises KeyboardInterrupt again (a shell's background job starts with it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
def test_a_step_finished_after_ctrl_c_is_kept_for_the_rerun(tmp_path):
    """Issue 19 4.1: SIGINT to Snakemake's main process (Ctrl-C, a job manager's stop) while a step trains: the
    job runs to its end, but Snakemake counts it as incomplete and the rerun deletes its outputs. The rerun
    restores them from the step's finished record in seconds (same bytes) instead of training from iteration 0."""
    methods = ["finetune"]
    cfg = write_config(tmp_path / "sigint.yaml", methods=methods, overrides={"synth_smoke": {
        "scenario.train.step0_iters": 40, "scenario.train.step0_lr_drop": 30,
        "scenario.train.checkpoint_period": 5}})
    workdir = tmp_path / "work"
    workdir.mkdir()
    run = workdir / "results" / "synth_smoke" / f"_base_{METHODS[methods[0]].base_variant}" / "seed0"
    target = str((run / "step0" / "model_final.pth").relative_to(workdir))
    cmd = snakemake_cmd("--cores", "1", target, "--configfile", str(cfg), workdir=workdir)
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=workdir, env=snakemake_env(), stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=_default_sigint)
        deadline = time.time() + RUN_TIMEOUT_S
        while not _interrupted_step(run, 0):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)        # the main process only, as `kill -INT <pid>` does
        assert proc.wait(timeout=RUN_TIMEOUT_S) != 0
    first = (tmp_path / "first.log").read_text()
    assert "Terminating processes on user request" in first, first[-3000:]
    model = run / "step0" / "model_final.pth"
    trained = file_digest(model)          # the job ran to its end; Snakemake counts it incomplete

    res = subprocess.run(cmd, cwd=workdir, env=snakemake_env(), capture_output=True, text=True,
                         timeout=RUN_TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-5000:]
    # Snakemake did rerun the job (its log is rewritten; the first one said "iterations from 0"), which trained
    # nothing
    log = (workdir / "results" / "logs" / "synth_smoke" / run.parent.name / "seed0" / "train_step0.log").read_text()
    assert "nothing trained" in log and "iterations from" not in log, log[-2000:]
    assert file_digest(model) == trained


@pytest.mark.slow
def test_deleted_files_of_a_finished_run_are_made_again_without_training(smoke_run, tmp_path):
    """Issue 19 4.7: with step 1's predictions, step 2's OGC basis and step 0's model deleted, `all` makes them
    again; the steps after step 0 are restored from their finished records (their inputs came back identical),
    so no iteration is trained and every model keeps its bytes."""
    workdir = tmp_path / "work"
    shutil.copytree(smoke_run[0], workdir, copy_function=shutil.copy2, symlinks=True)
    run = workdir / "results" / "synth_smoke" / "hvpl" / "seed0"
    kept = {p: file_digest(p) for p in run.glob("step*/*") if p.suffix in (".pth", ".pt")}
    deleted = [run / "step1" / "predictions.json", run / "step2" / "ogc_basis.pt", run / "step0" / "model_final.pth"]
    for path in deleted:
        path.unlink()
    start = time.time()
    res = run_snakemake("--cores", "2", "all", "--configfile", str(SMOKE), workdir=workdir, timeout=RUN_TIMEOUT_S)
    assert res.returncode == 0, res.stderr[-5000:]
    assert all(p.is_file() for p in deleted)
    assert {p: file_digest(p) for p in kept} == kept
    logs = workdir / "results" / "logs" / "synth_smoke" / "hvpl" / "seed0"
    for t in (1, 2):
        text = (logs / f"train_step{t}.log").read_text()
        assert "nothing trained" in text and "iterations from" not in text, text[-2000:]
    print(f"made again in {time.time() - start:.0f} s")
    res = run_snakemake("-n", "all", "--configfile", str(SMOKE), workdir=workdir)
    assert "Nothing to be done" in res.stdout + res.stderr
