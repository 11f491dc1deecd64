"""Test helper: a full disk or a read-only file system under one folder, simulated in this process.

``full_disk(monkeypatch, root, free)``: files opened for writing under ``root`` accept ``free`` bytes in all,
then every write raises OSError(ENOSPC), as a real full disk does (the error carries no file name).
``read_only(monkeypatch, root)``: creating, opening for writing, renaming onto or making a folder under ``root``
raises OSError(EROFS) naming the path. Files are opened through ``open``/``io.open`` (json, pandas, matplotlib,
PIL, torch.save through a Python file) and created by ``os.open`` (mkstemp).
"""
from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

_REAL_OPEN = builtins.open
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT


def _under(path, root: Path) -> bool:
    if isinstance(path, int):
        return False
    return Path(os.path.abspath(os.fspath(path))).is_relative_to(root)


def _writing(mode: str) -> bool:
    return any(c in mode for c in "wax+")


class _LimitedFile:
    """A file object whose writes draw on a shared budget of free bytes."""

    def __init__(self, f, budget: list):
        self._f, self._budget = f, budget

    def write(self, data):
        size = len(data.encode() if isinstance(data, str) else data)
        if size > self._budget[0]:
            self._budget[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget[0] -= size
        return self._f.write(data)

    def fileno(self):   # no direct writes to the descriptor (PIL would bypass write())
        raise io.UnsupportedOperation("fileno")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


def full_disk(monkeypatch, root: Path, free: int) -> None:
    root, budget = Path(root).resolve(), [int(free)]

    def fake_open(file, mode="r", *args, **kwargs):
        f = _REAL_OPEN(file, mode, *args, **kwargs)
        return _LimitedFile(f, budget) if _writing(mode) and _under(file, root) else f

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


def read_only(monkeypatch, root: Path) -> None:
    root = Path(root).resolve()

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    real = {name: getattr(os, name) for name in ("open", "mkdir", "replace", "rename")}

    def fake_open(file, mode="r", *args, **kwargs):
        if _writing(mode) and _under(file, root):
            refuse(file)
        return _REAL_OPEN(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & _WRITE_FLAGS and _under(path, root):
            refuse(path)
        return real["open"](path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if _under(path, root) and not os.path.isdir(path):
            refuse(path)
        return real["mkdir"](path, *args, **kwargs)

    def fake_move(name):
        def move(src, dst, *args, **kwargs):
            if _under(dst, root) or _under(src, root):
                refuse(dst)
            return real[name](src, dst, *args, **kwargs)
        return move

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(os, "replace", fake_move("replace"))
    monkeypatch.setattr(os, "rename", fake_move("rename"))
