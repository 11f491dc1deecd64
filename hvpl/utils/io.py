"""Atomic writes (temporary file in the same folder + rename; a staged folder for multi-file outputs) and JSON
reading, with clear errors: a failed write (full disk, read-only folder) is HVPLError ``<path>: <reason>``."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hvpl.utils.errors import HVPLError


def _umask() -> int:
    """The process's umask (read from /proc where possible: setting it to read it back races with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_error(path: str | os.PathLike, exc: OSError) -> HVPLError:
    """``<path>: no space left on device`` (read-only file system, permission denied, ...): the error of a
    write that failed, naming the output it was for."""
    reason = (exc.strerror or str(exc) or type(exc).__name__).lower()
    return HVPLError(f"{path}: {reason}")


# Temporaries carry the host and process that write them, so that a later run can tell the leftovers of a killed
# process (same host, process gone) from the files of one still writing (removed / left alone).
def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"   # at each call: a forked process writes as itself


_RANDOM = r"[a-z0-9_]{8}"   # mkstemp's random part


def _leftover_patterns(name: str) -> tuple[re.Pattern, re.Pattern]:
    """Names of the temporary file (atomic_path; older versions wrote no owner) and the staged folder (staged_dir)
    of the output ``name``."""
    name = re.escape(name)
    return (re.compile(rf"^\.{name}\.(?:(?P<host>[^/]+)-(?P<pid>\d+)\.)?{_RANDOM}\.tmp$"),
            re.compile(rf"^\.{name}\.stage-(?P<host>[^/]+)-(?P<pid>\d+)$"))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's live process
        return True
    return True


def _is_stale(host: str | None, pid: str | None) -> bool:
    """A temporary of a killed process: written on this host by a process that is gone, or by an older version
    of hvpl that did not record its process (no host)."""
    if host is None:
        return True
    return host == socket.gethostname() and int(pid) != os.getpid() and not _pid_alive(int(pid))


def remove_stale_temporaries(folder: Path, name: str) -> None:
    """Delete what killed writers of the output ``folder/name`` left in ``folder``: temporary files of
    :func:`atomic_path`, folders of :func:`staged_dir`."""
    if not folder.is_dir():
        return
    temp, stage = _leftover_patterns(name)
    for entry in folder.iterdir():
        m = temp.match(entry.name) if entry.is_file() else stage.match(entry.name)
        if m and _is_stale(m.group("host"), m.group("pid")):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.
    The file gets the mode a plain ``open(path, "w")`` would give (0666 less the umask), not mkstemp's 0600:
    results on a shared file system stay readable by the group. A failed write (full disk, read-only folder)
    raises HVPLError ``<path>: <reason>`` and leaves neither the temporary nor a changed ``path``."""
    with atomic_files([path]) as (tmp,):
        yield tmp


@contextmanager
def atomic_files(paths: list) -> Iterator[list[Path]]:
    """Temporary paths next to each of ``paths``; all are renamed onto their paths only once the whole block
    succeeded (an output made of several files is written whole or not at all). Errors as :func:`atomic_path`."""
    paths = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        try:
            for path in paths:
                path.parent.mkdir(parents=True, exist_ok=True)
                remove_stale_temporaries(path.parent, path.name)
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner()}.", suffix=".tmp", dir=path.parent)
                temps.append(Path(tmp))
                os.fchmod(fd, 0o666 & ~_umask())
                os.close(fd)
        except OSError as exc:
            raise write_error(path, exc) from exc
        yield temps
        for path, tmp in zip(paths, temps):
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise write_error(path, exc) from exc
    except OSError as exc:   # raised inside the block: a write to one of the temporaries
        raise write_error(_failed_output(exc, paths, temps), exc) from exc
    finally:
        for tmp in temps:
            if tmp.exists():
                tmp.unlink()


def _failed_output(exc: OSError, paths: list[Path], temps: list[Path]) -> Path:
    """The output whose temporary a failed write was for: the one the error names, else (a write error names no
    file) the temporary written last."""
    named = [p for p, t in zip(paths, temps) if exc.filename == str(t)]
    if named:
        return named[0]
    written = [(t.stat().st_mtime_ns, i) for i, t in enumerate(temps) if t.exists()]
    return paths[max(written)[1]] if written else paths[0]


@contextmanager
def staged_dir(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh empty folder next to ``path`` to write a multi-file output into; when the block succeeds it
    becomes ``path`` (renamed whole when ``path`` does not exist, else its entries renamed into ``path``,
    replacing same-named ones), otherwise it is deleted. Renames need no space: a full disk or read-only folder
    stops the writing with HVPLError ``<path>: <reason>`` and leaves ``path`` as it was."""
    path = Path(path)
    stage = path.parent / f".{path.name}.stage-{_owner()}"
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path.parent, path.name)
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir()
        except OSError as exc:
            raise write_error(path, exc) from exc
        yield stage
        _move_into(stage, path)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _move_into(stage: Path, path: Path) -> None:
    if not path.exists():
        os.replace(stage, path)
        return
    for entry in sorted(stage.iterdir()):
        target = path / entry.name
        if entry.is_dir() and target.is_dir():   # a sub-folder is replaced whole: moved aside, then deleted
            old = path / f".{entry.name}.stage-{_owner()}"
            os.replace(target, old)
            os.replace(entry, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(entry, target)
        remove_stale_temporaries(path, entry.name)   # what a killed writer of this name left in path


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Plain (not atomic) JSON write, for files inside a :func:`staged_dir`."""
    Path(path).write_text(json.dumps(obj, indent=indent))


def write_torch(path: str | os.PathLike, obj: Any) -> None:
    """``torch.save`` through a Python file: a full disk is then an OSError (torch's own file writer reports
    it as an opaque RuntimeError), which the atomic helpers turn into HVPLError naming the output."""
    import torch

    try:
        with open(path, "wb") as f:
            torch.save(obj, f)
    except RuntimeError as exc:   # torch's writer, closing after the OSError, may raise over it: report the cause
        cause = exc.__context__
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None:
            raise
        raise cause from exc


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        write_torch(tmp, obj)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises HVPLError naming it."""
    path = Path(path)
    if not path.is_file():
        raise HVPLError(f"{path}: file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise HVPLError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
    except UnicodeDecodeError as exc:   # a binary file, or text in another encoding
        raise HVPLError(f"{path}: not valid JSON (not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset "
                        f"{exc.start})") from exc
