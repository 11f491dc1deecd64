"""predict(): model file -> YouTube-VIS results."""
from __future__ import annotations

import json

import pytest

from hvpl.config import load_run_config
from hvpl.engine.model_file import load_model_file, rebuild_model
from hvpl.engine.predict import predict
from hvpl.utils.errors import HVPLError
from hvpl.utils.io import read_json
from model_files import save_first_steps

SMALL = ["model.frame_decoder.num_queries=6", "model.video_decoder.num_queries=6"]


@pytest.fixture(scope="module")
def models(tiny_split_dir, tmp_path_factory):
    cfg = load_run_config("synth_smoke", "hvpl", None, SMALL)
    return save_first_steps(cfg, tiny_split_dir, tmp_path_factory.mktemp("predict_models"))


def test_predictions_file_format(models, tiny_split_dir, tmp_path):
    _, step1 = models
    gt = read_json(tiny_split_dir / "test_step1.json")
    out = tmp_path / "predictions.json"
    res = predict(step1, tiny_split_dir / "test_step1.json", out, max_videos=3)
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    videos = {v["id"]: v for v in gt["videos"][:3]}
    seen = {1, 2, 3, 4}
    assert {r["video_id"] for r in res} == set(videos)
    topk = load_model_file(step1)["scenario"]["detections_per_video"]
    for vid in videos:
        assert sum(r["video_id"] == vid for r in res) == topk
    for r in res:
        assert set(r) == {"video_id", "category_id", "score", "segmentations"}
        assert r["category_id"] in seen and 0.0 <= r["score"] <= 1.0
        v = videos[r["video_id"]]
        assert len(r["segmentations"]) == v["length"]
        assert all(s is None or s["size"] == [v["height"], v["width"]] for s in r["segmentations"])
    assert [p.name for p in tmp_path.iterdir()] == ["predictions.json"]   # no temporary file left


def test_predict_wires_deltas_topk_and_class_order(models, tiny_split_dir, tmp_path):
    from hvpl.data.clip_dataset import VideoDataset
    from hvpl.model.inference import predict_video

    _, step1 = models
    res = predict(step1, tiny_split_dir / "test_step1.json", tmp_path / "p.json", max_videos=2)
    ckpt = load_model_file(step1)
    model = rebuild_model(ckpt).eval()
    ds = VideoDataset(tiny_split_dir / "test_step1.json", ckpt["scenario"]["input"])
    expected = []
    for i in range(2):
        expected += predict_video(model, ds[i], ckpt["scenario"]["logit_deltas"],
                                  ckpt["scenario"]["detections_per_video"], class_order=ckpt["class_order"])
    assert res == expected
    no_deltas = predict_video(model, ds[0], None, ckpt["scenario"]["detections_per_video"],
                              class_order=ckpt["class_order"])
    assert [r["score"] for r in no_deltas] != [r["score"] for r in res[:len(no_deltas)]]


def test_predict_is_deterministic(models, tiny_split_dir, tmp_path):
    step0, _ = models
    a = predict(step0, tiny_split_dir / "test_step0.json", tmp_path / "a.json", max_videos=2)
    b = predict(step0, tiny_split_dir / "test_step0.json", tmp_path / "b.json", max_videos=2)
    assert a == b and {r["category_id"] for r in a} <= {1, 2}


def test_frames_of_a_json_without_image_root_come_from_the_cli(models, tiny_split_dir, tmp_path):
    """An official valid/test file has no image_root entry (and null annotations): --image-root gives the frames."""
    from hvpl.cli import main
    from hvpl.data.ytvis import image_root_of

    step0, _ = models
    data = read_json(tiny_split_dir / "test_step0.json")
    frames = image_root_of(data, tiny_split_dir / "test_step0.json")
    official = dict(data, annotations=None)
    official.pop("image_root")
    (tmp_path / "valid.json").write_text(json.dumps(official))
    ref = predict(step0, tiny_split_dir / "test_step0.json", tmp_path / "ref.json", max_videos=2)
    with pytest.raises(HVPLError, match="--image-root"):
        predict(step0, tmp_path / "valid.json", tmp_path / "x.json", max_videos=2)
    assert main(["predict", "--model", str(step0), "--test-json", str(tmp_path / "valid.json"), "--out",
                 str(tmp_path / "p.json"), "--max-videos", "2", "--image-root", str(frames)]) == 0
    assert json.loads((tmp_path / "p.json").read_text()) == json.loads(json.dumps(ref))


def test_a_model_of_a_later_step_on_an_earlier_test_json_is_refused(models, tiny_split_dir, tmp_path, capsys):
    """A step-1 model predicts step-1 classes that test_step0.json lacks: refused before any prediction is written
    (evaluate would reject the file); an earlier model on a later JSON only warns."""
    from hvpl.cli import main

    step0, step1 = models
    out = tmp_path / "p.json"
    assert main(["predict", "--model", str(step1), "--test-json", str(tiny_split_dir / "test_step0.json"),
                 "--out", str(out), "--max-videos", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tiny_split_dir / 'test_step0.json'}: categories lack classes [3, 4]")
    assert "test_step1.json" in err and not out.exists()
    predict(step0, tiny_split_dir / "test_step1.json", out, max_videos=1)
    assert "warning:" in capsys.readouterr().err and out.is_file()


def test_authors_compat_override(models, tiny_split_dir, tmp_path):
    """predict(authors_compat=True) (hvpl predict --authors-compat) = the model with inference.authors_compat on."""
    from hvpl.data.clip_dataset import VideoDataset
    from hvpl.model.inference import predict_video

    _, step1 = models
    test_json = tiny_split_dir / "test_step1.json"
    res = predict(step1, test_json, tmp_path / "c.json", max_videos=1, authors_compat=True)
    ckpt = load_model_file(step1)
    model = rebuild_model(ckpt).eval()
    assert model.authors_compat is False                       # the model file's default
    item = VideoDataset(test_json, ckpt["scenario"]["input"])[0]
    args = (ckpt["scenario"]["logit_deltas"], ckpt["scenario"]["detections_per_video"])
    default = predict_video(model, item, *args, class_order=ckpt["class_order"])
    model.authors_compat = True
    assert res == predict_video(model, item, *args, class_order=ckpt["class_order"]) != default
