"""COCO -> single-image pseudo-videos with the many-to-one category maps."""
import json
from pathlib import Path

import numpy as np
import pytest

from hvpl.data import coco
from hvpl.data.masks import decode_segmentation
from hvpl.data.ytvis import load_ytvis
from hvpl.utils.errors import HVPLError

SHARED = Path("/work/shared/data/categories.json")


def mini_coco():
    images = [{"id": 10, "file_name": "a.jpg", "height": 6, "width": 8},
              {"id": 11, "file_name": "b.jpg", "height": 6, "width": 8},
              {"id": 12, "file_name": "c.jpg", "height": 6, "width": 8}]
    poly = [[1.0, 1.0, 5.0, 1.0, 5.0, 4.0, 1.0, 4.0]]
    rle = {"size": [6, 8], "counts": [8, 4, 36]}
    anns = [
        {"id": 1, "image_id": 10, "category_id": 1, "segmentation": poly, "area": 12.0, "bbox": [1, 1, 4, 3],
         "iscrowd": 0},                                                 # person -> person (1)
        {"id": 2, "image_id": 10, "category_id": 2, "segmentation": poly, "area": 12.0, "bbox": [1, 1, 4, 3],
         "iscrowd": 0},                                                 # bicycle -> motorbike (21)
        {"id": 3, "image_id": 11, "category_id": 4, "segmentation": rle, "area": 4.0, "bbox": [1, 0, 1, 4],
         "iscrowd": 0},                                                 # motorcycle -> motorbike (21), as RLE
        {"id": 5, "image_id": 11, "category_id": 1, "segmentation": rle, "area": 4.0, "bbox": [1, 0, 1, 4],
         "iscrowd": 1},                                                 # a crowd region: dropped
        {"id": 4, "image_id": 12, "category_id": 10, "segmentation": poly, "area": 12.0, "bbox": [1, 1, 4, 3],
         "iscrowd": 0},                                                 # traffic light: no map
    ]
    return {"images": images, "annotations": anns, "categories": [{"id": i, "name": str(i)} for i in (1, 2, 4, 10)]}


def test_category_table_matches_shared_file():
    if not SHARED.is_file():
        pytest.skip("shared categories.json not available")
    assert coco.category_table() == json.loads(SHARED.read_text())


def test_many_to_one_map():
    """Bicycle (2) and motorcycle (4) both become YouTube-VIS 2019's motorbike (21)."""
    assert coco.coco_to_dataset_map("ytvis_2019")[4] == 21 and coco.coco_to_dataset_map("ytvis_2019")[2] == 21


def test_convert(tmp_path):
    out = coco.convert_coco(mini_coco(), "ytvis_2019", where="mini.json")
    assert [v["id"] for v in out["videos"]] == [10, 11]
    assert all(v["length"] == 1 and len(v["file_names"]) == 1 for v in out["videos"])
    assert [(a["video_id"], a["category_id"], a["iscrowd"]) for a in out["annotations"]] == [
        (10, 1, 0), (10, 21, 0), (11, 21, 0)]
    assert len(out["categories"]) == 40
    mask = decode_segmentation(out["annotations"][2]["segmentations"][0], 6, 8)
    expected = np.zeros(48, bool)  # column-major runs: 8 zeros, 4 ones, 36 zeros
    expected[8:12] = True
    np.testing.assert_array_equal(mask, expected.reshape(8, 6).T)
    (tmp_path / "x.json").write_text(json.dumps(out))
    load_ytvis(tmp_path / "x.json")  # a valid YouTube-VIS file


def test_degenerate_polygons_are_dropped_and_logged(capsys):
    data = mini_coco()
    good = [0.0, 0.0, 4.0, 0.0, 4.0, 4.0]
    first = next(a for a in data["annotations"] if not a.get("iscrowd") and a["category_id"] == 1)
    first["segmentation"] = [[1.0, 1.0, 5.0, 5.0]]                      # a 2-point "ring": nothing usable
    second = next(a for a in data["annotations"] if a is not first and isinstance(a["segmentation"], list))
    second["segmentation"] = [[1.0, 1.0, 5.0, 5.0], good]               # one usable ring left
    out = coco.convert_coco(data, "ytvis_2019", where="mini.json")
    assert first["id"] not in [a["coco_id"] for a in out["annotations"]]
    kept = next(a for a in out["annotations"] if a["coco_id"] == second["id"])
    assert kept["segmentations"] == [[good]]
    assert "mini.json: 1 annotations without a usable polygon" in capsys.readouterr().err


def test_layout_and_keep_classes(tmp_path):
    src = tmp_path / "coco" / "annotations" / "instances_train2017.json"
    src.parent.mkdir(parents=True)
    src.write_text(json.dumps(mini_coco()))
    (tmp_path / "coco" / "train2017").mkdir()
    ann, images = coco.coco_layout(tmp_path)
    assert ann == src and images == tmp_path / "coco" / "train2017"
    data = coco.convert_coco(mini_coco(), "ytvis_2019", keep_classes=[21])
    assert [a["category_id"] for a in data["annotations"]] == [21, 21]
    assert [c["id"] for c in data["categories"]] == [21]


def test_errors():
    bad = mini_coco()
    bad["annotations"][0]["image_id"] = 99
    with pytest.raises(HVPLError, match=r"mini.json: annotations\[0\].*unknown image_id 99"):
        coco.convert_coco(bad, "ovis", where="mini.json")
    with pytest.raises(HVPLError, match="no entry for dataset 'kitti'"):
        coco.convert_coco(mini_coco(), "kitti")
    with pytest.raises(HVPLError, match="no COCO instance"):
        coco.convert_coco(mini_coco(), "ytvis_2019", keep_classes=[40])
