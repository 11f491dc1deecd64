"""Batches read on the main thread or by worker processes: the same batches, the same errors."""
from __future__ import annotations

import pytest
import torch

from hvpl.data.clip_dataset import ClipDataset, VideoDataset
from hvpl.engine.distributed import DistInfo
from hvpl.engine.loader import default_workers, iterate_batches, iterate_items, read_batch
from hvpl.utils.errors import HVPLError

CPU = torch.device("cpu")
PAD = torch.tensor([120.0, 110.0, 100.0])


def _clips(split_dir, scenario):
    return ClipDataset(split_dir / "train_step0.json", 2, 1, scenario["input"], seed=0)


def _same_batch(a, b) -> bool:
    return (a.slots == b.slots and torch.equal(a.images, b.images) and len(a.targets) == len(b.targets)
            and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k]
                                                  for k in x) for x, y in zip(a.targets, b.targets)))


@pytest.mark.parametrize("rank,world", [(0, 1), (1, 2)])
def test_workers_read_the_batches_of_the_main_thread(tiny_split_dir, tiny_scenario, rank, world):
    ds, info = _clips(tiny_split_dir, tiny_scenario), DistInfo(rank, world, rank, CPU)
    main = list(iterate_batches(ds, 4, info, 3, 7, workers=0, pad_value=PAD))
    ahead = list(iterate_batches(ds, 4, info, 3, 7, workers=2, pad_value=PAD))
    assert len(main) == len(ahead) == 4
    assert all(_same_batch(a, b) for a, b in zip(main, ahead))
    local = 4 // world
    assert main[0].slots == list(range(rank * local, (rank + 1) * local))
    assert main[0].images.shape[:3] == (local, 2, 3)
    assert "images" not in main[0].targets[0] and "masks" in main[0].targets[0]
    assert _same_batch(main[2], read_batch(ds, 5, 4, info, PAD))   # iteration 5 = the third of 3..6


class _Recording(torch.utils.data.Dataset):
    """Marks each clip with whether a worker process read it."""

    def __init__(self, inner):
        self.inner = inner

    def __getitem__(self, index):
        return dict(self.inner[index], in_worker=torch.utils.data.get_worker_info() is not None)


@pytest.mark.parametrize("workers", [0, 2])
def test_workers_read_in_worker_processes_and_leave_the_global_rng_alone(tiny_split_dir, tiny_scenario, workers):
    ds, info = _Recording(_clips(tiny_split_dir, tiny_scenario)), DistInfo(0, 1, 0, CPU)
    torch.manual_seed(0)
    batches = list(iterate_batches(ds, 2, info, 0, 3, workers=workers, pad_value=PAD))
    assert all(t["in_worker"] == (workers > 0) for b in batches for t in b.targets)
    # checkpoints save the global RNG: starting workers must not draw from it
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))


class _Failing(torch.utils.data.Dataset):
    def __init__(self, inner, bad: int):
        self.inner, self.bad = inner, bad

    def __getitem__(self, index):
        if index == self.bad:
            raise HVPLError(f"frame {index}: cannot read")
        if index == -self.bad:   # not an HVPLError: DataLoader re-raises it
            raise ValueError(f"draw {index}")
        return self.inner[index]

    def __len__(self):
        return len(self.inner)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_worker_error_is_raised_with_its_own_message(tiny_split_dir, tiny_scenario, workers):
    ds = _Failing(_clips(tiny_split_dir, tiny_scenario), bad=5)
    batches = iterate_batches(ds, 2, DistInfo(0, 1, 0, CPU), 0, 4, workers=workers, pad_value=PAD)
    assert len(next(batches).slots) == 2 and len(next(batches).slots) == 2
    with pytest.raises(HVPLError) as err:
        next(batches)   # iteration 2 holds draws 4 and 5
    assert str(err.value) == "frame 5: cannot read"
    videos = VideoDataset(tiny_split_dir / "test_step1.json", tiny_scenario["input"])
    with pytest.raises(HVPLError, match="^frame 1: cannot read$"):
        list(iterate_items(_Failing(videos, bad=1), 2, workers=workers))


def test_workers_stop_when_another_error_stops_the_reading(tiny_split_dir, tiny_scenario):
    import multiprocessing

    ds = _Failing(_clips(tiny_split_dir, tiny_scenario), bad=-3)
    caught = None
    try:
        list(iterate_batches(ds, 2, DistInfo(0, 1, 0, CPU), 0, 4, workers=2, pad_value=PAD))
    except ValueError as exc:
        caught = exc   # held: its traceback references the DataLoader iterator
    assert caught is not None and "draw 3" in str(caught)
    assert multiprocessing.active_children() == []


def test_videos_read_ahead_equal_videos_read_in_order(tiny_split_dir, tiny_scenario):
    videos = VideoDataset(tiny_split_dir / "test_step1.json", tiny_scenario["input"])
    main, ahead = list(iterate_items(videos, 3, workers=0)), list(iterate_items(videos, 3, workers=2))
    assert [v["video_id"] for v in main] == [videos[i]["video_id"] for i in range(3)]
    for a, b in zip(main, ahead):
        assert a.keys() == b.keys() and torch.equal(a["images"], b["images"]) and a["orig_size"] == b["orig_size"]


def test_default_workers(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cuda = torch.device("cuda")
    assert default_workers(CPU, 8) == 0
    assert [default_workers(cuda, t) for t in (1, 2, 3, 16)] == [1, 1, 2, 4]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")   # torchrun: the threads are split between local processes
    assert default_workers(cuda, 6) == 2
