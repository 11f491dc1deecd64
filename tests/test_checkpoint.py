"""Periodic checkpoints: atomic files, keep the latest 2, RNG states, fingerprints, resume choice."""
from __future__ import annotations

import random

import numpy as np
import torch

from hvpl.engine.checkpoint import (KEEP, checkpoint_path, file_digest, fingerprint, list_checkpoints, load_latest,
                                    remove_checkpoints, remove_others, rng_state, save_checkpoint, set_rng_state)

torch.set_num_threads(1)


def _draw():
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist())


def test_rng_state_round_trip_restores_every_generator():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draw()
    state = rng_state()
    expected = [_draw() for _ in range(3)]
    _draw()
    set_rng_state(state)
    assert [_draw() for _ in range(3)] == expected


def test_save_keeps_latest_two_and_is_atomic(tmp_path):
    for it in (10, 20, 30, 40):
        save_checkpoint(tmp_path, it, {"x": torch.tensor([it]), "fingerprint": "a"})
    assert [it for it, _ in list_checkpoints(tmp_path)] == [30, 40]
    assert KEEP == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint_path(tmp_path, 30).name,
                                                          checkpoint_path(tmp_path, 40).name]
    state = load_latest(tmp_path, "a")
    assert state["iteration"] == 40 and state["x"].item() == 40


def test_load_latest_skips_unreadable_and_stale(tmp_path):
    assert load_latest(tmp_path / "missing") is None
    save_checkpoint(tmp_path, 5, {"fingerprint": "a"})
    save_checkpoint(tmp_path, 6, {"fingerprint": "b"})
    assert load_latest(tmp_path, "a")["iteration"] == 5      # newest is of another config
    assert load_latest(tmp_path, "c") is None
    checkpoint_path(tmp_path, 7).write_bytes(b"\x00garbage")   # e.g. copied in half by hand
    assert load_latest(tmp_path, "b")["iteration"] == 6


def test_a_new_run_keeps_its_own_checkpoints_after_rejecting_newer_stale_ones(tmp_path):
    """An older run of another configuration left checkpoints 80 and 100; the new run resumes nothing, and its
    checkpoints 20, 40, 60 must not be pruned in favour of the stale, higher-numbered ones."""
    for it in (80, 100):
        save_checkpoint(tmp_path, it, {"fingerprint": "old"})
    (tmp_path / ".ckpt_00000120.pt.x1y2.tmp").write_bytes(b"half")   # a save killed before its rename
    assert load_latest(tmp_path, "new") is None
    remove_others(tmp_path, None)
    assert list(tmp_path.iterdir()) == []
    for it in (20, 40, 60):
        save_checkpoint(tmp_path, it, {"fingerprint": "new"})
    assert [it for it, _ in list_checkpoints(tmp_path)] == [40, 60]


def test_remove_others_keeps_the_resumed_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 5, {"fingerprint": "a"})
    save_checkpoint(tmp_path, 6, {"fingerprint": "b"})
    state = load_latest(tmp_path, "a")
    remove_others(tmp_path, state["iteration"])
    assert [it for it, _ in list_checkpoints(tmp_path)] == [5]


def test_file_digest_follows_content(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"weights 1")
    b.write_bytes(b"weights 2")
    assert file_digest(a) != file_digest(b) and file_digest(None) is None
    b.write_bytes(b"weights 1")
    assert file_digest(a) == file_digest(b)


def test_fingerprint_is_stable_and_sensitive():
    cfg = {"a": 1, "b": [1, 2]}
    assert fingerprint(cfg, 0, "hvpl") == fingerprint({"b": [1, 2], "a": 1}, 0, "hvpl")
    assert fingerprint(cfg, 0, "hvpl") != fingerprint(cfg, 1, "hvpl")
    assert fingerprint(cfg, 0, "hvpl") != fingerprint({"a": 2, "b": [1, 2]}, 0, "hvpl")


def test_remove_checkpoints_leaves_other_files_and_folders(tmp_path):
    step1 = tmp_path / "checkpoints" / "step1"
    for it in (3, 6):
        save_checkpoint(step1, it, {"x": it})
    (step1 / "train_log.jsonl").write_text("{}\n")
    step2 = tmp_path / "checkpoints" / "step2"
    save_checkpoint(step2, 3, {"x": 3})
    (step1 / ".ckpt_00000009.pt.abcd.tmp").write_bytes(b"half")   # a save killed before its rename
    remove_checkpoints(step1, also=("train_log.jsonl",))
    assert not step1.exists() and list_checkpoints(step2)          # the parent still holds step 2's
    (step2 / "notes.txt").write_text("mine")
    remove_checkpoints(step2)
    assert sorted(p.name for p in step2.iterdir()) == ["notes.txt"]
    remove_checkpoints(tmp_path / "never")                            # nothing there: no error
