"""Workflow timings: a full run's wall time with per-rule times (from the rules' benchmark files), the no-op
rerun time, and the speed-up of --cores 2 over --cores 1.

    python bench/bench_workflow.py                 # smoke config (config/smoke.yaml), a few minutes per run
    python bench/bench_workflow.py --default       # config/config.yaml (synth_4-2): slow, for a quiet machine
    python bench/bench_workflow.py --no-speedup    # skip the --cores 1 run

Each run starts from an empty temporary working directory. Prints a table and writes bench/out/workflow.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out" / "workflow.json"
STEP_RULES = re.compile(r"^(train|evaluate|ogc_memory)_step\d+$")


def run(workdir: Path, cores: int, configfile: Path) -> float:
    """Wall seconds of `snakemake --cores N all` in ``workdir``."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", str(cores), "all", "--configfile", str(configfile)]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        sys.exit(f"snakemake failed in {workdir}:\n{res.stderr[-4000:]}")
    return seconds


def rule_times(workdir: Path) -> dict:
    """{rule: {"jobs", "total_s", "mean_s", "max_s"}} from the benchmark TSVs (the `s` column)."""
    times = defaultdict(list)
    for tsv in (workdir / "results" / "benchmarks").rglob("*.tsv"):
        with open(tsv, newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        m = STEP_RULES.match(tsv.stem)
        rule = m.group(1) if m else tsv.stem
        times[rule] += [float(r["s"]) for r in rows]
    return {rule: {"jobs": len(v), "total_s": round(sum(v), 2), "mean_s": round(sum(v) / len(v), 2),
                   "max_s": round(max(v), 2)} for rule, v in sorted(times.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--default", action="store_true", help="measure config/config.yaml instead of the smoke config")
    ap.add_argument("--no-speedup", action="store_true", help="skip the --cores 1 run")
    args = ap.parse_args()
    # always explicit: the Snakefile's default configfile is relative to the (temporary) working directory
    configfile = REPO / "config" / ("config.yaml" if args.default else "smoke.yaml")
    name = "config/config.yaml" if args.default else "config/smoke.yaml"

    with tempfile.TemporaryDirectory(prefix="bench_wf_") as tmp:
        two = Path(tmp) / "cores2"
        two.mkdir()
        wall2 = run(two, 2, configfile)
        noop = run(two, 2, configfile)
        per_rule = rule_times(two)
        wall1 = None
        if not args.no_speedup:
            one = Path(tmp) / "cores1"
            one.mkdir()
            wall1 = run(one, 1, configfile)

    result = {"config": name, "cpu_count": os.cpu_count(), "wall_s_cores2": round(wall2, 1),
              "noop_rerun_s": round(noop, 2), "wall_s_cores1": None if wall1 is None else round(wall1, 1),
              "speedup_cores2_vs_1": None if wall1 is None else round(wall1 / wall2, 2), "per_rule": per_rule}
    print(f"workflow benchmark ({name}, {os.cpu_count()} CPUs)")
    print(f"{'rule':<22}{'jobs':>6}{'total s':>10}{'mean s':>9}{'max s':>8}")
    for rule, t in per_rule.items():
        print(f"{rule:<22}{t['jobs']:>6}{t['total_s']:>10.1f}{t['mean_s']:>9.1f}{t['max_s']:>8.1f}")
    print(f"wall time --cores 2: {wall2:.1f} s")
    print(f"no-op rerun:         {noop:.2f} s")
    if wall1 is not None:
        print(f"wall time --cores 1: {wall1:.1f} s  (speed-up of --cores 2: {wall1 / wall2:.2f}x)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = OUT.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=1))
    os.replace(tmp_out, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
