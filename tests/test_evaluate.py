"""evaluate_files(): output format, continual breakdowns, bad-input rejection (library and CLI)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from hvpl.evaluation.evaluate import evaluate_files
from hvpl.utils.errors import HVPLError

REF = Path(__file__).parent / "data" / "ytvis_eval_reference"
HVPL = Path(sys.executable).parent / "hvpl"


def rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}


def square(y, x, size=4, hw=12):
    m = np.zeros((hw, hw), bool)
    m[y:y + size, x:x + size] = True
    return m


def tiny_gt():
    """3 videos of 2 frames, categories 1..4; video 1: cat 1, video 2: cats 2 and 3, video 3: cat 4."""
    videos = [{"id": v, "height": 12, "width": 12, "length": 2, "file_names": ["a.jpg", "b.jpg"]} for v in (1, 2, 3)]
    anns = []
    for k, (vid, cat, y) in enumerate([(1, 1, 0), (2, 2, 0), (2, 3, 6), (3, 4, 0)]):
        seg = [rle(square(y, 0)), rle(square(y, 1))]
        anns.append({"id": k + 1, "video_id": vid, "category_id": cat, "iscrowd": 0, "segmentations": seg,
                     "areas": [16, 16]})
    return {"videos": videos, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3, 4)]}


def write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


@pytest.mark.parametrize("case", ["v1", "v2", "v3", "v4"])
def test_reference_files(tmp_path, case):
    out = tmp_path / "metrics.json"
    metrics = evaluate_files(REF / case / "gt.json", REF / case / "dt.json", out)
    expected = json.loads((REF / case / "expected.json").read_text())
    on_disk = json.loads(out.read_text())
    assert list(on_disk["stats"]) == list(expected["stats"])
    for name, val in expected["stats"].items():
        assert abs(on_disk["stats"][name] - val) < 1e-9
    assert set(on_disk["per_class"]) == set(expected["per_class"])
    for c, vals in expected["per_class"].items():
        assert abs(on_disk["per_class"][c]["AP"] - vals["AP"]) < 1e-9
        assert abs(on_disk["per_class"][c]["AR1"] - vals["AR1"]) < 1e-9
    assert metrics["stats"] == on_disk["stats"]


def test_per_task_old_new(tmp_path):
    gt = tiny_gt()
    seg = lambda y: [rle(square(y, 0)), rle(square(y, 1))]
    # cat 1 perfect; cat 2 missed; cat 3 perfect; cat 4 perfect but predicted as cat 1 (a false positive of cat 1)
    results = [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": seg(0)},
               {"video_id": 2, "category_id": 3, "score": 0.8, "segmentations": seg(6)},
               {"video_id": 3, "category_id": 1, "score": 0.95, "segmentations": seg(0)}]
    classes = {"steps": [[1, 2], [3, 4], [5]], "class_order": [1, 2, 3, 4, 5]}
    m = evaluate_files(write(tmp_path, "gt.json", gt), write(tmp_path, "res.json", results), tmp_path / "m.json",
                       classes_path=write(tmp_path, "classes.json", classes), step=1)
    # per class (videos containing the class only): the cat-1 false positive sits in video 3 -> not counted
    assert m["per_class"]["1"]["AP"] == pytest.approx(1.0)
    assert m["per_class"]["2"]["AP"] == 0.0
    assert m["per_class"]["4"]["AP"] == 0.0
    # all videos: cat 1's false positive outranks its true positive -> AP 0.5
    # AP = mean over cats 1..4 of (0.5, 0, 1, 0)
    assert m["stats"]["AP"] == pytest.approx(0.375)
    # task 0 = cats 1, 2 on videos 1, 2: (1 + 0) / 2
    assert m["per_task"]["0"]["AP"] == pytest.approx(0.5)
    # task 1 = cats 3, 4 on videos 2, 3: (1 + 0) / 2
    assert m["per_task"]["1"]["AP"] == pytest.approx(0.5)
    assert set(m["per_task"]) == {"0", "1"}            # tasks seen up to step 1 only
    assert m["AP_old"] == pytest.approx(0.5) and m["AP_new"] == pytest.approx(0.5)
    assert m["step"] == 1 and m["seen_classes"] == [1, 2, 3, 4]
    # step 0 (every GT class in the first task): no old classes
    m0 = evaluate_files(tmp_path / "gt.json", tmp_path / "res.json", tmp_path / "m0.json",
                        classes_path=write(tmp_path, "classes0.json", {"steps": [[1, 2, 3, 4], [5]]}), step=0)
    assert m0["AP_old"] == -1.0 and m0["AP_new"] == pytest.approx(0.375)


def test_gt_of_another_step_is_an_error(tmp_path):
    classes = write(tmp_path, "classes.json", {"steps": [[1, 2], [3, 4], [5]]})
    gt, res = write(tmp_path, "gt.json", tiny_gt()), write(tmp_path, "res.json", [])
    for step in (0, 2):
        with pytest.raises(HVPLError, match="gt.json: categories: .* not the classes seen at step"):
            evaluate_files(gt, res, tmp_path / "m.json", classes_path=classes, step=step)
    assert not (tmp_path / "m.json").exists()


def test_no_detections(tmp_path):
    m = evaluate_files(write(tmp_path, "gt.json", tiny_gt()), write(tmp_path, "res.json", []), tmp_path / "m.json")
    assert m["stats"]["AP"] == 0.0 and m["stats"]["AR1"] == 0.0 and m["stats"]["AP_large"] == -1.0
    assert all(v["AP"] == 0.0 for v in m["per_class"].values())


def test_polygon_and_uncompressed_gt(tmp_path):
    gt = tiny_gt()
    poly = [[0.0, 0.0, 4.0, 0.0, 4.0, 4.0, 0.0, 4.0]]
    gt["annotations"][0]["segmentations"] = [poly, None]
    r = mask_utils.frPyObjects(poly, 12, 12)
    mask = mask_utils.decode(r)[:, :, 0]
    counts = []  # uncompressed RLE of the same mask (column-major runs starting with zeros)
    flat, cur, run = mask.flatten(order="F"), 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    gt["annotations"][1]["segmentations"] = [{"size": [12, 12], "counts": counts}, None]
    res = [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [rle(mask.astype(bool)), None]},
           {"video_id": 2, "category_id": 2, "score": 0.9, "segmentations": [rle(mask.astype(bool)), None]}]
    m = evaluate_files(write(tmp_path, "gt.json", gt), write(tmp_path, "res.json", res), tmp_path / "m.json")
    assert m["per_class"]["1"]["AP"] == pytest.approx(1.0)
    assert m["per_class"]["2"]["AP"] == pytest.approx(1.0)


def _good_result():
    return {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [rle(square(0, 0)), None]}


BAD_RESULTS = {
    "unknown_video": ([dict(_good_result(), video_id=99)], "video_id 99"),
    "unknown_category": ([dict(_good_result(), category_id=7)], "category_id 7"),
    "wrong_length": ([dict(_good_result(), segmentations=[None])], "'segmentations' has 1 entries"),
    "wrong_mask_size": ([dict(_good_result(), segmentations=[rle(np.ones((5, 5), bool)), None])], "mask size"),
    "bad_score": ([dict(_good_result(), score="high")], "score"),
    "corrupt_rle": ([dict(_good_result(), segmentations=[{"size": [12, 12], "counts": "garbage!!"}, None])],
                    "not a compressed RLE string (character 'r' at 2)"),
    "short_uncompressed_rle": ([dict(_good_result(), segmentations=[{"size": [12, 12], "counts": [3, 4]}, None])],
                               "cover 7 pixels, the mask has 12x12"),
    "not_a_list": ({"video_id": 1}, "list"),
    "rle_of_another_size": ([dict(_good_result(), segmentations=[{"size": [12, 12], "counts": "0i0"}, None])],
                            "cover 25 pixels, the mask has 12x12"),
    "unhashable_video_id": ([dict(_good_result(), video_id=[1])], "must be integers or strings"),
}


@pytest.mark.parametrize("name", sorted(BAD_RESULTS))
def test_bad_results_library(tmp_path, name):
    results, needle = BAD_RESULTS[name]
    gt = write(tmp_path, "gt.json", tiny_gt())
    res = write(tmp_path, "res.json", [_good_result()] + results if isinstance(results, list) else results)
    with pytest.raises(HVPLError) as info:
        evaluate_files(gt, res, tmp_path / "m.json")
    assert "res.json" in str(info.value) and needle in str(info.value)
    assert not (tmp_path / "m.json").exists()


def test_bad_gt(tmp_path):
    gt = tiny_gt()
    gt["annotations"][2]["category_id"] = 42
    with pytest.raises(HVPLError, match=r"gt.json: annotations\[2\]: category_id 42"):
        evaluate_files(write(tmp_path, "gt.json", gt), write(tmp_path, "res.json", []), tmp_path / "m.json")
    gt = tiny_gt()
    gt["annotations"][0]["segmentations"].append(None)
    with pytest.raises(HVPLError, match=r"annotations\[0\]"):
        evaluate_files(write(tmp_path, "gt.json", gt), write(tmp_path, "res.json", []), tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("field, value, needle", [
    ("polygon", [[1, 1, 2]], r"annotations\[0\] frame 0: a polygon needs an even number"),
    ("rle", {"size": [12, 12], "counts": "PPPPPPPP"}, r"annotations\[0\] frame 0: RLE 'counts' is a truncated"),
    ("id", [1], r"annotations\[0\]: 'id', 'video_id' and 'category_id' must be integers or strings"),
    ("areas", [16], r"annotations\[0\]: 'areas' must list one value per frame \(2\)"),
    ("areas", ["x", 16], r"annotations\[0\]: 'areas' entries must be non-negative numbers or null"),
])
def test_bad_gt_entries_are_named(tmp_path, field, value, needle):
    """Malformed GT stops with the file and entry named (before pycocotools could hang or crash on it)."""
    gt = tiny_gt()
    ann = gt["annotations"][0]
    if field in ("polygon", "rle"):
        ann["segmentations"][0] = value
    else:
        ann[field] = value
    with pytest.raises(HVPLError, match="gt.json: " + needle):
        evaluate_files(write(tmp_path, "gt.json", gt), write(tmp_path, "res.json", []), tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("value, needle", [("48", "height '48' must be an integer >= 1"),
                                           (0, "height 0 must be an integer >= 1")])
def test_a_bad_video_size_names_the_video_not_its_annotations(tmp_path, value, needle):
    gt = tiny_gt()
    gt["videos"][0]["height"] = value
    with pytest.raises(HVPLError, match=rf"gt.json: videos\[0\] \(id {gt['videos'][0]['id']}\): {needle}"):
        evaluate_files(write(tmp_path, "gt.json", gt), write(tmp_path, "res.json", []), tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def _cli(tmp_path, gt, res):
    out = tmp_path / "out" / "metrics.json"
    proc = subprocess.run([str(HVPL), "evaluate", "--gt", str(gt), "--results", str(res), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    return proc, out


@pytest.mark.skipif(not HVPL.exists(), reason="hvpl console script not installed")
@pytest.mark.parametrize("case", ["truncated", "unknown_video", "wrong_length", "unknown_category"])
def test_bad_results_cli(tmp_path, case):
    gt = write(tmp_path, "gt.json", tiny_gt())
    res = tmp_path / "res.json"
    if case == "truncated":
        res.write_text(json.dumps([_good_result()])[:-15])
        needle = "not valid JSON"
    else:
        results, needle = BAD_RESULTS[case]
        res.write_text(json.dumps(results))
    proc, out = _cli(tmp_path, gt, res)
    assert proc.returncode != 0
    assert "res.json" in proc.stderr and needle in proc.stderr
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary file left either


@pytest.mark.skipif(not HVPL.exists(), reason="hvpl console script not installed")
def test_cli_reference_case(tmp_path):
    shutil.copytree(REF / "v1", tmp_path / "v1")
    proc, out = _cli(tmp_path, tmp_path / "v1" / "gt.json", tmp_path / "v1" / "dt.json")
    assert proc.returncode == 0, proc.stderr
    expected = json.loads((REF / "v1" / "expected.json").read_text())
    got = json.loads(out.read_text())
    assert abs(got["stats"]["AP"] - expected["stats"]["AP"]) < 1e-9


def test_an_empty_polygon_frame_counts_as_missing(tmp_path):
    results = [_good_result()]
    res = write(tmp_path, "res.json", results)
    gt = tiny_gt()
    gt["annotations"][0]["segmentations"][1] = None
    plain = evaluate_files(write(tmp_path, "gt.json", gt), res, tmp_path / "a.json")
    gt["annotations"][0]["segmentations"][1] = []
    empty = evaluate_files(write(tmp_path, "gt_empty.json", gt), res, tmp_path / "b.json")
    assert empty["stats"] == plain["stats"]
