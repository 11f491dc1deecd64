# How jobs run: per-rule resources from the profile, GPU requests and the torchrun launch of a training step,
# and the clean-up of Snakemake's lock after a hard kill. Included after common.smk.

import os
import socket
from pathlib import Path

import yaml


def gpu_resources():
    """GPU requests (Snakemake's standard `gpu` / `cpus_per_gpu`) only when the config runs on CUDA: one GPU
    per job by default; a profile may raise train's (`set-resources: train: {gpu: N}`: N processes under
    torchrun). cpus_per_gpu = the rule's threads (profiles: `set-threads`)."""
    if not config["device"].startswith("cuda"):
        return {}
    return {"gpu": 1, "cpus_per_gpu": lambda wildcards, threads: threads}


def gpu_claim(wildcards, resources):
    """With `device: cuda`, a GPU job's command starts with `hvpl claim-gpus --count N --`: the job takes N GPUs
    no other job holds (Snakemake's local executor does not assign GPUs; a no-op under SLURM, which does).
    `device: cuda:N` pins every job to GPU N instead."""
    if config["device"] != "cuda":
        return ""
    return f"hvpl claim-gpus --count {max(1, int(getattr(resources, 'gpu', 0) or 0))} -- "


def train_launcher(wildcards, threads, resources):
    """`hvpl train --threads T`, or with N > 1 GPUs `torchrun` with N processes (one per GPU, NCCL; the global
    batch is unchanged) and T threads per process; after the GPU claim on CUDA."""
    gpus = int(getattr(resources, "gpu", 0) or 0)
    claim = gpu_claim(wildcards, resources)
    if gpus <= 1:
        return f"{claim}hvpl train --threads {threads}"
    return (f"{claim}torchrun --standalone --nproc_per_node {gpus} -m hvpl.cli train "
            f"--threads {threads * gpus}")


def _profile_rule_resources():
    """profiles/default's `set-resources` table ({rule: {key: value}}), the one place the per-rule sizes are set."""
    path = Path(workflow.basedir) / "profiles" / "default" / "config.yaml"
    table = (yaml.safe_load(path.read_text()) or {}).get("set-resources") or {}
    return {rule: dict(values) for rule, values in table.items()}


PROFILE_RESOURCES = _profile_rule_resources()
GPU_RULES = ("train", "ogc_memory", "evaluate")


def cluster_resources(rule):
    """The rule's memory/runtime from profiles/default as the rule's own resources (so a command-line
    `--set-resources`, which replaces the profile's whole table, only changes what it names), GPUs, and the
    SLURM partition/account from $HVPL_SLURM_PARTITION / $HVPL_SLURM_ACCOUNT when set."""
    res = dict(PROFILE_RESOURCES.get(rule, {}))
    res.update(gpu_resources() if rule in GPU_RULES else {})
    for env, key in (("HVPL_SLURM_PARTITION", "slurm_partition"), ("HVPL_SLURM_ACCOUNT", "slurm_account")):
        if os.environ.get(env):
            res[key] = os.environ[env]
    return res


# ---------------------------------------------------------------- stale locks after a hard kill

RUN_MARKER = Path(".snakemake/hvpl_main.pid")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale_locks():
    """Remove Snakemake's locks left by a main process of this host that was killed (SIGKILL, OOM).

    Snakemake releases its locks on a normal exit and on Ctrl-C, but not after SIGKILL; the marker written
    by `onstart` tells a dead local run (safe to unlock) from a live one or one on another host (left alone).
    """
    locks = Path(".snakemake/locks")
    if not RUN_MARKER.is_file() or not locks.is_dir() or not any(locks.iterdir()):
        return
    host, _, pid = RUN_MARKER.read_text().strip().partition(":")
    if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
        for lock in locks.iterdir():
            lock.unlink()
        RUN_MARKER.unlink()
        print(f"hvpl: removed the locks of a killed run (pid {pid}); continuing it", file=sys.stderr)


def write_run_marker():
    RUN_MARKER.parent.mkdir(parents=True, exist_ok=True)
    RUN_MARKER.write_text(f"{socket.gethostname()}:{os.getpid()}\n")


def remove_run_marker():
    if RUN_MARKER.is_file() and RUN_MARKER.read_text().strip().endswith(f":{os.getpid()}"):
        RUN_MARKER.unlink()
