"""torch.distributed set-up (gloo on CPU, NCCL on GPU), DDP helpers and the split of each global batch.

Launch: ``torchrun --nproc_per_node N -m hvpl.cli train ...`` (or ``python -m torch.distributed.run``). The
launcher's ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` select multi-process mode; without them everything is a
single process and these helpers are no-ops. The global batch (``train.batch_size``) is split evenly across
processes; rank 0 writes every output.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn

from hvpl.utils.errors import HVPLError


@dataclass
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False   # this module created the process group (and destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str | torch.device, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` (-> ``cuda:LOCAL_RANK``) or ``cuda:N``; a CUDA request without CUDA is an error."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise HVPLError(f"--device {device}: expected cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HVPLError(f"--device {device}: CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    elif dev.type != "cpu":
        raise HVPLError(f"--device {device}: expected cpu, cuda or cuda:N")
    return dev


def init_distributed(device: str | torch.device = "cpu") -> DistInfo:
    """Read the launcher's environment and join the process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank if world > 1 else 0)
    if world > 1 and dev.type == "cuda" and torch.device(device).index is not None:
        raise HVPLError(f"--device {device} would put all {world} processes on one GPU; use --device cuda "
                        "(process i then uses GPU LOCAL_RANK)")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
        owns = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev, owns_group=owns)


def cleanup(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def distributed_context(device: str | torch.device = "cpu") -> Iterator[DistInfo]:
    info = init_distributed(device)
    try:
        yield info
    finally:
        cleanup(info)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_gather_objects(obj: Any, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not info.distributed:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of a tensor over ranks (a copy; the input is untouched)."""
    out = t.detach().clone()
    if info.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """DDP around ``model`` in multi-process mode (only trainable parameters are synchronised)."""
    if not info.distributed:
        return model
    ids = [info.device.index] if info.device.type == "cuda" else None
    # one step always trains the same group through the same modules: a static graph (also covers trainable
    # parameters that never get a gradient) without find_unused_parameters' per-iteration graph traversal
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, static_graph=True)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def local_batch_size(batch_size: int, info: DistInfo) -> int:
    if batch_size % info.world_size:
        raise HVPLError(f"scenario config: train.batch_size={batch_size} must be divisible by the number of "
                        f"processes ({info.world_size})")
    return batch_size // info.world_size


def local_draws(iteration: int, batch_size: int, info: DistInfo) -> list[tuple[int, int]]:
    """This rank's ``(slot, draw number)`` pairs of the global batch of 0-based ``iteration``.

    Global batch i holds draws ``i*batch_size + slot`` for slot in 0..batch_size-1 (ClipDataset draws depend
    only on (seed, draw), data/clip_dataset.py); rank r takes slots ``[r*b, (r+1)*b)`` with b the local batch.
    So N processes see exactly the clips of one process, and the data position is just the iteration.
    """
    local = local_batch_size(batch_size, info)
    lo = info.rank * local
    return [(slot, iteration * batch_size + slot) for slot in range(lo, lo + local)]
