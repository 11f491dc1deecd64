"""Reading training batches: on the main thread, or prefetched by DataLoader worker processes.

A batch is a pure function of its iteration (ClipDataset draws depend only on (seed, draw number), and
``local_draws`` maps an iteration to this rank's draws), so workers change when clips are read, never which:
training with any number of workers is bit-identical to reading on the main thread. Workers matter on a GPU,
where reading and resizing a paper-size clip on the main thread (decode, resize, masks: tens of ms per clip,
bench/bench_loading.py) would leave the GPU idle; on CPU they compete with the training threads for cores.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from typing import Iterator

import torch

from hvpl.engine.batching import pad_clips
from hvpl.engine.distributed import DistInfo, local_draws
from hvpl.utils.errors import HVPLError

MAX_AUTO_WORKERS = 4
PREFETCH_BATCHES = 2   # per worker


@dataclass
class Batch:
    """This rank's share of one iteration's global batch.

    ``images``: float (B, T, 3, H, W) 0..255, clips padded at the bottom/right with the pixel mean;
    ``targets``: per clip, the clip's dict without ``images`` (labels, masks, present, ...)."""
    slots: list[int]
    images: torch.Tensor
    targets: list[dict]

    def pin_memory(self) -> "Batch":
        """Page-locked copies (DataLoader's pin-memory thread calls this on CUDA)."""
        return Batch(self.slots, self.images.pin_memory(),
                     [{k: (v.pin_memory() if torch.is_tensor(v) else v) for k, v in t.items()} for t in self.targets])


def default_workers(device: torch.device, threads: int | None) -> int:
    """Worker processes when none are asked for: none on CPU (they would take cores from the training
    threads); on CUDA, this process's share of ``threads`` (the CPUs it may use if None; torchrun's local
    processes split them) less one for the main thread, at least 1 and at most 4."""
    if device.type != "cuda":
        return 0
    cpus = int(threads or len(os.sched_getaffinity(0)) or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(MAX_AUTO_WORKERS, cpus - 1))


def collate_batch(items: list, pad_value: torch.Tensor) -> Batch:
    """``[(slot, clip), ...]`` -> :class:`Batch` (a worker's failure, carried as a message, is raised here)."""
    for _, clip in items:
        if isinstance(clip, _Failure):
            raise HVPLError(clip.message)
    clips = [clip for _, clip in items]
    return Batch([slot for slot, _ in items], pad_clips(clips, pad_value),
                 [{k: v for k, v in c.items() if k != "images"} for c in clips])


def read_batch(dataset, iteration: int, batch_size: int, info: DistInfo, pad_value: torch.Tensor) -> Batch:
    """The batch of ``iteration``, read on the calling thread."""
    return collate_batch([(slot, dataset[d]) for slot, d in local_draws(iteration, batch_size, info)], pad_value)


class _Failure:
    """An HVPLError raised in a worker, passed back as a value: the main process re-raises it with its own
    message (DataLoader would wrap it in the worker's traceback text)."""

    def __init__(self, message: str):
        self.message = message


class _Guarded(torch.utils.data.Dataset):
    """``dataset[i]``, an HVPLError as a :class:`_Failure`; with ``slotted`` the keys are ``(slot, draw)``
    pairs and the items ``(slot, dataset[draw])``."""

    def __init__(self, dataset, slotted: bool = False):
        self.dataset, self.slotted = dataset, slotted

    def __getitem__(self, key):
        slot, index = key if self.slotted else (None, key)
        try:
            item = self.dataset[index]
        except HVPLError as exc:
            item = _Failure(str(exc))
        return (slot, item) if self.slotted else item


def iterate_items(dataset, count: int, *, workers: int, pin_memory: bool = False) -> Iterator:
    """``dataset[0] .. dataset[count-1]`` in order (inference: whole videos), ``workers`` > 0 reading ahead."""
    if workers <= 0:
        for i in range(count):
            yield dataset[i]
        return
    yield from _read_ahead(_Guarded(dataset), workers, pin_memory, batch_size=None, sampler=range(count),
                           collate_fn=_as_is)


class _IterationDraws(torch.utils.data.Sampler):
    """Batch sampler: for each iteration of ``range(start, stop)``, this rank's ``(slot, draw)`` pairs."""

    def __init__(self, start: int, stop: int, batch_size: int, info: DistInfo):
        self.start, self.stop, self.batch_size, self.info = start, stop, batch_size, info

    def __iter__(self):
        for it in range(self.start, self.stop):
            yield local_draws(it, self.batch_size, self.info)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _as_is(item):
    """Items unchanged (DataLoader's default would turn tuples such as a video's size into lists)."""
    return item


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)


def iterate_batches(dataset, batch_size: int, info: DistInfo, start: int, stop: int, *, workers: int,
                    pad_value: torch.Tensor) -> Iterator[Batch]:
    """Batches of iterations ``start .. stop-1`` in order; ``workers`` > 0 reads them ahead in that many
    processes (pinned memory on CUDA, for asynchronous copies)."""
    if workers <= 0:
        for it in range(start, stop):
            yield read_batch(dataset, it, batch_size, info, pad_value)
        return
    yield from _read_ahead(_Guarded(dataset, slotted=True), workers, info.device.type == "cuda",
                           batch_sampler=_IterationDraws(start, stop, batch_size, info),
                           collate_fn=partial(_collate_in_worker, pad_value=pad_value))


def _read_ahead(dataset, workers: int, pin_memory: bool, **loader_args) -> Iterator:
    """A DataLoader's items in order, read by ``workers`` processes; a :class:`_Failure` is raised as the
    HVPLError it carries. The workers' base seed comes from a generator of its own: starting them draws nothing
    from the global torch RNG (whose state checkpoints save), so that state does not depend on ``workers``."""
    loader = torch.utils.data.DataLoader(dataset, num_workers=workers, pin_memory=pin_memory,
                                         prefetch_factor=PREFETCH_BATCHES, worker_init_fn=_worker_init,
                                         generator=torch.Generator(), **loader_args)
    items = iter(loader)
    try:
        for item in items:
            if isinstance(item, _Failure):
                raise HVPLError(item.message)
            yield item
    finally:
        # stop the workers now, also when the consumer stops early or an exception (whose traceback holds the
        # iterator) is on its way up
        shutdown = getattr(items, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


def _collate_in_worker(items: list, pad_value: torch.Tensor):
    """:func:`collate_batch` in a worker; a failure travels back as a :class:`_Failure`."""
    try:
        return collate_batch(items, pad_value)
    except HVPLError as exc:
        return _Failure(str(exc))
