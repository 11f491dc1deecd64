"""hvpl.data.frame_check: every training frame decoded once before training, remembered per dataset."""
from __future__ import annotations

import json
import os
import shutil

import pytest
from PIL import Image

from hvpl.data.frame_check import CACHE_NAME, verify_frames
from hvpl.data.ytvis import check_video_frames, image_root_of, load_ytvis
from hvpl.utils.errors import HVPLError


@pytest.fixture
def split(tiny_synth_root, tiny_split_dir, tmp_path):
    """A copy of the tiny dataset and its split (the tests damage frames): (train JSON, its data, frame root)."""
    shutil.copytree(tiny_synth_root, tmp_path / "synth")
    shutil.copytree(tiny_split_dir, tmp_path / "split")
    train_json = tmp_path / "split" / "train_step0.json"
    data = load_ytvis(train_json)
    data["image_root"] = str(tmp_path / "synth" / "train" / "JPEGImages")
    train_json.write_text(json.dumps(data))
    root = image_root_of(data, train_json)
    # the shared tiny dataset may carry the cache of other tests' training runs: each test starts without one
    (root / CACHE_NAME).unlink(missing_ok=True)
    (train_json.parent / CACHE_NAME).unlink(missing_ok=True)
    return train_json, data, root


def _frames(data):
    return sum(len(v["file_names"]) for v in data["videos"])


def test_frames_are_decoded_once_then_remembered(split):
    train_json, data, root = split
    assert verify_frames(data["videos"], root, train_json) == _frames(data) > 0
    assert (root / CACHE_NAME).is_file()
    assert verify_frames(data["videos"], root, train_json) == 0
    # a frame rewritten (other size in bytes or mtime) is decoded again, the others are not
    frame = root / data["videos"][0]["file_names"][0]
    Image.open(frame).save(frame, quality=50)
    os.utime(frame, ns=(1, 1))
    assert verify_frames(data["videos"], root, train_json) == 1


def test_a_truncated_frame_passes_the_header_check_but_not_the_decode(split):
    """`hvpl split` reads only the header of a frame cut in half (issue 19 4.6); the full check decodes it."""
    train_json, data, root = split
    video = data["videos"][1]
    frame = root / video["file_names"][1]
    frame.write_bytes(frame.read_bytes()[: frame.stat().st_size // 2])
    check_video_frames(video, root, train_json, sizes=True)                 # the header is intact
    with pytest.raises(HVPLError, match=rf"{train_json}: video {video['id']}: frame {frame} cannot be decoded "
                                        r"\(OSError: image file is truncated"):
        verify_frames(data["videos"], root, train_json)


def test_a_remembered_frame_is_still_checked_against_its_video_size(split):
    train_json, data, root = split
    verify_frames(data["videos"], root, train_json)
    video = data["videos"][0]
    video["height"] += 1
    with pytest.raises(HVPLError, match=rf"video {video['id']}: frame .* is {video['height'] - 1}x"):
        verify_frames(data["videos"], root, train_json)
    video["height"] -= 1
    (root / video["file_names"][0]).unlink()
    with pytest.raises(HVPLError, match=rf"video {video['id']}: frame file .* not found"):
        verify_frames(data["videos"], root, train_json)


def test_an_unwritable_frame_folder_keeps_the_cache_next_to_the_json(split):
    train_json, data, root = split
    (root / CACHE_NAME).mkdir()          # not writable as a file (root ignores permission bits)
    assert verify_frames(data["videos"], root, train_json) == _frames(data)
    assert (train_json.parent / CACHE_NAME).is_file()
    assert verify_frames(data["videos"], root, train_json) == 0
    (train_json.parent / CACHE_NAME).write_text("{not json")            # a corrupt cache is ignored
    assert verify_frames(data["videos"], root, train_json) == _frames(data)


def test_train_stops_on_a_truncated_frame_before_the_first_iteration(split, tmp_path, capsys, monkeypatch):
    """The default (decode) finds it before training; the switch (--frame-check exists / $HVPL_FRAME_CHECK) skips
    the decode."""
    from hvpl.cli import main

    train_json, data, root = split
    frame = root / data["videos"][-1]["file_names"][0]
    frame.write_bytes(frame.read_bytes()[:200])
    argv = ["train", "--scenario", "synth_smoke", "--step", "0", "--train-json", str(train_json),
            "--out-dir", str(tmp_path / "run" / "step0"), "--set", "scenario.train.step0_iters=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"\nerror: {train_json}: video {data['videos'][-1]['id']}: frame {frame} cannot be decoded" in err
    assert not (tmp_path / "run").exists()
    monkeypatch.setenv("HVPL_FRAME_CHECK", "bogus")
    assert main(argv) == 2 and "$HVPL_FRAME_CHECK='bogus': expected one of decode, exists" in capsys.readouterr().err
    calls = []
    monkeypatch.setattr("hvpl.data.frame_check.verify_frames", lambda *a, **k: calls.append(a) or 0)
    monkeypatch.setenv("HVPL_FRAME_CHECK", "exists")
    monkeypatch.setattr("hvpl.engine.trainer.StepTrainer.run", lambda self, hook=None: None)
    monkeypatch.setattr("hvpl.engine.trainer.StepTrainer.finish", lambda self, counts: None)
    monkeypatch.setattr("hvpl.engine.checkpoint.record_finished", lambda *a, **k: None)   # nothing was written
    assert main(argv) == 0 and calls == []
    monkeypatch.delenv("HVPL_FRAME_CHECK")
    assert main(argv + ["--frame-check", "decode"]) == 0 and len(calls) == 1
