"""The paper-size model (paper_r50: ResNet-50, 6-layer deformable pixel decoder, 9-layer frame decoder) through
every command a continual run uses, on CPU at the synthetic input size: train step 0, ogc-memory, an HVPL prompt
step, predict, evaluate. The unit tests build these modules; this runs them as the workflow does."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from hvpl.engine.model_file import FINAL_NAME, LOG_NAME, load_model_file

pytestmark = pytest.mark.slow

SETS = ["scenario.train.step0_iters=2", "scenario.train.step0_lr_drop=1", "scenario.train.inc_iters=2",
        "scenario.train.batch_size=1", "scenario.train.ogc_samples=4", "scenario.train.log_period=1"]
# method.md Section 3: trainable parameters of an HVPL prompt step at paper size
PAPER_TRAINABLE_BASE, PER_CLASS, PER_PROMPT = 921_602, 514, 3_840


def _hvpl(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hvpl.cli", *args]
    res = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _run_config() -> list[str]:
    args = ["--scenario", "synth_smoke", "--method", "hvpl", "--model", "paper_r50", "--threads", "1"]
    for item in SETS:
        args += ["--set", item]
    return args


def test_paper_size_continual_step_through_the_cli(tiny_split_dir, tiny_scenario, tmp_path):
    step0, step1 = tmp_path / "step0", tmp_path / "step1"
    _hvpl("train", *_run_config(), "--step", "0", "--train-json", str(tiny_split_dir / "train_step0.json"),
          "--out-dir", str(step0))
    basis = step1 / "ogc_basis.pt"
    _hvpl("ogc-memory", *_run_config(), "--step", "1", "--prev-model", str(step0 / FINAL_NAME),
          "--train-json", str(tiny_split_dir / "train_step0.json"), "--out", str(basis))
    _hvpl("train", *_run_config(), "--step", "1", "--train-json", str(tiny_split_dir / "train_step1.json"),
          "--prev-model", str(step0 / FINAL_NAME), "--ogc-basis", str(basis), "--out-dir", str(step1))

    done = json.loads((step1 / LOG_NAME).read_text().splitlines()[-1])
    increment, prompts = tiny_scenario["increment"], tiny_scenario["prompts_per_task"]
    assert done["trainable_params"] == PAPER_TRAINABLE_BASE + PER_CLASS * increment + PER_PROMPT * prompts
    first, second = load_model_file(step0 / FINAL_NAME), load_model_file(step1 / FINAL_NAME)
    assert first["model_config"]["name"] == "paper_r50"
    changed = {n for n, v in first["model"].items() if not torch.equal(second["model"][n], v)}
    # of step 0's weights the prompt step trains only the shared no-object heads (method.md Section 3)
    assert changed and all(".no_object." in n for n in changed), sorted(changed)
    assert torch.load(basis, weights_only=True)["basis"].shape[0] == 256

    pred, metrics = tmp_path / "predictions.json", tmp_path / "metrics.json"
    _hvpl("predict", "--model", str(step1 / FINAL_NAME), "--test-json", str(tiny_split_dir / "test_step1.json"),
          "--out", str(pred), "--threads", "1")
    _hvpl("evaluate", "--gt", str(tiny_split_dir / "test_step1.json"), "--results", str(pred), "--out",
          str(metrics), "--classes", str(tiny_split_dir / "classes.json"), "--step", "1")
    results = json.loads(pred.read_text())
    videos = json.loads((tiny_split_dir / "test_step1.json").read_text())["videos"]
    assert len(results) == tiny_scenario["detections_per_video"] * len(videos)
    stats = json.loads(metrics.read_text())["stats"]
    assert set(stats) >= {"AP", "AP50", "AP75", "AR1", "AR10"} and all(0 <= stats[k] <= 1 for k in ("AP", "AR10"))
