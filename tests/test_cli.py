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


def _options(parser):
    """(subcommand, option strings, action) of every option and positional of every subcommand."""
    import argparse

    for sub in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for name, p in sub.choices.items():
            for action in p._actions:
                if not isinstance(action, argparse._HelpAction):
                    yield name, action.option_strings or [action.dest], action


def test_every_option_has_help_text():
    from hvpl.cli import build_parser

    options = list(_options(build_parser()))
    assert len(options) > 50
    missing = [f"{name} {'/'.join(opts)}" for name, opts, action in options if not (action.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize("argv, message", [
    (["train", "--threads", "-1"], "argument --threads: -1 is below the minimum 1"),
    (["train", "--workers", "-2"], "argument --workers: -2 is below the minimum 0"),
    (["predict", "--max-videos", "-3"], "argument --max-videos: -3 is below the minimum 1"),
    (["predict", "--max-videos", "0"], "argument --max-videos: 0 is below the minimum 1"),
    (["ogc-memory", "--seed", "x"], "argument --seed: 'x' is not an integer"),
    (["synth", "--num-videos", "0"], "argument --num-videos: 0 is below the minimum 1"),
    (["params", "--step", "-1"], "argument --step: -1 is below the minimum 0"),
])
def test_negative_counts_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and f"hvpl {argv[0]}: error: {message}" in capsys.readouterr().err
