"""YouTube-VIS/OVIS loading, validation and dataset layouts."""
import json

import numpy as np
import pytest

from hvpl.data.masks import encode_mask
from hvpl.data.ytvis import filter_classes, load_ytvis, resolve_layout, video_classes
from hvpl.utils.errors import HVPLError


def make_vis(h=4, w=5, length=2):
    """Two videos, two categories, three annotations (compressed RLE, uncompressed RLE, polygon, null)."""
    m = np.zeros((h, w), bool)
    m[1:3, 1:4] = True
    videos = [{"id": i, "width": w, "height": h, "length": length,
               "file_names": [f"v{i}/{t:05d}.jpg" for t in range(length)]} for i in (1, 2)]
    anns = [
        {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [encode_mask(m), None]},
        {"id": 2, "video_id": 1, "category_id": 2, "iscrowd": 0,
         "segmentations": [None, {"size": [h, w], "counts": [h * w]}]},
        {"id": 3, "video_id": 2, "category_id": 2, "iscrowd": 0,
         "segmentations": [[[0, 0, 3, 0, 3, 2]], None]},
    ]
    return {"videos": videos, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_load_valid(tmp_path):
    data = load_ytvis(write(tmp_path / "a.json", make_vis()))
    assert video_classes(data) == {1: {1, 2}, 2: {2}}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["annotations"][0].update(category_id=9), r"annotations\[0\] \(id 1\): unknown category_id 9"),
    (lambda d: d["annotations"][0]["segmentations"].__setitem__(0, encode_mask(np.ones((3, 5), bool))),
     r"annotations\[0\] \(id 1\) frame 0: mask size 3x5 differs from the video size 4x5"),
    (lambda d: d["videos"].append(dict(d["videos"][0])), "duplicate video id 1"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate annotation id 1"),
    (lambda d: d["annotations"][2].update(video_id=7), "unknown video_id 7"),
    (lambda d: d["annotations"][2]["segmentations"].append(None), "3 segmentations for a video of 2 frames"),
    (lambda d: d["videos"][1].update(length=5), r"videos\[1\] \(id 2\): length 5"),
    (lambda d: d.pop("categories"), "missing keys"),
    (lambda d: d["annotations"][0].update(segmentations=None), r"annotations\[0\] \(id 1\): 'segmentations' must"),
    (lambda d: d["videos"][0].update(file_names=None), r"videos\[0\] \(id 1\): 'file_names' must be a list"),
    (lambda d: d.update(videos={"1": {}}), "'videos' must be a list"),
    (lambda d: d["videos"][0].update(id=[1]), r"videos\[0\]: id \[1\] must be an integer or a string"),
    (lambda d: d["annotations"][1].update(video_id=[2]), r"annotations\[1\] \(id 2\): video_id \[2\] must be"),
    (lambda d: d["categories"][0].update(id=1.5), r"categories\[0\]: id 1.5 must be an integer or a string"),
    # compressed strings are checked all at once: the bad one is still named, after good ones of other entries
    (lambda d: d["annotations"][2]["segmentations"].__setitem__(1, {"size": [4, 5], "counts": "05"}),
     r"annotations\[2\] \(id 3\) frame 1: RLE 'counts' cover 5 pixels, the mask has 4x5"),
    (lambda d: d["annotations"][2]["segmentations"].__setitem__(1, {"size": [4, 5], "counts": "4\n"}),
     r"annotations\[2\] \(id 3\) frame 1: RLE 'counts' is not a compressed RLE string"),
    # malformed but loadable entries (issue 19 4.8): named, not a TypeError/ValueError traceback
    (lambda d: d["videos"].__setitem__(0, 42), r"videos\[0\] must be an object, got int"),
    (lambda d: d["annotations"].__setitem__(1, "x"), r"annotations\[1\] must be an object, got str"),
    (lambda d: d["categories"].__setitem__(0, None), r"categories\[0\] must be an object, got NoneType"),
    (lambda d: d["videos"][0]["file_names"].__setitem__(1, 42),
     r"videos\[0\] \(id 1\): file_names\[1\] 42 must be a non-empty string"),
    (lambda d: d["annotations"][1]["segmentations"][1].update(size=["a", "b"]),
     r"annotations\[1\] \(id 2\) frame 1: RLE 'size' \['a', 'b'\] is not \[H, W\] with integers"),
    (lambda d: d["videos"][0].update(height="4"), r"videos\[0\] \(id 1\): height '4' must be an integer >= 1"),
    (lambda d: d["videos"][1].update(height=0), r"videos\[1\] \(id 2\): height 0 must be an integer >= 1"),
    (lambda d: d["videos"][1].update(width=5.0), r"videos\[1\] \(id 2\): width 5.0 must be an integer >= 1"),
    (lambda d: d["videos"][1].update(length="2"), r"videos\[1\] \(id 2\): length '2' must be an integer"),
])
def test_validation_errors(tmp_path, mutate, message):
    data = make_vis()
    mutate(data)
    path = write(tmp_path / "bad.json", data)
    with pytest.raises(HVPLError, match=message) as info:
        load_ytvis(path)
    assert str(path) in str(info.value)


def test_null_annotations_as_in_official_test_files(tmp_path):
    data = make_vis()
    data["annotations"] = None
    assert load_ytvis(write(tmp_path / "valid.json", data))["annotations"] == []


def test_missing_frames(tmp_path):
    data = dict(make_vis(), image_root="frames")
    path = write(tmp_path / "a.json", data)
    for v in data["videos"]:
        for f in v["file_names"]:
            write(tmp_path / "frames" / f, {})
    load_ytvis(path, frames=True)
    (tmp_path / "frames" / "v2" / "00001.jpg").unlink()
    with pytest.raises(HVPLError, match=r"video 2: frame file .*v2/00001.jpg not found"):
        load_ytvis(path, frames=True)


def test_filter_classes(tmp_path):
    data = make_vis()
    out = filter_classes(data, [1], categories=[data["categories"][0]], drop_empty=True, where="x")
    assert [v["id"] for v in out["videos"]] == [1] and [a["id"] for a in out["annotations"]] == [1]
    kept = filter_classes(data, [1], categories=[], drop_empty=False, where="x")
    assert [v["id"] for v in kept["videos"]] == [1, 2]
    with pytest.raises(HVPLError, match="out.json: no video"):
        filter_classes(data, [1], categories=[], drop_empty=True, video_ids=[2], where="out.json")


def _ytvis_tree(root):
    write(root / "train.json", make_vis())
    (root / "train" / "JPEGImages").mkdir(parents=True)


def test_layout_ytvis_nested_and_env(tmp_path, monkeypatch):
    _ytvis_tree(tmp_path / "ytvis_2019")
    lay = resolve_layout("ytvis_2019", tmp_path)
    assert lay.train_json == tmp_path / "ytvis_2019" / "train.json"
    assert lay.train_frames == tmp_path / "ytvis_2019" / "train" / "JPEGImages"
    assert lay.split_files is None
    monkeypatch.setenv("DATASETS_ROOT", str(tmp_path))
    assert resolve_layout("ytvis_2019").root == tmp_path / "ytvis_2019"
    split = tmp_path / "split_dataset" / "YouTube-2019"
    write(split / "train_split.json", make_vis())
    write(split / "test_split.json", make_vis())
    assert resolve_layout("ytvis_2019", tmp_path / "ytvis_2019").split_files == (
        split / "train_split.json", split / "test_split.json")


@pytest.mark.parametrize("jpeg_level", [True, False])
def test_layout_ovis(tmp_path, jpeg_level):
    write(tmp_path / "ovis" / "annotations" / "train.json", make_vis())
    frames = tmp_path / "ovis" / "train" / ("JPEGImages" if jpeg_level else "")
    frames.mkdir(parents=True)
    lay = resolve_layout("ovis", tmp_path / "ovis")
    assert lay.train_json == tmp_path / "ovis" / "annotations" / "train.json"
    assert lay.train_frames == frames


def test_layout_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("DATASETS_ROOT", raising=False)
    with pytest.raises(HVPLError, match="DATASETS_ROOT"):
        resolve_layout("ovis")
    with pytest.raises(HVPLError, match="no train.json"):
        resolve_layout("ytvis_2021", tmp_path)
    with pytest.raises(HVPLError, match="dataset 'kitti': no train.json"):
        resolve_layout("kitti", tmp_path)


def test_a_dataset_of_ones_own_has_the_youtube_vis_layout(tmp_path):
    (tmp_path / "mydata" / "train" / "JPEGImages").mkdir(parents=True)
    (tmp_path / "mydata" / "train.json").write_text("{}")
    for root in (tmp_path, tmp_path / "mydata"):      # the folder holding it, or the dataset folder itself
        lay = resolve_layout("mydata", root)
        assert lay.train_json == tmp_path / "mydata" / "train.json"
        assert lay.train_frames == tmp_path / "mydata" / "train" / "JPEGImages" and lay.split_files is None


@pytest.mark.parametrize("value", [5, "", ["a"]])
def test_an_image_root_that_is_not_a_path_is_named(tmp_path, value):
    from hvpl.data.ytvis import image_root_of

    data = dict(make_vis(), image_root=value)
    with pytest.raises(HVPLError, match=r"t.json: image_root .* must be a non-empty string"):
        image_root_of(data, tmp_path / "t.json")
