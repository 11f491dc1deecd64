"""The smoke workflow through `snakemake --profile slurm` on a real single-node SLURM started for the test.

tests/slurm/start_slurm.sh installs slurm-wlm + munge when missing (apt-get, needs root), writes a one-node
slurm.conf (this host, 2 CPUs, no accounting storage, select/cons_tres) and starts munged, slurmctld and slurmd;
tests/slurm/stop_slurm.sh shuts them down afterwards, also when the test fails. Run with `make test-slurm`
(`pytest -m slurm`).
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hvpl.config import load_scenario, num_steps
from hvpl.continual.methods import METHODS

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "slurm"
SMOKE = REPO / "config" / "smoke.yaml"
SUMMARY_COLUMNS = ["scenario", "dataset", "method", "seed", "step", "num_classes", "AP", "AP50", "AP75", "AR1",
                   "AR10", "AP_old", "AP_new", "FAP", "FAR1", "F_AP", "trainable_params", "train_seconds"]
RUN_TIMEOUT_S = 3600


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    can_install = os.geteuid() == 0 and shutil.which("apt-get")
    if not (shutil.which("slurmctld") or can_install):
        pytest.skip("no SLURM and no way to install it (needs root + apt-get)")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd needs root")
    env = dict(os.environ, HVPL_SLURM_DIR=str(tmp_path_factory.mktemp("slurm_state")))
    try:
        start = subprocess.run(["bash", str(SCRIPTS / "start_slurm.sh")], env=env, capture_output=True, text=True,
                               timeout=900)
        assert start.returncode == 0, start.stdout + start.stderr
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop_slurm.sh")], env=env, capture_output=True, text=True,
                       timeout=120)


def test_smoke_workflow_through_the_slurm_profile(slurm_cluster, tmp_path):
    env = dict(slurm_cluster)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--directory", str(tmp_path), "all",
           "--configfile", str(SMOKE)]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    assert "submitted with SLURM jobid" in out, "jobs did not go through sbatch"

    summary = tmp_path / "results" / "summary.csv"
    with open(summary, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS
    methods = yaml.safe_load(SMOKE.read_text())["methods"]
    n = num_steps(load_scenario("synth_smoke"))
    expected = sum(1 if METHODS[m].joint else n for m in methods)
    assert len(rows) - 1 == expected
    assert list((tmp_path / "results" / "plots").glob("*.png"))
