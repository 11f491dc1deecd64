"""Resumable periodic checkpoints (pipeline.md: a sibling folder that is NOT a declared output).

A checkpoint is one ``torch.save`` file ``ckpt_dir/ckpt_{iteration:08d}.pt`` written atomically, holding
whatever the trainer passes (model, optimizer, scheduler, RNG states of every rank, data position,
iteration, a fingerprint of the configuration and of the input files). Only the latest :data:`KEEP` files are
kept. On restart the newest readable checkpoint with a matching fingerprint is loaded; the others (another
configuration or other inputs, unreadable, temporary files of a write cut short) are then removed, so that what
the folder holds belongs to the run that writes it and pruning never deletes that run's own checkpoints.

A finished step replaces its checkpoints by a *finished record*: hard links to its output files (no extra space
while the outputs exist) and ``finished.json`` with a fingerprint of the configuration, the input files and
hvpl's code. A rerun of the same step with the same fingerprint links the outputs back instead of training:
outputs that a workflow threw away after the step finished (Snakemake treats a job that ends after Ctrl-C as
incomplete and deletes its outputs) or that were deleted are restored in seconds, never retrained.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_path, atomic_torch_save, atomic_write_json
from hvpl.utils.logging import log
from hvpl.utils.safe_load import load_torch_file

KEEP = 2   # pipeline.md / engine spec: keep the latest two checkpoints
_NAME = re.compile(r"^ckpt_(\d+)\.pt$")
_TEMP = re.compile(r"^\.ckpt_\d+\.pt\..*\.tmp$")   # hvpl.utils.io.atomic_path's name while a save runs


def checkpoint_path(ckpt_dir: Path, iteration: int) -> Path:
    return Path(ckpt_dir) / f"ckpt_{iteration:08d}.pt"


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``(iteration, path)`` of every checkpoint file in ``ckpt_dir``, oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (config, step, method, seed, world size ...)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | Path | None) -> str | None:
    """SHA-256 of a file's bytes (None for None): input files take part in the fingerprint by content, so a
    resumed step cannot continue from weights trained on another previous model, basis or training JSON."""
    if path is None:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """Every global RNG this process uses: python, numpy, torch CPU and (when initialised) its current CUDA
    device's (only that one: a step resumed with another number of visible GPUs restores it all the same)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# -------------------------------------------------------------------------------------------- save / load
def save_checkpoint(ckpt_dir: Path, iteration: int, state: dict, keep: int = KEEP) -> Path:
    """Write ``state`` (with ``iteration`` added) atomically and delete all but the newest ``keep`` files."""
    path = checkpoint_path(ckpt_dir, iteration)
    atomic_torch_save(path, {**state, "iteration": int(iteration)})
    for _, old in list_checkpoints(ckpt_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def remove_checkpoints(ckpt_dir: Path, also: tuple[str, ...] = ()) -> None:
    """Delete the checkpoint files of ``ckpt_dir`` and the named ``also`` files, then the folder and its parent
    when they are left empty (a finished step keeps only its finished record)."""
    ckpt_dir = Path(ckpt_dir)
    for _, path in list_checkpoints(ckpt_dir):
        path.unlink(missing_ok=True)
    _remove_temporaries(ckpt_dir)
    for name in also:
        (ckpt_dir / name).unlink(missing_ok=True)
    for folder in (ckpt_dir, ckpt_dir.parent):
        try:
            folder.rmdir()
        except OSError:   # not empty (other steps' checkpoints, a user's files) or already gone
            break


def _remove_temporaries(ckpt_dir: Path) -> None:
    if ckpt_dir.is_dir():
        for path in ckpt_dir.iterdir():
            if _TEMP.match(path.name):
                path.unlink(missing_ok=True)


def remove_others(ckpt_dir: Path, keep_iteration: int | None) -> None:
    """Delete every checkpoint of ``ckpt_dir`` but ``keep_iteration``'s (the one resumed, if any) and the
    temporary files of interrupted saves. Called once a run has chosen where it starts (every process has read)."""
    ckpt_dir = Path(ckpt_dir)
    for iteration, path in list_checkpoints(ckpt_dir):
        if iteration != keep_iteration:
            log(f"{path}: removed (not resumed by this run)")
            path.unlink(missing_ok=True)
    _remove_temporaries(ckpt_dir)


def load_latest(ckpt_dir: Path, expected_fingerprint: str | None = None) -> dict | None:
    """The newest readable checkpoint (whose ``fingerprint`` matches, when given), or None.

    Loaded to CPU; the trainer moves tensors where they belong.
    """
    for iteration, path in reversed(list_checkpoints(ckpt_dir)):
        try:
            state = load_torch_file(path, "checkpoint", numpy=True)   # numpy: the RNG state
        except HVPLError as exc:  # cut short by a crash outside the atomic rename, or foreign: try the previous one
            log(f"{path}: unreadable checkpoint skipped ({exc})")
            continue
        if expected_fingerprint is not None and state.get("fingerprint") != expected_fingerprint:
            log(f"{path}: checkpoint of another configuration or other input files ignored")
            continue
        log(f"resuming from {path} (iteration {iteration})")
        return state
    return None



# ------------------------------------------------------------------------------------------ finished record
FINISHED = "finished.json"
_FINISHED_PREFIX = "finished_"


def code_digest() -> str:
    """SHA-256 (short) of hvpl's Python sources: a finished record restores only what the same code trained."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``'s contents, atomically: a hard link (no space), else (another file system) a copy."""
    with atomic_path(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def record_finished(ckpt_dir: Path, outputs: list[Path], fingerprint_: str) -> None:
    """Keep ``outputs`` (a finished step's files) in ``ckpt_dir`` as the record restored by :func:`restore_finished`."""
    ckpt_dir = Path(ckpt_dir)
    drop_finished(ckpt_dir)
    names = []
    for path in outputs:
        _link_or_copy(Path(path), ckpt_dir / f"{_FINISHED_PREFIX}{Path(path).name}")
        names.append(Path(path).name)
    atomic_write_json(ckpt_dir / FINISHED, {"fingerprint": fingerprint_, "files": names})


def finished_files(ckpt_dir: Path, fingerprint_: str) -> list[str] | None:
    """The names of the outputs a finished record with this fingerprint holds (all present), else None."""
    record = Path(ckpt_dir) / FINISHED
    try:
        data = json.loads(record.read_text())
        names = [str(n) for n in data["files"]]
        same = data["fingerprint"] == fingerprint_
    except (OSError, ValueError, KeyError, TypeError):
        return None
    present = all((Path(ckpt_dir) / f"{_FINISHED_PREFIX}{n}").is_file() for n in names)
    return names if same and present else None


def restore_finished(ckpt_dir: Path, out_dir: Path, names: list[str]) -> None:
    """Put the recorded outputs ``names`` back into ``out_dir`` (hard links, each atomically)."""
    for name in names:
        _link_or_copy(Path(ckpt_dir) / f"{_FINISHED_PREFIX}{name}", Path(out_dir) / name)
    log(f"{ckpt_dir / FINISHED}: this step finished before with the same configuration, input files and code: "
        f"{', '.join(names)} restored in {out_dir}, nothing trained")


def drop_finished(ckpt_dir: Path) -> None:
    """Delete a finished record (of another configuration, other inputs or other code: it cannot be restored)."""
    ckpt_dir = Path(ckpt_dir)
    (ckpt_dir / FINISHED).unlink(missing_ok=True)
    if ckpt_dir.is_dir():
        for path in ckpt_dir.iterdir():
            if path.name.startswith(_FINISHED_PREFIX):
                path.unlink(missing_ok=True)
