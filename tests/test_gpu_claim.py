"""hvpl claim-gpus: GPU locks per job for local GPU runs (fake GPU names; no GPU needed)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from hvpl.engine import gpu_claim as gc
from hvpl.utils.errors import HVPLError


def _release(held):
    for _, fd in held:
        os.close(fd)


def test_claims_take_free_gpus_and_never_a_held_one(tmp_path):
    first = gc.try_claim(1, ["a", "b", "c"], tmp_path)
    second = gc.try_claim(1, ["a", "b", "c"], tmp_path)
    assert [g for g, _ in first] == ["a"] and [g for g, _ in second] == ["b"]
    assert gc.try_claim(2, ["a", "b", "c"], tmp_path) is None   # only c is free
    # the failed claim gave c back: it can be taken now
    third = gc.try_claim(1, ["a", "b", "c"], tmp_path)
    assert [g for g, _ in third] == ["c"]
    _release(first)
    assert [g for g, _ in gc.try_claim(1, ["a", "b", "c"], tmp_path)] == ["a"]
    _release(second + third)


def test_claim_errors(tmp_path, monkeypatch):
    with pytest.raises(HVPLError, match="needs 3 GPU.* 2 are visible"):
        gc.claim(3, ["0", "1"], tmp_path)
    held = gc.claim(2, ["0", "1"], tmp_path)
    monkeypatch.setattr(gc, "POLL_S", 0.05)
    with pytest.raises(HVPLError, match="no 1 free GPU.*after 0 s"):
        gc.claim(1, ["0", "1"], tmp_path, timeout_s=0.2)
    _release(held)
    assert gc.visible_gpus({"CUDA_VISIBLE_DEVICES": "3, GPU-abc,"}) == ["3", "GPU-abc"]
    assert gc.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def _claim_cmd(count, *command, options=()):
    return [sys.executable, "-m", "hvpl.cli", "claim-gpus", "--count", str(count), *options, "--", *command]


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k != "SLURM_JOB_ID"}
    env.update(HVPL_GPU_LOCK_DIR=str(tmp_path / "locks"), CUDA_VISIBLE_DEVICES="7,9")
    return dict(env, **extra)


def _show_gpus():
    return [sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES', 'unset'))"]


def test_a_job_holds_its_gpu_until_it_ends_even_when_killed(tmp_path):
    env = _env(tmp_path)
    holder = subprocess.Popen(_claim_cmd(1, sys.executable, "-c", "import time; time.sleep(60)"), env=env,
                              stderr=subprocess.PIPE, text=True)
    line = holder.stderr.readline()
    assert "GPU(s) 7 claimed" in line
    other = subprocess.run(_claim_cmd(1, *_show_gpus()), env=env, capture_output=True, text=True, timeout=60)
    assert other.returncode == 0 and other.stdout.strip() == "9"
    both = subprocess.run(_claim_cmd(2, *_show_gpus(), options=("--timeout", "0.5")), env=env, capture_output=True,
                          text=True, timeout=60)
    assert both.returncode == 2 and "no 2 free GPU(s) of 7,9" in both.stderr
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    time.sleep(0.1)
    again = subprocess.run(_claim_cmd(2, *_show_gpus()), env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.strip() == "7,9"


def test_a_slurm_job_with_exactly_its_gpus_runs_as_is_and_one_with_more_claims(tmp_path):
    env = _env(tmp_path, SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="5")
    res = subprocess.run(_claim_cmd(1, *_show_gpus()), env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "5" and "claimed" not in res.stderr
    assert not (tmp_path / "locks").exists()
    # e.g. a local run inside an allocation of 2 GPUs: its jobs claim among them
    env = _env(tmp_path, SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="5,6")
    res = subprocess.run(_claim_cmd(1, *_show_gpus()), env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "5" and "GPU(s) 5 claimed" in res.stderr
    missing = subprocess.run(_claim_cmd(1), env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no command given" in missing.stderr


def test_lock_files_can_be_shared_between_users(tmp_path):
    shared = tmp_path / "shared"
    held = gc.try_claim(1, ["0"], shared)
    assert (shared.stat().st_mode & 0o7777) == 0o1777
    lock = shared / "gpu-0.lock"
    assert lock.stat().st_mode & 0o044 == 0o044   # others can open it read-only, which is all flock needs
    _release(held)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be")
    with pytest.raises(HVPLError, match="cannot open the GPU lock"):
        gc.try_claim(1, ["0"], blocked / "sub")


def test_lock_names_fall_back_to_the_entries_without_cuda():
    assert gc.lock_names(["3", "GPU-abc"]) == ["3", "GPU-abc"]


def test_lock_names_are_gpu_uuids_when_torch_sees_the_gpus(monkeypatch):
    import types

    import torch

    props = {0: "GPU-aaaa", 1: "GPU-bbbb"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(uuid=props[i]))
    # listed as indices or by another job under other indices: the same lock files
    assert gc.lock_names(["2", "3"]) == ["GPU-aaaa", "GPU-bbbb"]
    assert gc.lock_names(["2"]) == ["2"]     # torch sees other GPUs than those listed: the entries
