"""The Snakemake workflow, fast: lint, the job graph of the smoke and default configs (dry runs), rule inputs and
arguments, resources from the profiles, config validation. The real runs are in test_workflow_runs.py."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from hvpl.config import load_scenario, num_steps
from hvpl.continual.methods import METHODS

from workflow_helpers import (REPO, SMOKE, expected_counts, field, job_counts, rule_blocks, run_snakemake,
                             shell_commands, snakemake_env, train_commands, write_config)


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
    """As `make run` starts it: no --configfile, so config/config.yaml of the working directory (a copy in an empty
    one, so that results already in the repository do not change the plan)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    res = run_snakemake("-n", "all", workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert cfg["scenarios"] == ["synth_4-2"] and cfg["seeds"] == [0]
    assert job_counts(res.stdout + res.stderr) == expected_counts(cfg["methods"], "synth_4-2")




def test_visualize_jobs_draw_every_method_and_the_main_one_across_steps_off_the_summary_path(tmp_path):
    res = run_snakemake("-n", "all", "--configfile", str(SMOKE), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    methods = yaml.safe_load(SMOKE.read_text())["methods"]
    n = num_steps(load_scenario("synth_smoke"))
    (block,) = rule_blocks(out, "visualize")
    inputs = field(block, "input").split(", ")
    run = "results/synth_smoke/{}/seed0/step{}/predictions.json"
    assert {run.format(m, n - 1) for m in methods} | {run.format("hvpl", t) for t in range(n)} <= set(inputs)
    assert {i for i in inputs if "/step" in i and not i.endswith(f"step{n - 1}/predictions.json")} == \
        {run.format("hvpl", t) for t in range(n - 1)}   # earlier steps: only the main method's
    outputs = field(block, "output").split(", ")
    assert sorted(outputs) == ["results/visuals/synth_smoke/seed0/methods", "results/visuals/synth_smoke/seed0/steps"]
    (summary,) = rule_blocks(out, "summarize")
    assert not any("visuals" in i for i in field(summary, "input").split(", "))
    (everything,) = rule_blocks(out, "all")
    assert set(outputs) <= set(field(everything, "input").split(", "))

    off = run_snakemake("-n", "all", "--configfile", str(write_config(tmp_path / "c.yaml", visual_videos=0)),
                        workdir=tmp_path)
    assert off.returncode == 0, off.stderr
    assert "visualize" not in job_counts(off.stdout + off.stderr)


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
    (split_block,) = rule_blocks(out, "split")
    assert f"input: {root / 'train.json'}" in split_block
    assert f"--data-root {root} " in split_block


def _synthesize_and_split(cfg, tmp_path):
    res = run_snakemake("-n", "all", "--configfile", str(cfg), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    (synth,) = rule_blocks(out, "synthesize")
    (split,) = rule_blocks(out, "split")
    return synth, split


def test_synthetic_overrides_generate_their_own_data(tmp_path):
    """Configs asking for other synthetic settings (e.g. a second results_dir) do not share, and so regenerate,
    one data folder: the scenario file's settings go to resources/synth/NAME, overridden ones to NAME@DIGEST."""
    synth, split = _synthesize_and_split(SMOKE, tmp_path)
    assert field(synth, "output").startswith("resources/synth/synth_smoke/train.json")
    assert "--num-videos" not in synth
    assert "--data-root resources/synth/synth_smoke " in split

    folders = {}
    for n in (20, 30):
        cfg = write_config(tmp_path / f"o{n}.yaml", results_dir=f"results{n}",
                           overrides={"synth_smoke": {"scenario.synthetic.num_videos": n}})
        synth, split = _synthesize_and_split(cfg, tmp_path)
        root = re.match(r"(resources/synth/synth_smoke@[0-9a-f]{16})/train\.json", field(synth, "output")).group(1)
        assert f"--out {root} --num-videos {n} " in synth
        assert f"--data-root {root} " in split and f"input: {root}/train.json" in split
        folders[root] = n
    assert len(folders) == 2
    # the job itself: the scenario's name is taken from the folder name, the override applied
    res = run_snakemake("--cores", "1", f"{root}/train.json", "--configfile", str(cfg), workdir=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(json.loads((tmp_path / root / "train.json").read_text())["videos"]) == 30

    res = run_snakemake("-n", "resources/synth/synth_smoke@0123456789abcdef/train.json", "--configfile", str(cfg),
                        workdir=tmp_path)
    assert res.returncode != 0 and "that this config does not set" in res.stdout + res.stderr


def test_every_job_reading_split_files_depends_on_the_split_folder(tmp_path):
    """The split rule's output is the scenario's folder (its number of files depends on the scenario); every
    job that reads a split file lists the folder as input and names the file in its command."""
    res = run_snakemake("-n", "all", "--configfile", str(SMOKE), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    folder = "results/data/synth_smoke"
    (split,) = rule_blocks(out, "split")
    assert field(split, "output") == folder
    assert f"--out {folder} " in split
    readers = {"train": "--train-json", "ogc_memory": "--train-json", "evaluate": "--test-json",
               "forgetting": "--classes"}
    for rule, flag in readers.items():
        blocks = rule_blocks(out, rule)
        assert blocks, rule
        for block in blocks:
            assert folder in field(block, "input").split(", "), block
            assert re.search(rf"{flag} {folder}/\w+\.json", block), block
    (summary,) = rule_blocks(out, "summarize")
    assert folder in field(summary, "input").split(", ")


def test_a_scenario_kept_outside_the_repository_is_planned(tmp_path):
    """$HVPL_CONFIG_DIR points the workflow at scenario files of one's own (here one training with COCO
    pseudo-videos, whose files the split writes into the same folder)."""
    import shutil

    config_dir = tmp_path / "config"
    shutil.copytree(REPO / "config", config_dir)
    scenario = yaml.safe_load((config_dir / "scenarios" / "synth_smoke.yaml").read_text())
    scenario.update(name="synth_coco", data=dict(scenario["data"], use_coco=True, coco_ratio=0.5))
    (config_dir / "scenarios" / "synth_coco.yaml").write_text(yaml.safe_dump(scenario))
    cfg = write_config(tmp_path / "coco.yaml", scenarios=["synth_coco"], methods=["hvpl", "joint"])
    res = run_snakemake("-n", "all", "--configfile", str(cfg), workdir=tmp_path,
                        env={"HVPL_CONFIG_DIR": str(config_dir)})
    # copied from synth_smoke, its data.root still names synth_smoke's generated data
    assert res.returncode != 0 and "data.root is resources/synth/synth_smoke" in res.stdout + res.stderr
    scenario["data"]["root"] = "resources/synth/synth_coco"
    (config_dir / "scenarios" / "synth_coco.yaml").write_text(yaml.safe_dump(scenario))
    res = run_snakemake("-n", "all", "--configfile", str(cfg), workdir=tmp_path,
                        env={"HVPL_CONFIG_DIR": str(config_dir)})
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert job_counts(out) == expected_counts(["hvpl", "joint"])   # synth_smoke's steps
    (split,) = rule_blocks(out, "split")
    # the scenario is the split folder's name before "@order" (class orders), taken in the shell
    assert "key=synth_coco; hvpl split --scenario ${key%%@*} " in split
    assert field(split, "output") == "results/data/synth_coco"


def test_a_configfile_replaces_the_default_config(tmp_path):
    """--configfile FILE is the whole config (keys it leaves out take the schema's defaults): nothing of
    config/config.yaml (here overrides and data_roots of another scenario) reaches its runs."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump({
        "scenarios": ["synth_4-2"], "methods": ["hvpl"], "seeds": [5], "device": "cpu", "results_dir": "elsewhere",
        "overrides": {"synth_4-2": {"scenario.train.inc_iters": 7}}, "data_roots": {"synth_4-2": "/no/such"}}))
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"scenarios": ["synth_smoke"], "methods": ["hvpl"]}))
    res = run_snakemake("-n", "all", "--configfile", str(mine), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert job_counts(out) == expected_counts(["hvpl"])
    assert "--set" not in out and "synth_4-2" not in out and "elsewhere" not in out
    assert "results/synth_smoke/hvpl/seed0/step2/metrics.json" in out   # defaults: seeds [0], results_dir results


def test_step_specific_overrides_reach_only_the_steps_that_read_them(tmp_path):
    """A changed inc_iters must not rerun (so not reach) step 0 or the OGC memory, nor step0_iters the
    incremental steps; the OGC memory gets only the keys it reads."""
    cfg = write_config(tmp_path / "o.yaml", methods=["hvpl", "joint"], overrides={"synth_smoke": {
        "scenario.train.inc_iters": 7, "scenario.train.step0_iters": 9, "scenario.train.lr": 0.001,
        "scenario.train.ogc_samples": 5}})
    res = run_snakemake("-n", "all", "--configfile", str(cfg), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    for block in rule_blocks(res.stdout + res.stderr, "train"):
        cmd = block.split("Shell command: ", 1)[-1]
        first = "--step 0 " in cmd or "joint" in field(block, "output")
        assert "scenario.train.lr=0.001" in cmd
        assert ("scenario.train.step0_iters=9" in cmd) == first, cmd
        assert ("scenario.train.inc_iters=7" in cmd) == (not first), cmd
    memories = rule_blocks(res.stdout + res.stderr, "ogc_memory")
    assert memories
    for block in memories:
        cmd = block.split("Shell command: ", 1)[-1]
        assert "scenario.train.ogc_samples=5" in cmd
        assert "inc_iters" not in cmd and "step0_iters" not in cmd and "scenario.train.lr" not in cmd, cmd


def test_threads_and_gpus_per_training_step_come_from_the_profile(tmp_path):
    """Default: `hvpl train --threads 1` (profiles/default set-threads); a profile's train gpu=N on CUDA launches
    the step under torchrun with N processes and the rule's threads per process."""
    res = run_snakemake("-n", "--cores", "8", "all", "--configfile", str(SMOKE), workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    plain = train_commands(res.stdout + res.stderr)
    assert plain and all(c.split("Shell command: ")[-1].startswith("hvpl train --threads 1 ") for c in plain)
    res = run_snakemake("-n", "--cores", "8", "all", "--configfile", str(SMOKE), "--config", "device=cuda",
                        "--set-resources", "train:gpu=2", "--set-threads", "train=3", workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    multi = train_commands(out)
    assert len(multi) == len(plain)
    assert all("hvpl claim-gpus --count 2 -- torchrun --standalone --nproc_per_node 2 -m hvpl.cli train --threads 6 "
               in c for c in multi)
    assert "gpu=2, cpus_per_gpu=3" in out
    # a command-line --set-resources replaces the profile's table, yet every rule keeps its profile sizes
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())["set-resources"]
    for rule in ("train", "evaluate", "ogc_memory", "forgetting", "summarize", "share_step0", "synthesize"):
        for block in rule_blocks(out, rule):
            res = field(block, "resources")
            assert f"mem_mb={profile[rule]['mem_mb']}," in res and f"runtime={profile[rule]['runtime']}" in res, res


def test_cuda_device_requests_gpus(tmp_path):
    res = run_snakemake("-n", "all", "--configfile", str(SMOKE), "--config", "device=cuda", workdir=tmp_path)
    assert res.returncode == 0, res.stderr
    blocks = (res.stdout + res.stderr).split("\nrule ")
    for block in blocks[1:]:
        rule = block.split(":", 1)[0]
        gpu = "gpu=1" in block and "cpus_per_gpu=" in block
        assert gpu == (rule in ("train", "ogc_memory", "evaluate")), block
        # each GPU job claims its own GPU (Snakemake's local executor does not assign one)
        cmd = block.split("Shell command: ", 1)[-1]
        assert ("hvpl claim-gpus --count 1 -- hvpl " in cmd) == gpu, block
    pinned = run_snakemake("-n", "all", "--configfile", str(SMOKE), "--config", "device=cuda:1", workdir=tmp_path)
    assert pinned.returncode == 0 and "claim-gpus" not in pinned.stdout + pinned.stderr


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


def test_config_errors_are_one_line_naming_the_file(tmp_path):
    """A YAML syntax error in the default config names the file and line (Snakemake's own message names neither);
    a schema error names the --configfile and the key, without Snakemake's dump of the schema."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text("scenarios: [synth_smoke\nmethods: [hvpl]\n")
    res = run_snakemake("-n", "all", workdir=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "config/config.yaml: invalid YAML: expected ',' or ']', but got ':' (line 2, column 8)" in out
    cfg = write_config(tmp_path / "bad.yaml", bogus_key=1)
    res = run_snakemake("-n", "all", "--configfile", str(cfg), workdir=tmp_path)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Failed validating" not in out and len(out.splitlines()) < 10
    assert f"{cfg}: unknown keys ['bogus_key'] (known: scenarios, methods," in out


@pytest.mark.parametrize("edit, message", [
    (lambda sc: sc.update(class_order=[1, 2, 3, 4, 5, 5]),
     "class_order = [1, 2, 3, 4, 5, 5]: expected null or a non-empty list of distinct integers"),
    (lambda sc: sc.update(class_order=[1, 2, 3, 4, 5]), "class_order lists 5 category ids, num_classes is 6"),
    (lambda sc: sc.update(train=None), "train = None: expected a mapping"),
])
def test_a_bad_scenario_file_stops_the_plan_naming_file_and_key(tmp_path, edit, message):
    """Checked against the scenario schema when the workflow is parsed (`snakemake -n`), not after synth/split ran
    or as an InputFunctionException."""
    scenarios = tmp_path / "config" / "scenarios"
    scenarios.mkdir(parents=True)
    scenario = yaml.safe_load((REPO / "config" / "scenarios" / "synth_smoke.yaml").read_text())
    edit(scenario)
    (scenarios / "synth_smoke.yaml").write_text(yaml.safe_dump(scenario))
    res = run_snakemake("-n", "all", "--configfile", str(SMOKE), workdir=tmp_path,
                        env={"HVPL_CONFIG_DIR": str(tmp_path / "config")})
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "InputFunctionException" not in out
    assert f"{scenarios / 'synth_smoke.yaml'}: {message}" in out


@pytest.mark.parametrize("target, message", [
    ("results/synth_smoke/hvpl/seed0/step5/metrics.json", "synth_smoke/hvpl: no step 5 (its steps: 0, 1, 2)"),
    ("results/synth_smoke/joint/seed0/step0/metrics.json", "synth_smoke/joint: no step 0 (its steps: 2)"),
    ("results/no_such/hvpl/seed0/step1/metrics.json", "scenario 'no_such' is not configured"),
    pytest.param("results/synth_smoke/hvpl/seed0/step3/ogc_basis.pt", "synth_smoke/hvpl: no step 3",
                 marks=pytest.mark.slow),
    pytest.param("results/synth_smoke/_base_joint/seed0/step0/model_final.pth", "no method trains a shared step 0",
                 marks=pytest.mark.slow),
])
def test_a_target_the_config_cannot_make_stops_the_plan_naming_it(tmp_path, target, message):
    res = run_snakemake("-n", target, "--configfile", str(SMOKE), workdir=tmp_path)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr, res.stderr[-2000:]


@pytest.mark.parametrize("spelling", [["all", "--configfile", "config/smoke.yaml"],
                                      ["--configfile=config/smoke.yaml", "all"]])
def test_documented_smoke_command_parses(spelling):
    """The documented smoke command, run in the repository itself (target first, or `--configfile=F`: the option
    takes several files). No stand-in config file named `all` may sit at the root to absorb the other order."""
    assert not (REPO / "all").exists()
    res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", *spelling], cwd=REPO,
                         env=snakemake_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "smoke" in (res.stdout + res.stderr) or "Nothing to be done" in (res.stdout + res.stderr)


def test_workflow_profile_and_slurm_profile_set_disjoint_keys():
    """profiles/default wins per top-level key under --profile slurm: a key in both would silently lose the
    cluster's value (e.g. latency-wait)."""
    default = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    slurm = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert not set(default) & set(slurm)


@pytest.fixture(scope="module")
def finished_hvpl_run(tmp_path_factory):
    """A finished run of hvpl on synth_smoke, faked: every output of the plan as an empty file or folder made in
    the plan's order, then recorded by `snakemake --touch` (seconds instead of a real run; for dry runs)."""
    workdir = tmp_path_factory.mktemp("finished")
    config = write_config(workdir / "c.yaml", methods=["hvpl"])
    res = run_snakemake("-n", "all", "--configfile", str(config), workdir=workdir)
    assert res.returncode == 0, res.stderr
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", res.stdout + res.stderr):
        for path in filter(None, (p.strip() for p in field(block, "output").split(","))):
            target = workdir / path
            if "." in target.name:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()
            else:                                  # directory outputs: the split, generated frames, plots
                target.mkdir(parents=True, exist_ok=True)
    res = run_snakemake("--touch", "--cores", "1", "all", "--configfile", str(config), workdir=workdir)
    assert res.returncode == 0, res.stderr
    return workdir


@pytest.mark.parametrize("deleted, makes", [
    ("step1/predictions.json", "evaluate"),
    ("step2/ogc_basis.pt", "ogc_memory"),
    ("step0/model_final.pth", "share_step0"),
    ("step1/train_log.jsonl", "train"),
])
def test_all_makes_a_deleted_file_of_a_finished_run_again(finished_hvpl_run, tmp_path, deleted, makes):
    """Issue 19 4.7: `all` said "Nothing to be done" with these deleted. It now asks for every file a run folder
    reports, so the job that makes the file is planned (a training job restores its finished record when its
    inputs are unchanged, hvpl.engine.checkpoint)."""
    workdir = tmp_path / "work"
    shutil.copytree(finished_hvpl_run, workdir, copy_function=shutil.copy2, symlinks=True)   # mtimes kept
    config = workdir / "c.yaml"
    res = run_snakemake("-n", "all", "--configfile", str(config), workdir=workdir)
    assert "Nothing to be done" in res.stdout + res.stderr, res.stdout[-3000:]
    (workdir / "results" / "synth_smoke" / "hvpl" / "seed0" / deleted).unlink()
    res = run_snakemake("-n", "all", "--configfile", str(config), workdir=workdir)
    assert res.returncode == 0, res.stderr
    blocks = rule_blocks(res.stdout + res.stderr, makes)
    assert any(f"results/synth_smoke/hvpl/seed0/{deleted}" in field(b, "output") for b in blocks), res.stdout[-3000:]
