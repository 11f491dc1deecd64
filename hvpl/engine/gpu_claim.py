"""``hvpl claim-gpus --count N -- COMMAND``: run a job on N GPUs that no other job of this machine holds.

Snakemake's local executor counts GPUs (``--resources gpu=4``) but does not say which GPU a job should take,
so every GPU job of a local run would use the first GPU. Each job of the workflow therefore claims GPUs
itself: an exclusive ``flock`` on one lock file per GPU (named by the GPU's UUID where torch can read it, else
by its ``CUDA_VISIBLE_DEVICES`` entry; in ``$HVPL_GPU_LOCK_DIR``, default ``<tmp>/hvpl-gpu-locks-<uid>``), then
``exec`` of the command with ``CUDA_VISIBLE_DEVICES`` set to the claimed GPUs. The locks belong to the exec'd
process, the job's main process (torchrun for a multi-GPU step; its ranks run in their own session and do not
hold them): they are released when it ends, however it ends. A job that finds fewer free GPUs than it needs
holds none and waits. A SLURM job that sees exactly the GPUs it needs got them from SLURM: the command runs
as is (in an allocation with more GPUs, e.g. a local run inside ``salloc``, jobs claim among them).
"""
from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path

from hvpl.utils.errors import HVPLError
from hvpl.utils.logging import log

POLL_S = 2.0
WAIT_LOG_S = 60.0


def lock_dir(env=os.environ) -> Path:
    default = Path(tempfile.gettempdir()) / f"hvpl-gpu-locks-{os.getuid()}"
    return Path(env.get("HVPL_GPU_LOCK_DIR") or default)


def visible_gpus(env=os.environ) -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES``'s entries (indices or UUIDs), else every GPU
    torch sees, as indices."""
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [t.strip() for t in listed.split(",") if t.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def lock_names(gpus: list[str]) -> list[str]:
    """A lock file name per visible GPU: its UUID when torch sees exactly these GPUs (the same name whatever
    index or UUID a job lists it by, also across SLURM jobs that renumber GPUs), else the entry itself."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() == len(gpus):
            uuids = [str(getattr(torch.cuda.get_device_properties(i), "uuid", "") or "") for i in range(len(gpus))]
            if all(uuids) and len(set(uuids)) == len(uuids):
                return uuids
    except (RuntimeError, AssertionError):   # no usable CUDA driver: name the locks by the entries
        pass
    return list(gpus)


def _share(directory: Path) -> None:
    """Anyone may add lock files (sticky, like /tmp); left as is when another user made the folder."""
    try:
        os.chmod(directory, 0o1777)
    except PermissionError:
        pass


def _open_lock(directory: Path, name: str) -> int:
    """The lock file's descriptor (read-only is enough for flock), readable by every user who shares the folder."""
    path = directory / f"gpu-{name.replace('/', '_')}.lock"
    try:
        if not directory.is_dir():
            directory.mkdir(parents=True, exist_ok=True)
            _share(directory)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise HVPLError(f"claim-gpus: cannot open the GPU lock {path} ({exc})") from exc
    try:
        os.fchmod(fd, 0o644)
    except PermissionError:   # another user's lock file
        pass
    return fd


def try_claim(count: int, gpus: list[str], directory: Path, names: list[str] | None = None
              ) -> list[tuple[str, int]] | None:
    """``count`` of ``gpus`` locked now, as ``(gpu, fd)`` pairs, or None (then nothing is held). ``names``: the
    lock file of each GPU (default: the entries themselves)."""
    held: list[tuple[str, int]] = []
    for gpu, name in zip(gpus, names or gpus):
        fd = _open_lock(directory, name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append((gpu, fd))
        if len(held) == count:
            return held
    for _, fd in held:   # a partial claim is given back, so two waiting jobs cannot block each other
        os.close(fd)
    return None


def claim(count: int, gpus: list[str], directory: Path, timeout_s: float | None = None,
          names: list[str] | None = None) -> list[tuple[str, int]]:
    """Wait until ``count`` GPUs are free and lock them (HVPLError after ``timeout_s``, if given)."""
    if count > len(gpus):
        raise HVPLError(f"a job needs {count} GPU(s) but {len(gpus)} are visible ({','.join(gpus) or 'none'}; "
                        "CUDA_VISIBLE_DEVICES or torch.cuda.device_count())")
    start = last_log = time.monotonic()
    while True:
        held = try_claim(count, gpus, directory, names)
        if held is not None:
            return held
        now = time.monotonic()
        if timeout_s is not None and now - start >= timeout_s:
            raise HVPLError(f"no {count} free GPU(s) of {','.join(gpus)} after {timeout_s:.0f} s (locks in "
                            f"{directory})")
        if now - last_log >= WAIT_LOG_S or last_log == start:
            log(f"waiting for {count} free GPU(s) of {','.join(gpus)} (held by other jobs; locks in {directory})")
            last_log = now
        time.sleep(POLL_S)


def run_on_free_gpus(count: int, command: list[str], env=None, timeout_s: float | None = None) -> None:
    """Claim ``count`` GPUs and replace this process by ``command`` (never returns)."""
    env = dict(os.environ if env is None else env)
    if not command:
        raise HVPLError("claim-gpus: no command given (hvpl claim-gpus --count N -- COMMAND ...)")
    gpus = visible_gpus(env) if count > 0 else []
    if count > 0 and not (env.get("SLURM_JOB_ID") and len(gpus) == count):
        held = claim(count, gpus, lock_dir(env), timeout_s, lock_names(gpus))
        for _, fd in held:
            os.set_inheritable(fd, True)   # the lock stays with the exec'd command
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu for gpu, _ in held)
        log(f"GPU(s) {env['CUDA_VISIBLE_DEVICES']} claimed for: {' '.join(command)}")
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        raise HVPLError(f"claim-gpus: cannot run {command[0]!r} ({exc})") from exc
