"""hvpl pack: the submission zip (results.json at its root) and its checks against a split without annotations."""
from __future__ import annotations

import json
import zipfile

import pytest

from hvpl.cli import main
from hvpl.data.masks import encode_mask
from hvpl.evaluation.pack import RESULTS_NAME, pack_results
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import read_json


@pytest.fixture()
def blind_split(tiny_split_dir, tmp_path):
    """The last test split as an official valid file: annotations null, every category listed, and predictions
    made from its ground truth (one per annotation, dataset category ids)."""
    data = read_json(tiny_split_dir / "test_step2.json")
    preds = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 0.5 + 0.01 * i,
              "segmentations": a["segmentations"]} for i, a in enumerate(data["annotations"])]
    data["annotations"] = None
    path = tmp_path / "valid.json"
    path.write_text(json.dumps(data))
    pred_path = tmp_path / "predictions.json"
    pred_path.write_text(json.dumps(preds))
    return path, pred_path, data, preds


def _zip_results(path):
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == [RESULTS_NAME]
        return json.loads(zf.read(RESULTS_NAME))


def test_pack_writes_results_at_the_zip_root(blind_split, tmp_path):
    split, pred_path, data, preds = blind_split
    out = tmp_path / "submission.zip"
    assert main(["pack", "--predictions", str(pred_path), "--test-json", str(split), "--out", str(out)]) == 0
    packed = _zip_results(out)
    assert len(packed) == len(preds)
    assert [set(e) for e in packed] == [{"video_id", "category_id", "score", "segmentations"}] * len(preds)
    assert [e["category_id"] for e in packed] == [p["category_id"] for p in preds]
    assert {e["video_id"] for e in packed} == {v["id"] for v in data["videos"]}


def test_class_indices_map_back_to_category_ids(blind_split, tiny_split_dir, tmp_path):
    split, _, _, preds = blind_split
    order = read_json(tiny_split_dir / "classes.json")["class_order"]
    assert order != list(range(len(order)))   # the mapping must change something to be tested
    indexed = [dict(p, category_id=order.index(p["category_id"])) for p in preds]
    path = tmp_path / "indexed.json"
    path.write_text(json.dumps(indexed))
    out = tmp_path / "s.zip"
    pack_results(path, split, out, classes_json=tiny_split_dir / "classes.json", class_indices=True)
    assert [e["category_id"] for e in _zip_results(out)] == [p["category_id"] for p in preds]


def _write(tmp_path, preds):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(preds))
    return path


@pytest.mark.parametrize("case, expected", [
    ("missing_video", "no prediction for this video"),
    ("unknown_video", "is not in the ground truth"),
    ("short_track", "video"),
    ("bad_rle", "frame 0"),
    ("unknown_category", "category_id"),
])
def test_bad_predictions_stop_with_the_entry_and_write_nothing(blind_split, tmp_path, capsys, case, expected):
    split, _, data, preds = blind_split
    preds = [dict(p) for p in preds]
    if case == "missing_video":
        gone = data["videos"][0]["id"]
        preds = [p for p in preds if p["video_id"] != gone]
    elif case == "unknown_video":
        preds[1]["video_id"] = 10 ** 6
    elif case == "short_track":
        preds[1]["segmentations"] = preds[1]["segmentations"][:-1]
    elif case == "bad_rle":
        h, w = data["videos"][0]["height"], data["videos"][0]["width"]
        rle = encode_mask(__import__("numpy").ones((h, w + 1), dtype=bool))
        preds[1]["segmentations"] = [dict(rle, size=[h, w])] + preds[1]["segmentations"][1:]
    elif case == "unknown_category":
        preds[1]["category_id"] = 999
    out = tmp_path / "s.zip"
    assert main(["pack", "--predictions", str(_write(tmp_path, preds)), "--test-json", str(split),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'bad.json'}: ") and expected in err
    if case != "missing_video":
        assert "entry 1" in err
    assert not out.exists() and not list(tmp_path.glob(".s.zip*"))


def test_class_indices_out_of_range_and_without_classes(blind_split, tiny_split_dir, tmp_path):
    split, _, _, preds = blind_split
    path = _write(tmp_path, [dict(p, category_id=99) for p in preds])
    with pytest.raises(HVPLError, match="entry 0: category_id 99 is not a class index"):
        pack_results(path, split, tmp_path / "s.zip", classes_json=tiny_split_dir / "classes.json",
                     class_indices=True)
    with pytest.raises(HVPLError, match="needs --classes"):
        pack_results(path, split, tmp_path / "s.zip", class_indices=True)
