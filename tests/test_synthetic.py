"""The synthetic benchmark generator: layout, determinism, occlusion-consistent masks, class design."""
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from hvpl.data import synthetic as syn
from hvpl.data.masks import decode_segmentation
from hvpl.data.ytvis import load_ytvis, resolve_layout
from hvpl.utils.errors import HVPLError

from conftest import TINY_SYNTH


def test_layout_and_validation(tiny_synth_root):
    lay = resolve_layout("synthetic", tiny_synth_root)
    assert lay.train_json == tiny_synth_root / "train.json"
    data = load_ytvis(lay.train_json, frames=True, image_root=lay.train_frames)
    assert len(data["videos"]) == TINY_SYNTH["num_videos"]
    assert [c["id"] for c in data["categories"]] == list(range(1, TINY_SYNTH["num_classes"] + 1))
    v = data["videos"][0]
    with Image.open(lay.train_frames / v["file_names"][0]) as im:
        assert im.size == (TINY_SYNTH["width"], TINY_SYNTH["height"]) and im.mode == "RGB"
    per_video = Counter(a["video_id"] for a in data["annotations"])
    assert set(per_video) == {v["id"] for v in data["videos"]}
    assert max(per_video.values()) <= TINY_SYNTH["max_instances"]
    # balanced: every class is annotated in several videos
    assert min(Counter(a["category_id"] for a in data["annotations"]).values()) >= 3


def test_masks_visible_part_and_nulls(tiny_synth_root):
    data = json.loads((tiny_synth_root / "train.json").read_text())
    h, w = TINY_SYNTH["height"], TINY_SYNTH["width"]
    nulls = 0
    by_video = {}
    for a in data["annotations"]:
        assert isinstance(a["segmentations"][0] or {"counts": ""}, dict)
        masks = [decode_segmentation(s, h, w) for s in a["segmentations"]]
        assert any(m is not None and m.any() for m in masks), "every instance is visible somewhere"
        for s, m, area in zip(a["segmentations"], masks, a["areas"]):
            if s is None:
                nulls += 1
                assert area is None
            else:
                assert isinstance(s["counts"], str) and m.sum() == area > 0
        by_video.setdefault(a["video_id"], []).append(masks)
    assert nulls > 0, "some objects enter or leave the frame"
    for tracks in by_video.values():
        for t in range(TINY_SYNTH["num_frames"]):
            frame = [m[t] for m in tracks if m[t] is not None]
            total = sum(m.sum() for m in frame)
            assert np.logical_or.reduce(frame).sum() == total if frame else True, "visible masks overlap"


def test_mask_pixels_have_the_class_colour(tiny_synth_root):
    data = json.loads((tiny_synth_root / "train.json").read_text())
    info = {c["id"]: c for c in data["info"]["classes"]}
    video = {v["id"]: v for v in data["videos"]}
    checked = 0
    for a in data["annotations"]:
        spec = info[a["category_id"]]
        if spec["behaviour"] == "shift":
            continue
        v = video[a["video_id"]]
        for t, seg in enumerate(a["segmentations"]):
            m = decode_segmentation(seg, v["height"], v["width"])
            if m is None or m.sum() < 30:
                continue
            img = np.asarray(Image.open(tiny_synth_root / "train" / "JPEGImages" / v["file_names"][t])).astype(float)
            mean = np.median(img[m], axis=0)
            target = np.asarray(syn.COLOURS[spec["colour"]], float)
            others = [np.asarray(c, float) for name, c in syn.COLOURS.items() if name != spec["colour"]]
            d = np.linalg.norm(mean - target)
            assert all(d < np.linalg.norm(mean - o) for o in others)
            checked += 1
    assert checked > 10


def test_deterministic(tmp_path):
    kw = dict(TINY_SYNTH, num_videos=5)
    a = syn.generate_synthetic(tmp_path / "a", **kw)
    b = syn.generate_synthetic(tmp_path / "b", **kw)
    c = syn.generate_synthetic(tmp_path / "c", **dict(kw, seed=1))
    assert a.read_text() == b.read_text() != c.read_text()
    name = json.loads(a.read_text())["videos"][3]["file_names"][2]
    assert (tmp_path / "a/train/JPEGImages" / name).read_bytes() == (tmp_path / "b/train/JPEGImages" / name).read_bytes()


@pytest.mark.parametrize("k", [2, 6, 8, 16])
def test_class_design(k):
    specs = syn.class_specs(k)
    assert len(specs) == len(set(specs)) == k
    names = [syn.class_name(s) for s in specs]
    assert len(set(names)) == k
    if k >= 6:  # some classes differ only in temporal behaviour
        pairs = [(a, b) for a in specs for b in specs if a < b and a[:2] == b[:2]]
        assert pairs
        # and factors are shared across classes
        assert max(Counter(s[0] for s in specs).values()) >= 2
        assert max(Counter(s[1] for s in specs).values()) >= 2


def test_temporal_behaviours():
    rng = np.random.default_rng(0)
    style = syn.DEFAULT_STYLE
    base = syn.make_object(rng, 64, 64, style, shape="circle", colour=(200, 0, 0), behaviour="steady", labelled=True)
    base["shift_to"] = np.array([0.0, 200.0, 0.0], np.float32)
    pulse, shift, zig = (dict(base, behaviour=b) for b in ("pulse", "shift", "zigzag"))
    for t in range(6):
        c0, r0, _, col0 = syn.object_state(base, t, 6, 64, style)
        _, r1, _, _ = syn.object_state(pulse, t, 6, 64, style)
        expected = 1 + style["pulse_amplitude"] * np.sin(2 * np.pi * t / style["pulse_period"] + base["phase"])
        assert r1 / r0 == pytest.approx(expected)
        c2, _, _, _ = syn.object_state(zig, t, 6, 64, style)
        assert np.linalg.norm(c2 - c0) == pytest.approx(style["zigzag_amplitude"] * 64)
        np.testing.assert_allclose(col0, base["colour"])
    np.testing.assert_allclose(syn.object_state(shift, 5, 6, 64, style)[3], base["shift_to"], atol=1e-4)


def test_visible_masks():
    a = np.zeros((4, 4), bool); a[:2] = True          # far
    b = np.zeros((4, 4), bool); b[1:3] = True         # near
    va, vb = syn.visible_masks([a, b])
    np.testing.assert_array_equal(vb, b)
    np.testing.assert_array_equal(va, a & ~b)


@pytest.mark.parametrize("bad", [dict(num_classes=1), dict(num_classes=17), dict(height=8)])
def test_errors(tmp_path, bad):
    with pytest.raises(HVPLError, match="synthetic"):
        syn.generate_synthetic(tmp_path, **dict(TINY_SYNTH, **bad))
    assert not (tmp_path / "train.json").exists()


SMALL_SYNTH = dict(num_classes=4, num_videos=3, num_frames=2, height=32, width=32, max_instances=1, seed=0)


def test_interrupted_generation_leaves_no_partial_output(tmp_path, monkeypatch):
    """A failure after some frames are written leaves neither a frame folder nor train.json (nor temp files)."""
    calls = []
    encode = syn.encode_track

    def failing(masks):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return encode(masks)

    monkeypatch.setattr(syn, "encode_track", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        syn.generate_synthetic(tmp_path, **SMALL_SYNTH)
    assert list(tmp_path.iterdir()) == []


def test_regeneration_replaces_the_frame_folder(tmp_path):
    stale = tmp_path / "train" / "JPEGImages" / "stale.jpg"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    syn.generate_synthetic(tmp_path, **SMALL_SYNTH)
    assert not stale.exists() and len(load_ytvis(tmp_path / "train.json")["videos"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train", "train.json"]
