"""Joint training on videos and COCO pseudo-videos: the draw interleaving and the step's dataset."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hvpl.config import load_run_config
from hvpl.data.joint_dataset import JointClipDataset
from hvpl.engine import step_plan
from hvpl.engine.trainer import train_step
from hvpl.utils.errors import HVPLError

SMALL = ["model.frame_decoder.num_queries=6", "model.video_decoder.num_queries=6", "model.loss.num_points=48",
         "scenario.train.batch_size=2", "scenario.train.checkpoint_period=0"]


class _Source:
    """A stand-in dataset recording the draw numbers it is asked for."""

    def __init__(self, name: str):
        self.name, self.asked = name, []

    def __getitem__(self, i):
        self.asked.append(i)
        return {"source": self.name, "draw": i}

    def __len__(self):
        return 3


@pytest.mark.parametrize("ratio, images", [(0.75, 400), (1.0, 350), (0.25, 560)])
def test_draws_interleave_at_the_ratio_with_consecutive_draws_per_source(ratio, images):
    """700 draws at image:video = 1:r hold 700 / (1 + r) image draws; each source sees 0, 1, 2, ... in order."""
    videos, imgs = _Source("video"), _Source("image")
    ds = JointClipDataset(videos, imgs, ratio)
    items = [ds[i] for i in range(700)]
    assert sum(x["source"] == "image" for x in items) == images
    assert imgs.asked == list(range(images)) and videos.asked == list(range(700 - images))
    assert [ds[i] for i in range(700)] == items   # a function of the draw number only


def test_equal_ratio_alternates_and_bad_ratio_raises():
    ds = JointClipDataset(_Source("video"), _Source("image"), 1.0)
    assert [ds.source(i)[0] for i in range(4)] == ["video", "image", "video", "image"]
    for bad in (0.0, -1.0):
        with pytest.raises(HVPLError, match="coco_ratio"):
            JointClipDataset(_Source("video"), _Source("image"), bad)
    with pytest.raises(IndexError):
        ds.source(-1)


def _split_with_coco(src: Path, dst: Path, categories=None) -> Path:
    """Copy step 0's training JSON and classes.json, and write coco_step0.json: each training video's first frame
    as a one-frame pseudo-video (absolute image roots, so the copies read the original frames)."""
    dst.mkdir(parents=True, exist_ok=True)
    train = json.loads((src / "train_step0.json").read_text())
    train["image_root"] = str((src / train["image_root"]).resolve())
    (dst / "train_step0.json").write_text(json.dumps(train))
    (dst / "classes.json").write_text((src / "classes.json").read_text())
    videos = [dict(v, id=1000 + v["id"], length=1, file_names=v["file_names"][:1]) for v in train["videos"]]
    anns = [dict(a, id=5000 + a["id"], video_id=1000 + a["video_id"], segmentations=a["segmentations"][:1],
                 areas=(a.get("areas") or [None])[:1], bboxes=(a.get("bboxes") or [None])[:1])
            for a in train["annotations"] if a["segmentations"][0] is not None]
    coco = {"videos": [v for v in videos if any(a["video_id"] == v["id"] for a in anns)], "annotations": anns,
            "categories": categories or train["categories"], "image_root": train["image_root"]}
    (dst / "coco_step0.json").write_text(json.dumps(coco))
    return dst


def _cfg(*extra):
    return load_run_config("synth_smoke", "hvpl", None, SMALL + ["scenario.data.use_coco=true", *extra])


def test_step_dataset_mixes_in_the_coco_pseudo_videos(tiny_split_dir, tmp_path):
    split = _split_with_coco(tiny_split_dir, tmp_path / "split")
    plan, ds = step_plan.plan_step(_cfg("scenario.data.coco_ratio=1.0"), 0, split / "train_step0.json", None, 0)
    assert isinstance(ds, JointClipDataset)
    coco_ids = {v["id"] for v in json.loads((split / "coco_step0.json").read_text())["videos"]}
    video, image = ds[0], ds[1]
    assert video["video_id"] not in coco_ids and image["video_id"] in coco_ids
    assert image["images"].shape[0] == plan.num_frames                 # one frame repeated into a clip
    assert all(torch.equal(image["images"][0], f) for f in image["images"][1:])
    assert image["labels"].numel() >= 1 and int(image["labels"].max()) < len(plan.class_order)


def test_without_use_coco_or_a_coco_image_the_step_trains_on_videos(tiny_split_dir, tmp_path):
    split = _split_with_coco(tiny_split_dir, tmp_path / "split")
    no_coco = load_run_config("synth_smoke", "hvpl", None, SMALL)
    assert not isinstance(step_plan.plan_step(no_coco, 0, split / "train_step0.json", None, 0)[1], JointClipDataset)
    coco = json.loads((split / "coco_step0.json").read_text())
    (split / "coco_step0.json").write_text(json.dumps(dict(coco, videos=[], annotations=[])))
    cfg = _cfg("scenario.data.coco_ratio=0.75")
    assert not isinstance(step_plan.plan_step(cfg, 0, split / "train_step0.json", None, 0)[1], JointClipDataset)


def test_a_missing_coco_file_is_an_error_naming_it(tiny_split_dir, tmp_path):
    split = _split_with_coco(tiny_split_dir, tmp_path / "split")
    (split / "coco_step0.json").unlink()
    with pytest.raises(HVPLError, match="coco_step0.json: not found"):
        step_plan.plan_step(_cfg("scenario.data.coco_ratio=0.75"), 0, split / "train_step0.json", None, 0)


def test_coco_errors_name_the_file_or_the_key(tiny_split_dir, tmp_path):
    split = _split_with_coco(tiny_split_dir, tmp_path / "split")
    with pytest.raises(HVPLError, match="coco_ratio"):
        step_plan.plan_step(_cfg("scenario.data.coco_ratio=0.0"), 0, split / "train_step0.json", None, 0)
    other = _split_with_coco(tiny_split_dir, tmp_path / "other", categories=[{"id": 6, "name": "not step 0's"}])
    with pytest.raises(HVPLError, match="coco_step0.json"):
        step_plan.plan_step(_cfg("scenario.data.coco_ratio=1.0"), 0, other / "train_step0.json", None, 0)


def test_joint_coco_step_trains(tiny_split_dir, tmp_path):
    split = _split_with_coco(tiny_split_dir, tmp_path / "split")
    cfg = _cfg("scenario.data.coco_ratio=0.5", "scenario.train.step0_iters=2", "scenario.train.step0_lr_drop=1",
               "scenario.train.log_period=1")
    final = train_step(cfg, step=0, train_json=split / "train_step0.json", out_dir=tmp_path / "out", seed=0)
    lines = [json.loads(x) for x in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    assert final.is_file() and [x["iter"] for x in lines if "iter" in x] == [1, 2]
