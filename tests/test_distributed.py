"""Distributed helpers: device resolution, the sharded resumable sampler, a real 2-process gloo group."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from hvpl.engine.distributed import (DistInfo, all_gather_objects, all_reduce_sum,
                                     distributed_context, local_batch_size, local_draws, resolve_device, unwrap,
                                     wrap_model)
from hvpl.utils.errors import HVPLError

torch.set_num_threads(1)
CPU = torch.device("cpu")


def _info(rank, world):
    return DistInfo(rank=rank, world_size=world, local_rank=rank, device=CPU)


def test_resolve_device():
    assert resolve_device("cpu") == CPU
    with pytest.raises(HVPLError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(HVPLError, match="CUDA"):
            resolve_device("cuda")


def test_a_fixed_gpu_index_is_refused_for_several_processes(monkeypatch):
    """--device cuda:N under torchrun would put every process on GPU N (NCCL then fails on duplicate GPUs)."""
    from hvpl.engine.distributed import init_distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(HVPLError, match="--device cuda:0 would put all 2 processes on one GPU"):
        init_distributed("cuda:0")


def test_global_batches_do_not_depend_on_the_number_of_processes():
    bs = 4
    for it in range(5):
        whole = local_draws(it, bs, _info(0, 1))
        parts = local_draws(it, bs, _info(0, 2)) + local_draws(it, bs, _info(1, 2))
        quarters = [pair for r in range(4) for pair in local_draws(it, bs, _info(r, 4))]
        assert whole == parts == quarters
        assert whole == [(s, it * bs + s) for s in range(bs)]


def test_batch_split_errors():
    assert local_batch_size(4, _info(0, 2)) == 2
    with pytest.raises(HVPLError, match="divisible"):
        local_batch_size(3, _info(0, 2))


def test_single_process_helpers_are_no_ops():
    info = _info(0, 1)
    model = torch.nn.Linear(2, 2)
    assert wrap_model(model, info) is model and unwrap(model) is model
    assert all_gather_objects({"a": 1}, info) == [{"a": 1}]
    t = torch.ones(2)
    assert torch.equal(all_reduce_sum(t, info), t)


def _worker(rank, world, port, queue):
    os.environ.update({"WORLD_SIZE": str(world), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    with distributed_context("cpu") as info:
        gathered = all_gather_objects(rank * 10, info)
        s = all_reduce_sum(torch.tensor([float(rank + 1)]), info).item()
        model = wrap_model(torch.nn.Linear(2, 1), info)
        model(torch.full((1, 2), float(rank))).sum().backward()
        grad = unwrap(model).weight.grad.tolist()
        queue.put((rank, info.world_size, gathered, s, grad))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_group():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank, world, gathered, s, grad in results:
        assert world == 2 and gathered == [0, 10] and s == 3.0
        # DDP averages the gradients of inputs 0 and 1: d/dw sum(w.x) = x -> mean over ranks = 0.5
        assert grad == [[0.5, 0.5]]
