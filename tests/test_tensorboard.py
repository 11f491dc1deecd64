"""TensorBoard event files of training and evaluation (hvpl.utils.tensorboard), read back with tensorboard's own
event reader; skipped only when the tensorboard package is not installed (the [test] extra installs it)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hvpl.config import load_run_config
from hvpl.engine import trainer as tr
from hvpl.utils.tensorboard import iteration_offset

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

SMALL = ["model.frame_decoder.num_queries=6", "model.video_decoder.num_queries=6", "model.loss.num_points=48",
         "scenario.train.batch_size=2", "scenario.train.log_period=2", "scenario.train.checkpoint_period=0"]


def read_scalars(logdir) -> dict:
    """{tag: [(step, value)]} of every event file in ``logdir`` (one TensorBoard run)."""
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_training_writes_losses_lr_grad_norm_and_time(tiny_split_dir, tmp_path):
    iters = 3
    cfg = load_run_config("synth_smoke", "hvpl", None,
                          SMALL + [f"scenario.train.step0_iters={iters}", "scenario.train.step0_lr_drop=2"])
    tb = tmp_path / "tensorboard"
    tr.train_step(cfg, step=0, train_json=tiny_split_dir / "train_step0.json", out_dir=tmp_path / "step0",
                  seed=0, tensorboard_dir=tb)
    scalars = read_scalars(tb)
    for tag in ("train/loss", "train/lr", "train/grad_norm", "train/iter_seconds"):
        assert [s for s, _ in scalars[tag]] == list(range(1, iters + 1)), tag
    terms = [t for t in scalars if t.startswith("train/") and "loss_" in t]
    assert terms, sorted(scalars)
    # the total is the sum of the terms at every iteration (float32 event values)
    for i in range(iters):
        total = sum(scalars[t][i][1] for t in terms)
        assert scalars["train/loss"][i][1] == pytest.approx(total, rel=1e-5)
    # the LR drops after step0_lr_drop iterations (step-0 schedule); the logged LR is the one each iteration used
    lrs = [v for _, v in scalars["train/lr"]]
    assert lrs[0] == pytest.approx(float(cfg["scenario"]["train"]["lr"])) and lrs[-1] < lrs[0]
    assert all(v > 0 for _, v in scalars["train/grad_norm"])


def test_step1_continues_after_step0_iterations_recorded_in_its_model(tiny_split_dir, tmp_path):
    """As in the workflow, step 1's config does not carry step 0's iteration override: the offset comes from
    step 0's model file."""
    tb = tmp_path / "tensorboard"
    first = load_run_config("synth_smoke", "finetune", None, SMALL + ["scenario.train.step0_iters=3"])
    tr.train_step(first, step=0, train_json=tiny_split_dir / "train_step0.json", out_dir=tmp_path / "step0",
                  seed=0, tensorboard_dir=tb)
    second = load_run_config("synth_smoke", "finetune", None, SMALL + ["scenario.train.inc_iters=2"])
    assert second["scenario"]["train"]["step0_iters"] != 3
    tr.train_step(second, step=1, train_json=tiny_split_dir / "train_step1.json", out_dir=tmp_path / "step1",
                  prev_model=tmp_path / "step0" / "model_final.pth", seed=0, tensorboard_dir=tb)
    assert [s for s, _ in read_scalars(tb)["train/loss"]] == [1, 2, 3, 4, 5]


def test_later_steps_continue_the_run_iterations():
    train = {"step0_iters": 30, "inc_iters": 15}
    assert iteration_offset(train, 0, first=True) == 0
    assert iteration_offset(train, 2, first=True) == 0          # joint: its one step starts the run
    assert iteration_offset(train, 1, first=False) == 30
    assert iteration_offset(train, 3, first=False) == 30 + 2 * 15


def test_evaluate_adds_the_step_metrics(tmp_path):
    gt = {"videos": [{"id": 1, "length": 1, "width": 4, "height": 4, "file_names": ["a.jpg"]}],
          "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "areas": [4.0],
                           "bboxes": [[0, 0, 2, 2]],
                           "segmentations": [{"size": [4, 4], "counts": [0, 2, 2, 2, 10]}]}]}
    results = [{"video_id": 1, "category_id": 1, "score": 0.9,
                "segmentations": [{"size": [4, 4], "counts": [0, 2, 2, 2, 10]}]}]
    classes = {"steps": [[1]], "class_order": [1]}
    for name, obj in (("gt.json", gt), ("res.json", results), ("classes.json", classes)):
        (tmp_path / name).write_text(json.dumps(obj))
    tb = tmp_path / "tb"
    res = subprocess.run([sys.executable, "-m", "hvpl.cli", "evaluate", "--gt", str(tmp_path / "gt.json"),
                          "--results", str(tmp_path / "res.json"), "--out", str(tmp_path / "m.json"),
                          "--classes", str(tmp_path / "classes.json"), "--step", "0", "--tensorboard", str(tb)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    scalars = read_scalars(tb)
    assert scalars["eval/AP"] == [(0, pytest.approx(metrics["stats"]["AP"]))]
    assert metrics["stats"]["AP"] == pytest.approx(1.0)
    assert "eval/AP_old" not in scalars       # -1 (no old classes at step 0) is not a value


def test_no_folder_no_writer(tmp_path):
    from hvpl.utils.tensorboard import open_writer

    assert open_writer(None) is None
    assert list(tmp_path.iterdir()) == []
