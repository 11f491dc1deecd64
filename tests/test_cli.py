"""hvpl.cli: output paths checked before anything is written; errors as one line with exit code 2."""
from __future__ import annotations

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
