"""hvpl visualize: grid layout, overlay colours where the masks are, video picks, labels, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hvpl.cli import main
from hvpl.data.masks import encode_mask
from hvpl.evaluation import visualize as vis

GREY = 100
H, W, T = 64, 96, 5


def _box(top, left, bottom, right):
    mask = np.zeros((H, W), dtype=bool)
    mask[top:bottom, left:right] = True
    return encode_mask(mask)


@pytest.fixture()
def flat_set(tmp_path):
    """Two videos of T uniform grey PNG frames; GT: one box per video; predictions: two boxes in video 1."""
    frames = tmp_path / "frames"
    names = {}
    for vid in (1, 2):
        (frames / f"v{vid}").mkdir(parents=True)
        names[vid] = []
        for t in range(T):
            Image.new("RGB", (W, H), (GREY,) * 3).save(frames / f"v{vid}" / f"{t}.png")
            names[vid].append(f"v{vid}/{t}.png")
    videos = [{"id": v, "height": H, "width": W, "length": T, "file_names": names[v]} for v in (1, 2)]
    anns = [{"id": v, "video_id": v, "category_id": v, "segmentations": [_box(20, 10, 60, 50)] * T,
             "iscrowd": 0} for v in (1, 2)]
    data = {"videos": videos, "annotations": anns, "image_root": "frames",
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    test_json = tmp_path / "test.json"
    test_json.write_text(json.dumps(data))
    preds = [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [_box(20, 10, 60, 50)] * T},
             {"video_id": 1, "category_id": 2, "score": 0.3, "segmentations": [_box(5, 60, 40, 90)] * T}]
    run = tmp_path / "results" / "synth_smoke" / "hvpl" / "seed0" / "step2"
    run.mkdir(parents=True)
    (run / "predictions.json").write_text(json.dumps(preds))
    return test_json, run / "predictions.json", preds


def _cell(grid, row, col, size=(H, W)):
    x0, y0 = vis.LABEL_WIDTH + col * size[1], vis.HEADER_HEIGHT + row * size[0]
    return np.asarray(grid)[y0:y0 + size[0], x0:x0 + size[1]]


def test_grid_layout_and_overlay_colours(flat_set, tmp_path):
    test_json, preds_path, _ = flat_set
    out = tmp_path / "out"
    assert main(["visualize", "--test-json", str(test_json), "--predictions", str(preds_path),
                 "--out-dir", str(out), "--video-ids", "1", "--columns", "3", "--height", str(H)]) == 0
    grid = Image.open(out / "video1.png").convert("RGB")
    assert grid.size == (vis.LABEL_WIDTH + 3 * W, vis.HEADER_HEIGHT + 2 * H)   # 3 of 5 frames, GT + 1 row
    blend = [round(GREY * (1 - vis.ALPHA) + c * vis.ALPHA) for c in vis.PALETTE[0]]
    for row in (0, 1):
        for col in range(3):
            cell = _cell(grid, row, col)
            assert np.abs(cell[50, 30].astype(int) - blend).max() <= 1   # inside track 0, below its label
            assert tuple(cell[59, 30]) == vis.PALETTE[0]                  # its outline: the colour itself
            assert tuple(cell[62, 5]) == (GREY,) * 3                      # outside every mask
    second = _cell(grid, 1, 1)[35, 75].astype(int)                        # the second prediction's colour
    assert np.abs(second - [round(GREY * (1 - vis.ALPHA) + c * vis.ALPHA) for c in vis.PALETTE[1]]).max() <= 1


def test_min_score_and_topk_drop_tracks(flat_set, tmp_path):
    test_json, preds_path, preds = flat_set
    assert [t["score"] for t in vis.video_tracks(preds, 1, None, 0.5)] == [0.9]
    assert [t["score"] for t in vis.video_tracks(preds[::-1], 1, 1, 0.0)] == [0.9]
    out = tmp_path / "out"
    vis.visualize_files(test_json, [preds_path], out, video_ids=["1"], columns=1, min_score=0.5, display_height=H)
    cell = _cell(Image.open(out / "video1.png").convert("RGB"), 1, 0)
    assert tuple(cell[35, 75]) == (GREY,) * 3                             # the 0.3 track is not drawn


def test_labels_topk_and_columns():
    assert vis.run_label("results/synth_smoke/eclipse/seed3/step1/predictions.json") == ("eclipse step 1",
                                                                                         "synth_smoke")
    assert vis.run_label("elsewhere/p.json") == ("p.json", None)
    assert vis.scenario_topk("synth_smoke") >= 1
    assert vis.sample_columns(36, 8) == [0, 5, 10, 15, 20, 25, 30, 35]
    assert vis.sample_columns(3, 8) == [0, 1, 2]
    assert vis.display_size(720, 1280, 160) == (160, 284)
    assert vis.display_size(48, 64, 160) == (160, 213)


def test_pick_covers_every_step():
    data = {"videos": [{"id": i} for i in range(1, 6)],
            "annotations": [{"video_id": 1, "category_id": 1}, {"video_id": 2, "category_id": 1},
                            {"video_id": 3, "category_id": 2}, {"video_id": 5, "category_id": 3}]}
    assert vis.pick_videos(data, [[1], [2, 3]], 2) == [1, 3]
    assert vis.pick_videos(data, [[1], [2, 3]], 3) == [1, 3, 5]   # every class once before any class twice
    assert vis.pick_videos(data, [[1], [2, 3]], 9) == [1, 3, 5, 2, 4]
    data["annotations"].append({"video_id": 10, "category_id": 2})      # 10 after 3, not before (as text)
    assert vis.pick_videos(data, [[2]], 1) == [3]


def test_a_video_the_file_does_not_predict_is_marked(flat_set):
    _, _, preds = flat_set
    assert vis.row_label("hvpl step 0", preds, 1) == "hvpl step 0"
    assert vis.row_label("hvpl step 0", preds, 2) == "hvpl step 0\n(video not predicted)"


def test_gif_has_one_frame_per_video_frame(flat_set, tmp_path):
    test_json, preds_path, _ = flat_set
    vis.visualize_files(test_json, [preds_path], tmp_path / "o", video_ids=["2"], gif=True, labels=["mine"])
    with Image.open(tmp_path / "o" / "video2.gif") as gif:
        assert gif.n_frames == T


@pytest.mark.parametrize("case, expected", [
    ("unknown_video", "entry 0: video_id 7 is not in the ground truth"),
    ("missing_frame", "video 1: frame file"),
    ("unknown_id", "no video with id 9"),
])
def test_bad_input_stops_before_writing(flat_set, tmp_path, capsys, case, expected):
    test_json, preds_path, preds = flat_set
    args = ["visualize", "--test-json", str(test_json), "--predictions", str(preds_path), "--out-dir",
            str(tmp_path / "out")]
    if case == "unknown_video":
        preds_path.write_text(json.dumps([dict(preds[0], video_id=7)]))
    elif case == "missing_frame":
        (tmp_path / "frames" / "v1" / "3.png").unlink()
    else:
        args += ["--video-ids", "9"]
    assert main(args) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sampled_rle_matches_the_decoded_mask():
    rng = np.random.default_rng(0)
    mask = rng.uniform(size=(H, W)) < 0.3
    mask[:, :7] = True                                                  # a run across columns
    for size in ((H, W), (17, 29), (5, 96)):
        ref = vis.sample_mask(mask, size)
        got = vis.sample_segmentation(encode_mask(mask), H, W, size)
        assert got.shape == size and (got == ref).all()
    assert vis.sample_segmentation(None, H, W, (4, 4)) is None
