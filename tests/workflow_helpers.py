"""Shared by the workflow tests: running Snakemake on the repository's Snakefile, configs, dry-run parsing.

Expected job counts and paths are derived from the method registry and the scenario file, not from the
workflow's own helpers.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

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
        "split": 1,
        "train": len(bases) + len(incremental) * (n - 1) + sum(m.joint for m in ms),
        "share_step0": len(incremental),
        "ogc_memory": sum(m.ogc for m in incremental) * (n - 1),
        "evaluate": len(incremental) * n + sum(m.joint for m in ms),
        "forgetting": len(ms),
        "summarize": 1,
        "visualize": 1,   # per (scenario, seed), with the default visual_videos > 0
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


def train_commands(output: str) -> list[str]:
    return [line for line in output.splitlines() if "-m hvpl.cli train" in line or "hvpl train --" in line]


def rule_blocks(output: str, rule: str) -> list[str]:
    """The dry-run blocks of the jobs of ``rule``."""
    return [b for b in re.split(r"\n(?=rule \w+:)", output) if b.startswith(f"rule {rule}:")]


def field(block: str, name: str) -> str:
    match = re.search(rf"^\s+{name}: (.*)$", block, re.MULTILINE)
    return match.group(1) if match else ""
