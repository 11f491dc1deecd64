"""ClipDataset / VideoDataset / clip-consistent transforms on the tiny synthetic split."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from hvpl.data.clip_dataset import ClipDataset, VideoDataset
from hvpl.data.masks import decode_segmentation
from hvpl.utils.errors import HVPLError

T, RANGE = 3, 1


def raw(split_dir, name):
    data = json.loads((split_dir / name).read_text())
    return data, (split_dir / data["image_root"])


@pytest.fixture(scope="module")
def no_flip(tiny_scenario):
    return dict(tiny_scenario["input"], flip=False)


def test_item_matches_independent_decoding(tiny_split_dir, no_flip):
    ds = ClipDataset(tiny_split_dir / "train_step1.json", T, RANGE, no_flip, seed=0)
    data, root = raw(tiny_split_dir, "train_step1.json")
    order = json.loads((tiny_split_dir / "classes.json").read_text())["class_order"]
    videos = {v["id"]: v for v in data["videos"]}
    for i in range(6):
        item = ds[i]
        fi = item["frame_indices"].tolist()
        assert fi == sorted(fi) and len(fi) == T
        assert any(all(abs(f - r) <= RANGE for f in fi) for r in fi)
        v = videos[item["video_id"]]
        frames = np.stack([np.asarray(Image.open(root / v["file_names"][t])) for t in fi])
        assert item["images"].dtype == torch.float32 and item["images"].shape == (T, 3, 48, 48)
        np.testing.assert_array_equal(item["images"].permute(0, 2, 3, 1).numpy(), frames.astype(np.float32))
        exp_labels, exp_masks = [], []
        for a in data["annotations"]:
            if a["video_id"] != v["id"] or all(a["segmentations"][t] is None for t in fi):
                continue
            exp_labels.append(order.index(a["category_id"]))
            exp_masks.append([decode_segmentation(a["segmentations"][t], 48, 48) if a["segmentations"][t]
                              else np.zeros((48, 48), bool) for t in fi])
        assert item["labels"].tolist() == exp_labels
        assert set(exp_labels) <= {2, 3}  # step-1 classes are the 3rd and 4th of the class order
        np.testing.assert_array_equal(item["masks"].numpy(), np.asarray(exp_masks, bool).reshape(item["masks"].shape))
        assert item["masks"].dtype == torch.bool and item["present"].dtype == torch.bool
        np.testing.assert_array_equal(item["present"].numpy(), item["masks"].flatten(2).any(-1).numpy())
        assert item["labels"].dtype == torch.long and item["frame_indices"].dtype == torch.long


def test_deterministic_and_resumable(tiny_split_dir, tiny_scenario):
    path = tiny_split_dir / "train_step0.json"
    a = ClipDataset(path, T, RANGE, tiny_scenario["input"], seed=3)
    for i in range(7):
        a[i]
    b = ClipDataset(path, T, RANGE, tiny_scenario["input"], seed=3)
    for i in (7, 2, 40):
        x, y = a[i], b[i]
        assert x["video_id"] == y["video_id"] and torch.equal(x["images"], y["images"])
        assert torch.equal(x["masks"], y["masks"]) and torch.equal(x["frame_indices"], y["frame_indices"])
    c = ClipDataset(path, T, RANGE, tiny_scenario["input"], seed=4)
    assert any(not torch.equal(a[i]["images"], c[i]["images"]) for i in range(5))
    n = len(a)
    epoch0 = [a.video_position(i) for i in range(n)]
    epoch1 = [a.video_position(i) for i in range(n, 2 * n)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(n)) and epoch0 != epoch1


def test_flip_is_clip_consistent(tiny_split_dir, tiny_scenario):
    ds = ClipDataset(tiny_split_dir / "train_step0.json", T, RANGE, dict(tiny_scenario["input"], flip_prob=1.0))
    data, root = raw(tiny_split_dir, "train_step0.json")
    item = ds[0]
    v = next(v for v in data["videos"] if v["id"] == item["video_id"])
    for j, t in enumerate(item["frame_indices"].tolist()):
        frame = np.asarray(Image.open(root / v["file_names"][t])).astype(np.float32)[:, ::-1]
        np.testing.assert_array_equal(item["images"][j].permute(1, 2, 0).numpy(), frame)


def test_resize_and_crop_consistent(tiny_split_dir):
    cfg = {"min_size_train": [32, 40], "max_size_train": 64, "aug_resize": [56, 64], "aug_max_size": 100,
           "crop": [30, 40], "aug_prob": 1.0, "min_size_test": 48, "max_size_test": 48}
    ds = ClipDataset(tiny_split_dir / "train_all.json", T, RANGE, cfg, seed=1)
    for i in range(4):
        item = ds[i]
        h, w = item["images"].shape[-2:]
        assert min(h, w) in (32, 40) and max(h, w) <= 64
        assert item["masks"].shape[-2:] == (h, w)
        assert item["images"].min() >= 0 and item["images"].max() <= 255
        np.testing.assert_array_equal(item["present"].numpy(), item["masks"].flatten(2).any(-1).numpy())
        assert item["present"].any(1).all()


def test_video_dataset(tiny_split_dir, tiny_scenario):
    vd = VideoDataset(tiny_split_dir / "test_step2.json", tiny_scenario["input"])
    data, root = raw(tiny_split_dir, "test_step2.json")
    assert len(vd) == len(data["videos"])
    item = vd[1]
    v = data["videos"][1]
    assert item["video_id"] == v["id"] and item["orig_size"] == (48, 48) and item["length"] == len(v["file_names"])
    frames = np.stack([np.asarray(Image.open(root / f)) for f in v["file_names"]])
    assert item["images"].dtype == torch.uint8 and item["images"].is_contiguous()
    np.testing.assert_array_equal(item["images"].permute(0, 2, 3, 1).numpy(), frames)
    small = VideoDataset(tiny_split_dir / "test_step2.json", {"min_size_test": 24, "max_size_test": 24})[0]
    assert small["images"].shape[-2:] == (24, 24) and small["orig_size"] == (48, 48)


def test_class_order_fallback_and_errors(tiny_split_dir, tiny_scenario, tmp_path):
    data, root = raw(tiny_split_dir, "train_step0.json")
    data["image_root"] = str(root.resolve())
    (tmp_path / "t.json").write_text(json.dumps(data))
    ds = ClipDataset(tmp_path / "t.json", T, RANGE, tiny_scenario["input"], class_order=[2, 1])
    labels = torch.cat([ds[i]["labels"] for i in range(8)])
    assert set(labels.tolist()) <= {0, 1}
    with pytest.raises(HVPLError, match="category 1 is not in the class order"):
        ClipDataset(tmp_path / "t.json", T, RANGE, tiny_scenario["input"], class_order=[2])
    # a missing frame file
    frames = tmp_path / "frames"
    shutil.copytree(root, frames)
    data["image_root"] = "frames"
    (tmp_path / "t.json").write_text(json.dumps(data))
    victim = frames / data["videos"][0]["file_names"][1]
    victim.unlink()
    with pytest.raises(HVPLError, match="frame file .* not found"):
        ClipDataset(tmp_path / "t.json", T, RANGE, tiny_scenario["input"], class_order=[1, 2])
    # a frame whose size disagrees with the JSON
    Image.new("RGB", (40, 48)).save(victim)
    vd = VideoDataset(tmp_path / "t.json", tiny_scenario["input"])
    with pytest.raises(HVPLError, match="is 48x40, the video says 48x48"):
        vd[0]


def test_clip_without_visible_instance(tiny_split_dir, tiny_scenario, tmp_path):
    data, root = raw(tiny_split_dir, "train_step0.json")
    data["image_root"] = str(root.resolve())
    empty, other = data["videos"][:2]
    data["videos"] = [empty, other]
    ann = dict(data["annotations"][0], video_id=empty["id"])
    ann["segmentations"] = [None] * len(ann["segmentations"])
    visible = next(a for a in data["annotations"] if a["video_id"] == other["id"])
    data["annotations"] = [ann, visible]
    (tmp_path / "t.json").write_text(json.dumps(data))
    ds = ClipDataset(tmp_path / "t.json", T, RANGE, tiny_scenario["input"], class_order=[1, 2])
    item = ds[next(i for i in range(4) if ds.videos[ds.video_position(i)]["id"] == empty["id"])]
    assert item["labels"].shape == (0,) and item["masks"].shape == (0, T, 48, 48)
    assert item["present"].shape == (0, T) and item["images"].shape == (T, 3, 48, 48)
    # no visible instance in any video: an error, not a run on empty clips
    data["annotations"] = [ann]
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(HVPLError, match=r"t.json: no \(non-crowd\) annotation with a segmentation in any frame"):
        ClipDataset(tmp_path / "t.json", T, RANGE, tiny_scenario["input"], class_order=[1, 2])


def test_crowd_regions_are_not_training_instances(tiny_split_dir, tiny_scenario, tmp_path):
    data, root = raw(tiny_split_dir, "train_step0.json")
    data["image_root"] = str(root.resolve())
    video = data["videos"][0]
    data["videos"] = [video]
    anns = [a for a in data["annotations"] if a["video_id"] == video["id"]]
    crowd = dict(anns[0], id=10_000, iscrowd=1)
    items = []
    for name, annotations in (("plain.json", anns), ("crowd.json", anns + [crowd])):
        (tmp_path / name).write_text(json.dumps(dict(data, annotations=annotations)))
        items.append(ClipDataset(tmp_path / name, T, RANGE, tiny_scenario["input"], class_order=[1, 2])[0])
    assert items[0]["labels"].numel() >= 1
    assert torch.equal(items[0]["labels"], items[1]["labels"])   # the crowd copy adds no instance
    assert torch.equal(items[0]["masks"], items[1]["masks"])


def test_frames_follow_the_reference_sampler(tiny_split_dir, tiny_scenario):
    """VITA's sampler: the T-1 extra frames come from the *other* frames within +-range (with replacement)."""
    ds = ClipDataset(tiny_split_dir / "train_step0.json", 2, 1, tiny_scenario["input"], seed=0)
    rng = np.random.default_rng(0)
    pairs = [ds.sample_frames(rng, 5) for _ in range(600)]
    assert all(a < b and b - a == 1 for a, b in pairs)            # never the reference twice, within range
    assert {tuple(p) for p in pairs} == {(0, 1), (1, 2), (2, 3), (3, 4)}
    assert ds.sample_frames(rng, 1) == [0, 0]                      # a one-frame video repeats its frame
    ds4 = ClipDataset(tiny_split_dir / "train_step0.json", 4, 2, tiny_scenario["input"], seed=0)
    for _ in range(200):
        fi = ds4.sample_frames(rng, 9)
        assert fi == sorted(fi) and fi[-1] - fi[0] <= 4 and len(fi) == 4


def test_a_clip_without_visible_instance_is_drawn_again(tiny_split_dir, tiny_scenario, monkeypatch):
    """Draws in which no instance is visible are replaced (same generator) before giving up."""
    ds = ClipDataset(tiny_split_dir / "train_step0.json", T, RANGE, tiny_scenario["input"], seed=0)
    calls = []
    real = ds._instances

    def first_draws_empty(video, frames):
        calls.append(frames)
        labels, masks = real(video, frames)
        return (labels, masks) if len(calls) > 2 else ([], masks[:0])
    monkeypatch.setattr(ds, "_instances", first_draws_empty)
    item = ds[0]
    assert len(calls) == 3 and len(item["labels"]) > 0 and item["present"].any(1).all()
