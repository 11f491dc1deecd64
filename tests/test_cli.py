"""hvpl.cli: output paths checked before anything is written; errors as one line with exit code 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from hvpl.cli import main


@pytest.mark.parametrize("argv, message", [
    (["synth", "--scenario", "synth_smoke", "--out", "{file}"], "--out {file}: exists and is not a folder"),
    (["split", "--scenario", "synth_smoke", "--data-root", "{tmp}", "--out", "{file}"],
     "--out {file}: exists and is not a folder"),
    (["train", "--scenario", "synth_smoke", "--step", "0", "--train-json", "x.json", "--out-dir", "{file}"],
     "--out-dir {file}: exists and is not a folder"),
    (["evaluate", "--gt", "g.json", "--results", "r.json", "--out", "{tmp}"], "--out {tmp}: is a folder"),
    (["predict", "--model", "m.pth", "--test-json", "t.json", "--out", "{file}/p.json"], "{file} is a file"),
    (["summarize", "--results-dir", "{tmp}", "--plots-dir", "{file}"], "--plots-dir {file}: exists and is not"),
])
def test_output_paths_that_cannot_be_written_stop_before_anything(tmp_path, capsys, argv, message):
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    fill = {"file": str(blocker), "tmp": str(tmp_path)}
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message.format(**fill) in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_split_without_data_root_uses_the_scenario_root_else_datasets_root(tmp_path, capsys, monkeypatch):
    """--data-root is optional: the scenario's data.root, else $DATASETS_ROOT, else a clear error."""
    from hvpl.config import load_scenario
    from hvpl.data.synthetic import generate_synthetic

    monkeypatch.delenv("DATASETS_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["split", "--scenario", "ytvis2019_20-2", "--out", "a"]) == 2      # no data.root
    assert "no data root given and DATASETS_ROOT is not set" in capsys.readouterr().err
    monkeypatch.setenv("DATASETS_ROOT", str(tmp_path / "nowhere"))
    assert main(["split", "--scenario", "ytvis2019_20-2", "--out", "a"]) == 2
    assert str(tmp_path / "nowhere") in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    sc = load_scenario("synth_smoke")                                             # data.root, relative
    generate_synthetic(Path(sc["data"]["root"]), num_classes=sc["num_classes"], **sc["synthetic"])
    assert main(["split", "--scenario", "synth_smoke", "--out", "b"]) == 0
    assert (tmp_path / "b" / "classes.json").is_file()


def test_synth_writes_the_scenario_classes_with_the_size_overrides(tmp_path, capsys):
    import json

    from hvpl.config import load_scenario

    argv = ["synth", "--scenario", "synth_smoke", "--out", str(tmp_path / "d"), "--num-videos", "3",
            "--num-frames", "2", "--height", "32", "--width", "40"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "d" / "train.json").read_text())
    assert len(data["categories"]) == load_scenario("synth_smoke")["num_classes"]
    assert [(v["length"], v["height"], v["width"]) for v in data["videos"]] == [(2, 32, 40)] * 3
    assert main(["synth", "--scenario", "ytvis2019_20-2", "--out", str(tmp_path / "e")]) == 2
    assert "has no 'synthetic' section" in capsys.readouterr().err
