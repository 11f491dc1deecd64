"""Scenario splits against hand-made JSONs (protocol.md Section 2 rules, DESIGN.md classes.json)."""
import json
from pathlib import Path

import pytest

from hvpl.data.splits import coco_file_names, make_scenario_split, stratified_resplit, step_classes
from hvpl.utils.errors import HVPLError

# video id -> category ids of its instances (one annotation per entry)
VIDEO_CATS = {1: [1], 2: [1, 2], 3: [2], 4: [3], 5: [3, 4], 6: [4], 7: [1, 3], 8: [2, 4], 9: [1], 10: [2, 2],
              11: [3], 12: [4], 13: [], 14: [1, 4]}


def make_dataset(video_cats=VIDEO_CATS, length=2):
    videos, anns = [], []
    for vid, cats in video_cats.items():
        videos.append({"id": vid, "width": 4, "height": 3, "length": length,
                       "file_names": [f"v{vid}/{t}.jpg" for t in range(length)]})
        for c in cats:
            anns.append({"id": 100 + len(anns), "video_id": vid, "category_id": c, "iscrowd": 0,
                         "segmentations": [None, {"size": [3, 4], "counts": [12]}][:length]})
    # YouTube-VIS 2019's first four names (tests use the dataset name ytvis_2019 too); deliberately not sorted
    names = {1: "person", 2: "giant_panda", 3: "lizard", 4: "parrot"}
    cats = [{"id": c, "name": names[c]} for c in (4, 2, 3, 1)]
    return {"videos": videos, "annotations": anns, "categories": cats}


def write_frames(frames: Path, data: dict) -> None:
    """A frame file of the video's size for every file name of ``data``."""
    from PIL import Image

    for v in data["videos"]:
        for name in v["file_names"]:
            (frames / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (v["width"], v["height"])).save(frames / name)


def write_dataset(ds_root: Path, data: dict | None = None) -> dict:
    """train.json + its frames in the YouTube-VIS layout under ``ds_root``."""
    data = make_dataset() if data is None else data
    (ds_root / "train" / "JPEGImages").mkdir(parents=True)
    (ds_root / "train.json").write_text(json.dumps(data))
    write_frames(ds_root / "train" / "JPEGImages", data)
    return data


def scenario(**kw):
    sc = {"name": "toy", "dataset": "synthetic", "num_classes": 4, "base": 2, "increment": 1,
          "class_order": None, "split": {"test_ratio": 0.4, "seed": 0}}
    sc.update(kw)
    return sc


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "data"
    write_dataset(r)
    return r


def load(p: Path):
    return json.loads(p.read_text())


def test_step_classes():
    assert step_classes([5, 1, 2, 3, 4, 6], 2, 2) == [[5, 1], [2, 3], [4, 6]]


def test_resplit_properties():
    data = make_dataset()
    order = [1, 2, 3, 4]
    train, test = stratified_resplit(data, order, 0.4, seed=3, where="x")
    assert sorted(train + test) == sorted(VIDEO_CATS) and not set(train) & set(test)
    for c in order:
        assert any(c in VIDEO_CATS[v] for v in test), c
        assert any(c in VIDEO_CATS[v] for v in train), c
    assert abs(len(test) - round(0.4 * len(VIDEO_CATS))) <= 1
    for c in order:  # stratified: no class gets more than its share (phase 1 guarantees one)
        n_c = sum(c in VIDEO_CATS[v] for v in VIDEO_CATS)
        assert sum(c in VIDEO_CATS[v] for v in test) <= max(1, -(-2 * n_c // 5))
    assert stratified_resplit(data, order, 0.4, seed=3, where="x") == (train, test)
    others = {tuple(stratified_resplit(data, order, 0.4, seed=s, where="x")[1]) for s in range(6)}
    assert len(others) > 1


def test_resplit_needs_two_videos_per_class():
    with pytest.raises(HVPLError, match="x: class 3 has 1 video"):
        stratified_resplit(make_dataset({1: [1], 2: [1], 3: [3]}), [1, 3], 0.5, 0, "x")


def test_resplit_never_takes_the_last_train_video():
    # class 2 lives only in videos that also hold class 1; every class keeps a train video whatever the seed
    cats = {1: [1, 2], 2: [1, 2], 3: [1], 4: [3], 5: [3]}
    for seed in range(10):
        train, test = stratified_resplit(make_dataset(cats), [1, 2, 3], 0.5, seed, "x")
        for c in (1, 2, 3):
            assert any(c in cats[v] for v in train) and any(c in cats[v] for v in test)


def test_scenario_split_rules(root, tmp_path):
    out = tmp_path / "split"
    classes = make_scenario_split(scenario(class_order=[3, 1, 4, 2]), root, out, seed=None)
    assert classes == load(out / "classes.json")
    assert classes["class_order"] == [3, 1, 4, 2]
    assert classes["steps"] == [[3, 1], [4], [2]]
    assert [c["id"] for c in classes["categories"]] == [3, 1, 4, 2]
    assert classes["categories"][0] == {"id": 3, "name": "lizard"}
    assert classes["resplit"] is True and classes["split_seed"] == 0 and classes["dataset"] == "synthetic"
    info = load(out / "split_info.json")
    train_ids, test_ids = set(info["train_video_ids"]), set(info["test_video_ids"])
    assert info["resplit"] and train_ids | test_ids == set(VIDEO_CATS) and not train_ids & test_ids
    for t, new in enumerate(classes["steps"]):
        seen = [c for s in classes["steps"][:t + 1] for c in s]
        tr, te = load(out / f"train_step{t}.json"), load(out / f"test_step{t}.json")
        exp_train_videos = sorted(v for v in train_ids if set(VIDEO_CATS[v]) & set(new))
        assert sorted(v["id"] for v in tr["videos"]) == exp_train_videos
        assert sorted(a["category_id"] for a in tr["annotations"]) == sorted(
            c for v in exp_train_videos for c in VIDEO_CATS[v] if c in new)
        assert [c["id"] for c in tr["categories"]] == new
        exp_test_videos = sorted(v for v in test_ids if set(VIDEO_CATS[v]) & set(seen))
        assert sorted(v["id"] for v in te["videos"]) == exp_test_videos
        assert sorted(a["category_id"] for a in te["annotations"]) == sorted(
            c for v in exp_test_videos for c in VIDEO_CATS[v] if c in seen)
        assert [c["id"] for c in te["categories"]] == seen
        for d in (tr, te):
            assert (out / d["image_root"]).resolve() == (root / "train" / "JPEGImages").resolve()
    full = load(out / "train_all.json")
    assert sorted(v["id"] for v in full["videos"]) == sorted(v for v in train_ids if VIDEO_CATS[v])
    assert [c["id"] for c in full["categories"]] == [3, 1, 4, 2]


def test_scenario_split_deterministic(root, tmp_path):
    a = make_scenario_split(scenario(), root, tmp_path / "a", seed=5)
    b = make_scenario_split(scenario(), root, tmp_path / "b", seed=5)
    assert a == b and a["class_order"] == [1, 2, 3, 4]
    for name in ("train_step0.json", "test_step2.json", "split_info.json"):
        assert load(tmp_path / "a" / name)["videos" if "step" in name else "test_video_ids"] == \
            load(tmp_path / "b" / name)["videos" if "step" in name else "test_video_ids"]


def test_paper_split_files(tmp_path):
    ds_root = tmp_path / "ytvis_2019"
    data = write_dataset(ds_root)
    split = tmp_path / "split_dataset" / "YouTube-2019"
    split.mkdir(parents=True)
    test_vids = {2, 5, 6, 11}
    for name, keep in (("train_split.json", lambda v: v not in test_vids), ("test_split.json", test_vids.__contains__)):
        part = dict(data, videos=[v for v in data["videos"] if keep(v["id"])],
                    annotations=[a for a in data["annotations"] if keep(a["video_id"])])
        (split / name).write_text(json.dumps(part))
    classes = make_scenario_split(scenario(dataset="ytvis_2019"), tmp_path, tmp_path / "out", seed=None)
    assert classes["resplit"] is False and classes["split_seed"] is None
    info = load(tmp_path / "out" / "split_info.json")
    assert set(info["test_video_ids"]) == test_vids
    te = load(tmp_path / "out" / "test_step2.json")
    assert {v["id"] for v in te["videos"]} == test_vids
    (ds_root / "train" / "JPEGImages" / "v2" / "0.jpg").unlink()   # a test video's frame: named by its file
    with pytest.raises(HVPLError, match=r"test_split.json: video 2: frame file .*v2/0.jpg not found"):
        make_scenario_split(scenario(dataset="ytvis_2019"), tmp_path, tmp_path / "out2", seed=None)


def test_split_errors(root, tmp_path):
    with pytest.raises(HVPLError, match="not a permutation"):
        make_scenario_split(scenario(class_order=[1, 2, 3, 9]), root, tmp_path / "x", seed=0)
    with pytest.raises(HVPLError, match="num_classes 5"):
        make_scenario_split(scenario(num_classes=5), root, tmp_path / "x", seed=0)
    assert not (tmp_path / "x").exists()


def test_bad_frames_stop_the_split_before_any_file(root, tmp_path):
    """A missing frame, one of another size than its video, an unreadable one: the split names the JSON, the
    video and the frame, and writes nothing."""
    frames = root / "train" / "JPEGImages"
    out = tmp_path / "out"
    (frames / "v5" / "1.jpg").unlink()
    with pytest.raises(HVPLError, match=r"train.json: video 5: frame file .*v5/1.jpg not found"):
        make_scenario_split(scenario(), root, out, seed=0)
    from PIL import Image

    Image.new("RGB", (4, 5)).save(frames / "v5" / "1.jpg")
    with pytest.raises(HVPLError, match=r"train.json: video 5: frame .*v5/1.jpg is 5x4, the video says 3x4"):
        make_scenario_split(scenario(), root, out, seed=0)
    (frames / "v5" / "1.jpg").write_bytes(b"not an image")
    with pytest.raises(HVPLError, match=r"train.json: video 5: cannot read frame .*v5/1.jpg"):
        make_scenario_split(scenario(), root, out, seed=0)
    assert not out.exists()


def test_coco_step_files(tmp_path):
    ds_root = tmp_path / "ytvis_2019"
    write_dataset(ds_root)
    coco_dir = tmp_path / "coco"
    (coco_dir / "annotations").mkdir(parents=True)
    (coco_dir / "train2017").mkdir()
    poly = [[0.0, 0.0, 2.0, 0.0, 2.0, 2.0]]
    coco = {"images": [{"id": 5, "file_name": "x.jpg", "height": 3, "width": 4},
                       {"id": 6, "file_name": "y.jpg", "height": 3, "width": 4}],
            "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "segmentation": poly},    # -> 1 (person)
                            {"id": 2, "image_id": 6, "category_id": 2, "segmentation": poly}],   # -> 21: not here
            "categories": []}
    (coco_dir / "annotations" / "instances_train2017.json").write_text(json.dumps(coco))
    out = tmp_path / "out"
    make_scenario_split(scenario(dataset="ytvis_2019", data={"use_coco": True}), ds_root, out, seed=0)
    step0 = load(out / "coco_step0.json")
    assert [(a["video_id"], a["category_id"]) for a in step0["annotations"]] == [(5, 1)]
    assert [c["id"] for c in step0["categories"]] == [1, 2]
    assert (out / step0["image_root"]).resolve() == (coco_dir / "train2017").resolve()
    step1 = load(out / "coco_step1.json")   # none of step 1's classes has a COCO instance here
    assert step1["videos"] == [] and step1["annotations"] == [] and (out / "coco_all.json").exists()
    assert sorted(p.name for p in out.glob("coco_*.json")) == sorted(coco_file_names(3))


def test_categories_of_another_dataset_are_refused(tmp_path):
    from hvpl.data.splits import check_dataset_categories

    data = make_dataset()
    check_dataset_categories(data, "ytvis_2019", "t.json")                 # the real names: fine
    check_dataset_categories(data, "my_own_dataset", "t.json")             # not in categories.json: not checked
    with pytest.raises(HVPLError, match="t.json: categories: 4 of 4 names differ from ytvis_2021's"):
        check_dataset_categories(data, "ytvis_2021", "t.json")             # 2019 names under the 2021 scenario
    zero_based = dict(data, categories=[{"id": 0, "name": "person"}] + data["categories"])
    with pytest.raises(HVPLError, match=r"ids \[0\] are not ovis's"):
        check_dataset_categories(zero_based, "ovis", "t.json")


def test_resplit_keeps_unannotated_videos_out_of_the_test_set():
    """A video without annotations belongs to no step's test file: it never takes a test slot."""
    cats = {v: ([1] if v % 2 else [2]) if v <= 10 else [] for v in range(1, 21)}   # 10 annotated, 10 empty
    for seed in range(8):
        train, test = stratified_resplit(make_dataset(cats), [1, 2], 0.3, seed, "x")
        assert all(cats[v] for v in test), (seed, test)
        assert len(test) == round(0.3 * 10) and sorted(train + test) == sorted(cats)


def test_class_orders_permute_the_classes_not_the_videos(root, tmp_path):
    """Order 0 is the scenario's own order; order k >= 1 a permutation drawn from k (base classes included),
    recorded in classes.json, the same for the same k, with the train/test videos of order 0."""
    from hvpl.data.splits import permuted_order

    own = make_scenario_split(scenario(class_order=[3, 1, 4, 2]), root, tmp_path / "o0", seed=None)
    assert own["order"] == 0 and own["class_order"] == [3, 1, 4, 2]
    drawn = {k: permuted_order([3, 1, 4, 2], k) for k in range(1, 6)}
    assert all(sorted(o) == [1, 2, 3, 4] for o in drawn.values())
    assert len({tuple(o) for o in drawn.values()} | {(3, 1, 4, 2)}) > 2       # orders differ
    assert {o[0] for o in drawn.values()} != {3}                              # the base classes are drawn too
    one = make_scenario_split(scenario(class_order=[3, 1, 4, 2]), root, tmp_path / "o1", seed=None, order_index=1)
    assert one["order"] == 1 and one["class_order"] == drawn[1] == permuted_order([3, 1, 4, 2], 1)
    assert one["steps"] == [drawn[1][:2], drawn[1][2:3], drawn[1][3:]]
    assert load(tmp_path / "o1" / "classes.json") == one
    for name in ("train_video_ids", "test_video_ids"):
        assert load(tmp_path / "o1" / "split_info.json")[name] == load(tmp_path / "o0" / "split_info.json")[name]
    assert [c["id"] for c in load(tmp_path / "o1" / "train_step0.json")["categories"]] == drawn[1][:2]
    with pytest.raises(HVPLError, match="order index"):
        permuted_order([1, 2], -1)
