"""Shared fixtures: a tiny synthetic dataset and its synth_smoke split, built once per test session.

- ``tiny_synth_root``: a dataset root in the ``hvpl synth`` layout (train.json + train/JPEGImages/), 6 classes,
  24 videos of 4 frames at 48x48, <= 2 instances per video.
- ``tiny_split_dir``: ``make_scenario_split(synth_smoke, tiny_synth_root)``: classes.json, split_info.json,
  train_step{0,1,2}.json, test_step{0,1,2}.json, train_all.json (steps [1, 2], [3, 4], [5, 6]).
- ``tiny_scenario``: the synth_smoke scenario dict (input section etc.).
Treat them as read-only (copy before modifying).
"""
from __future__ import annotations

import pytest
import torch

TINY_SYNTH = {"num_classes": 6, "num_videos": 24, "num_frames": 4, "height": 48, "width": 48,
              "max_instances": 2, "seed": 0}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_scenario() -> dict:
    from hvpl.config import load_scenario

    return load_scenario("synth_smoke")


@pytest.fixture(scope="session")
def tiny_synth_root(tmp_path_factory):
    from hvpl.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("tiny_synth")
    generate_synthetic(root, **TINY_SYNTH)
    return root


@pytest.fixture(scope="session")
def tiny_split_dir(tmp_path_factory, tiny_synth_root, tiny_scenario):
    from hvpl.data.splits import make_scenario_split

    out = tmp_path_factory.mktemp("tiny_split")
    make_scenario_split(tiny_scenario, tiny_synth_root, out, seed=0)
    return out
