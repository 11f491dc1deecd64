"""The Snakemake workflow: lint, the job graph of the smoke config, config validation (fast); the smoke run,
no-op rerun, resume after SIGKILL and a failing job (slow, real runs in temporary working directories).

Expected job counts and paths are derived here from the method registry and the scenario file, not from
the workflow's own helpers.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hvpl.config import load_scenario, num_steps
from hvpl.continual.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "config" / "smoke.yaml"
SUMMARY_COLUMNS = ["scenario", "dataset", "method", "seed", "step", "num_classes", "AP", "AP50", "AP75", "AR1",
                   "AR10", "AP_old", "AP_new", "FAP", "FAR1", "F_AP", "trainable_params", "train_seconds"]
METRIC_COLUMNS = ["num_classes", "AP", "AP50", "AP75", "AR1", "AR10", "AP_old", "AP_new", "FAP", "FAR1", "F_AP",
                  "trainable_params"]
RUN_TIMEOUT_S = 1800


def snakemake_env() -> dict:
    """The venv's bin first on PATH (the rules call `hvpl`), one torch thread per process."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def snakemake_cmd(*args: str, workdir: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    if workdir is not None:
        cmd += ["--directory", str(workdir)]
    return cmd + list(args)


def run_snakemake(*args: str, workdir: Path | None = None, timeout: float = 300,
                  env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_cmd(*args, workdir=workdir), cwd=workdir or REPO,
                          env={**snakemake_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout)


def write_config(path: Path, **changes) -> Path:
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg.update(changes)
    path.write_text(yaml.safe_dump(cfg))
    return path


def job_counts(output: str) -> dict:
    """The 'Job stats' table of a dry run as {rule: count}."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def expected_counts(methods: list[str], scenario: str = "synth_smoke") -> dict:
    n = num_steps(load_scenario(scenario))
    ms = [METHODS[m] for m in methods]
    incremental = [m for m in ms if not m.joint]
    bases = {m.base_variant for m in incremental}
    counts = {
        "synthesize": 1,
        f"split_{scenario.replace('-', '_')}": 1,
        "train": len(bases) + len(incremental) * (n - 1) + sum(m.joint for m in ms),
        "share_step0": len(incremental),
        "ogc_memory": sum(m.ogc for m in incremental) * (n - 1),
        "evaluate": len(incremental) * n + sum(m.joint for m in ms),
        "forgetting": len(ms),
        "summarize": 1,
        "all": 1,
    }
    return {k: v for k, v in counts.items() if v}


def shell_commands(output: str) -> list[str]:
    pattern = re.compile(r"Shell command: (\(?hvpl .*)")
    return [m.group(1) for m in map(pattern.search, output.splitlines()) if m]


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_summary(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------- fast


def test_lint_is_clean():
    res = run_snakemake("--lint", "--configfile", str(SMOKE))
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "Lints for" not in out, out
    assert "Congratulations" in out


def test_dry_run_lists_the_smoke_jobs(tmp_path):
    res = run_snakemake("-n", "all", "--configfile", str(SMOKE), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    methods = yaml.safe_load(SMOKE.read_text())["methods"]
    assert set(methods) == set(METHODS), "the smoke config runs every method"
    assert job_counts(out) == expected_counts(methods)

    cmds = shell_commands(out)
    n = num_steps(load_scenario("synth_smoke"))
    train = [c for c in cmds if c.startswith("hvpl train")]
    # step 0 is trained once per base variant, in its own folder
    step0 = [c for c in train if "--step 0 " in c]
    variants = {m.base_variant for m in METHODS.values() if not m.joint}
    assert sorted(re.search(r"/(_base_\w+)/", c).group(1) for c in step0) == sorted(f"_base_{v}" for v in variants)
    for name, method in METHODS.items():
        mine = [c for c in train if f"--method {name} " in c and "/_base_" not in c]
        if method.joint:
            assert len(mine) == 1 and f"--step {n - 1} " in mine[0] and "train_all.json" in mine[0]
            assert "--prev-model" not in mine[0]
            continue
        assert len(mine) == n - 1
        for t in range(1, n):
            (cmd,) = [c for c in mine if f"--step {t} " in c]
            assert f"--prev-model results/synth_smoke/{name}/seed0/step{t - 1}/model_final.pth" in cmd
            assert f"--train-json results/data/synth_smoke/train_step{t}.json" in cmd
            assert f"--out-dir results/synth_smoke/{name}/seed0/step{t} " in cmd
            assert f"--ckpt-dir results/synth_smoke/{name}/seed0/checkpoints/step{t} " in cmd
            has_basis = f"--ogc-basis results/synth_smoke/{name}/seed0/step{t}/ogc_basis.pt" in cmd
            assert has_basis == method.ogc
    evaluate = [c for c in cmds if c.startswith("(hvpl predict")]
    assert any("--test-json results/data/synth_smoke/test_step2.json" in c and "/joint/seed0/step2/" in c
               for c in evaluate)
    assert all("--classes results/data/synth_smoke/classes.json" in c for c in evaluate)


def test_dry_run_of_the_default_config(tmp_path):
    # in an empty working directory, so that results already in the repository do not change the plan
    res = run_snakemake("-n", "all", "--configfile", str(REPO / "config" / "config.yaml"), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert cfg["scenarios"] == ["synth_4-2"] and cfg["seeds"] == [0]
    assert job_counts(res.stdout + res.stderr) == expected_counts(cfg["methods"], "synth_4-2")


def _train_commands(output: str) -> list[str]:
    return [line for line in output.splitlines() if "-m hvpl.cli train" in line or "hvpl train --" in line]


def test_split_of_a_given_dataset_depends_on_its_files(tmp_path):
    """A dataset given by `data_roots` is not generated; the split job lists its train.json as input (so a newer
    dataset file reruns the split) and reads that root."""
    from hvpl.data.synthetic import generate_synthetic

    root = tmp_path / "given"
    generate_synthetic(root, num_classes=6, num_videos=12, num_frames=2, height=32, width=32, max_instances=1,
                       seed=0)
    cfg = write_config(tmp_path / "given.yaml", data_roots={"synth_smoke": str(root)})
    res = run_snakemake("-n", "all", "--configfile", str(cfg), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert "rule synthesize" not in out
    split_block = out.split("rule split_synth_smoke:", 1)[1].split("\nrule ", 1)[0]
    assert f"input: {root / 'train.json'}" in split_block
    assert f"--data-root {root} " in split_block


def test_coco_pseudo_video_files_are_split_outputs_and_training_inputs(tmp_path):
    """With data.use_coco the split declares every coco_step{t}.json + coco_all.json, and each training step
    depends on its own (a scenario file of its own: data.* cannot be overridden from the workflow config)."""
    import shutil

    config_dir = tmp_path / "config"
    shutil.copytree(REPO / "config", config_dir)
    scenario = yaml.safe_load((config_dir / "scenarios" / "synth_smoke.yaml").read_text())
    scenario.update(name="synth_coco", data=dict(scenario["data"], use_coco=True, coco_ratio=0.5))
    (config_dir / "scenarios" / "synth_coco.yaml").write_text(yaml.safe_dump(scenario))
    cfg = write_config(tmp_path / "coco.yaml", scenarios=["synth_coco"], methods=["hvpl", "joint"])
    res = run_snakemake("-n", "all", "--configfile", str(cfg), workdir=tmp_path,
                        env={"HVPL_CONFIG_DIR": str(config_dir)})
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    split = out.split("rule split_synth_coco:", 1)[1].split("\nrule ", 1)[0]
    n = num_steps(scenario)
    for name in [f"coco_step{t}.json" for t in range(n)] + ["coco_all.json"]:
        assert f"results/data/synth_coco/{name}" in split
    trains = [_field(b, "input") for b in _rule_blocks(out, "train")]
    assert len(trains) == n + 1   # the shared step 0, steps 1.., joint's one step
    for name in [f"coco_step{t}.json" for t in range(n)] + ["coco_all.json"]:
        assert sum(f"results/data/synth_coco/{name}" in inputs for inputs in trains) == 1
    assert all(("coco_all.json" in inputs) == ("train_all.json" in inputs) for inputs in trains)


def _rule_blocks(output: str, rule: str) -> list[str]:
    """The dry-run blocks of the jobs of ``rule``."""
    return [b for b in re.split(r"\n(?=rule \w+:)", output) if b.startswith(f"rule {rule}:")]


def _field(block: str, name: str) -> str:
    match = re.search(rf"^\s+{name}: (.*)$", block, re.MULTILINE)
    return match.group(1) if match else ""


def test_step_specific_overrides_reach_only_the_steps_that_read_them(tmp_path):
    """A changed inc_iters must not rerun (so not reach) step 0, nor step0_iters the incremental steps."""
    cfg = write_config(tmp_path / "o.yaml", methods=["hvpl", "joint"], overrides={"synth_smoke": {
        "scenario.train.inc_iters": 7, "scenario.train.step0_iters": 9, "scenario.train.lr": 0.001}})
    res = run_snakemake("-n", "all", "--configfile", str(cfg), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    for block in _rule_blocks(res.stdout + res.stderr, "train") + _rule_blocks(res.stdout + res.stderr,
                                                                                 "ogc_memory"):
        cmd = block.split("Shell command: ", 1)[-1]
        first = "--step 0 " in cmd or "joint" in _field(block, "output")
        assert "scenario.train.lr=0.001" in cmd
        assert ("scenario.train.step0_iters=9" in cmd) == first, cmd
        assert ("scenario.train.inc_iters=7" in cmd) == (not first), cmd


def test_threads_and_gpus_per_training_step_come_from_the_profile(tmp_path):
    """Default: `hvpl train --threads 1` (profiles/default set-threads); a profile's train gpu=N on CUDA launches
    the step under torchrun with N processes and the rule's threads per process."""
    res = run_snakemake("-n", "--cores", "8", "all", "--configfile", str(SMOKE), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    plain = _train_commands(res.stdout + res.stderr)
    assert plain and all(c.split("Shell command: ")[-1].startswith("hvpl train --threads 1 ") for c in plain)
    res = run_snakemake("-n", "--cores", "8", "all", "--configfile", str(SMOKE), "--config", "device=cuda",
                        "--set-resources", "train:gpu=2", "--set-threads", "train=3", workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    multi = _train_commands(out)
    assert len(multi) == len(plain)
    assert all("torchrun --standalone --nproc_per_node 2 -m hvpl.cli train --threads 6 " in c for c in multi)
    assert "gpu=2, cpus_per_gpu=3" in out
    # a command-line --set-resources replaces the profile's table, yet every rule keeps its profile sizes
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())["set-resources"]
    for rule in ("train", "evaluate", "ogc_memory", "forgetting", "summarize", "share_step0", "synthesize"):
        for block in _rule_blocks(out, rule):
            res = _field(block, "resources")
            assert f"mem_mb={profile[rule]['mem_mb']}," in res and f"runtime={profile[rule]['runtime']}" in res, res


def test_cuda_device_requests_gpus(tmp_path):
    res = run_snakemake("-n", "all", "--configfile", str(SMOKE), "--config", "device=cuda", workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    blocks = (res.stdout + res.stderr).split("\nrule ")
    for block in blocks[1:]:
        rule = block.split(":", 1)[0]
        gpu = "gpu=1" in block and "cpus_per_gpu=" in block
        assert gpu == (rule in ("train", "ogc_memory", "evaluate")), block


@pytest.mark.parametrize("change, key", [
    ({"bogus_key": 1}, "bogus_key"),
    ({"methods": ["hvpl", "not_a_method"]}, "not_a_method"),
    ({"scenarios": ["no_such_scenario"]}, "scenarios"),
    ({"overrides": {"synth_smoke": {"scenario.train.no_such_key": 3}}}, "overrides.synth_smoke"),
    ({"overrides": {"synth-smoke": {"scenario.train.inc_iters": 3}}}, "overrides.synth-smoke"),
    ({"data_roots": {"synth_smoke": "/no/such/folder"}}, "data_roots.synth_smoke"),
    # the same checks for the other keys, in the slow suite (each case is a Snakemake start)
    pytest.param({"seeds": [-1]}, "seeds", marks=pytest.mark.slow),
    pytest.param({"threads": 2}, "threads", marks=pytest.mark.slow),   # moved to profiles (set-threads)
    pytest.param({"device": "tpu"}, "device", marks=pytest.mark.slow),
    pytest.param({"overrides": {"synth_smoke": {"scenario.train.inc_iters": "abc"}}},
                 "overrides.synth_smoke", marks=pytest.mark.slow),
    pytest.param({"data_roots": {"synth_4-2": "/tmp"}}, "data_roots.synth_4-2", marks=pytest.mark.slow),
    pytest.param({"overrides": {"synth_smoke": {"model.hidden_dim": 7}}}, "cannot be built",
                 marks=pytest.mark.slow),
    pytest.param({"overrides": {"synth_smoke": {"scenario.num_classes": 8}}},
                 "overrides.synth_smoke.scenario.num_classes", marks=pytest.mark.slow),
])
def test_invalid_config_stops_before_any_job(tmp_path, change, key):
    cfg = write_config(tmp_path / "bad.yaml", **change)
    res = run_snakemake("--cores", "1", "all", "--configfile", str(cfg), workdir=tmp_path)
    assert res.returncode != 0
    assert key in res.stderr, res.stderr
    made = {p.name for p in tmp_path.iterdir()}
    assert not made & {"results", "resources", "logs"}, made


# ---------------------------------------------------------------------------------------------- slow


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
    assert list((workdir / "benchmarks").rglob("train_step0.tsv"))


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
    step1_log = (workdir / "logs" / "synth_smoke" / "hvpl" / "seed0" / "train_step1.log").read_text()
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
    target = "results/data/synth_smoke/classes.json"
    res = run_snakemake("--cores", "2", target, "--configfile", str(cfg), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    (split / "train_step0.json").write_text('{"videos": [')      # corrupt step-0 training data
    res = run_snakemake("--cores", "2", "all", "--configfile", str(cfg), workdir=tmp_path)
    assert res.returncode != 0
    log = "logs/synth_smoke/_base_context/seed0/train_step0.log"
    assert log in res.stderr, res.stderr[-3000:]
    assert "train_step0.json" in (tmp_path / log).read_text()
    results = tmp_path / "results"
    assert not list(results.rglob("model_final.pth"))
    assert not list(results.rglob("metrics.json"))
    assert not (results / "summary.csv").exists()


def test_documented_smoke_command_parses():
    """pipeline.md's exact `snakemake --cores 2 --configfile config/smoke.yaml all` (argparse gives `all` to
    --configfile; the empty config file `all` at the root makes that harmless and `all` the default target)."""
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile",
                          "config/smoke.yaml", "all"], cwd=REPO, env=snakemake_env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "smoke" in (res.stdout + res.stderr) or "Nothing to be done" in (res.stdout + res.stderr)
