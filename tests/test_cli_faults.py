"""Every writing command on a full disk or a read-only output folder: one line
``error: <path>: no space left on device`` (or ``read-only file system``), exit 2, and nothing written, neither
a partial output nor a temporary (tests/fault_sim.py simulates the file system in this process)."""
from __future__ import annotations

import json

import pytest

from fault_sim import full_disk, read_only
from hvpl.cli import main
from hvpl.config import load_run_config
from model_files import save_first_steps
from test_summary import fake_results

SMALL = ["model.frame_decoder.num_queries=6", "model.video_decoder.num_queries=6"]
FREE_BYTES = 64            # a few bytes free: the first write that needs more fails
SPLIT_FREE_BYTES = 20_000  # room for some of the split's files, not all (the tiny dataset's: 0.5-14 kB each)
REASONS = {"full": "no space left on device", "read-only": "read-only file system"}


@pytest.fixture(scope="module")
def inputs(tiny_split_dir, tiny_synth_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("fault_inputs")
    cfg = load_run_config("synth_smoke", "hvpl", None, SMALL)
    step0, _ = save_first_steps(cfg, tiny_split_dir, root)
    (root / "empty_results.json").write_text("[]")
    fake_results(root)
    return {"split": tiny_split_dir, "synth": tiny_synth_root, "step0": step0, "root": root}


def _commands(i: dict, out) -> dict:
    split, sets = i["split"], [a for s in SMALL for a in ("--set", s)]
    return {
        "synth": ["synth", "--scenario", "synth_smoke", "--out", f"{out}/synth", "--num-videos", "3"],
        "split": ["split", "--scenario", "synth_smoke", "--data-root", str(i["synth"]), "--out", f"{out}/split"],
        "train": ["train", "--scenario", "synth_smoke", "--step", "0", "--train-json", f"{split}/train_step0.json",
                  "--out-dir", f"{out}/step0", "--ckpt-dir", f"{out}/ckpt", *sets,
                  "--set", "scenario.train.step0_iters=2", "--set", "scenario.train.checkpoint_period=1"],
        "predict": ["predict", "--model", str(i["step0"]), "--test-json", f"{split}/test_step0.json",
                    "--out", f"{out}/predictions.json", "--max-videos", "2"],
        "evaluate": ["evaluate", "--gt", f"{split}/test_step0.json", "--results",
                     str(i["root"] / "empty_results.json"), "--out", f"{out}/metrics.json"],
        "ogc-memory": ["ogc-memory", "--scenario", "synth_smoke", "--step", "1", "--prev-model", str(i["step0"]),
                       "--train-json", f"{split}/train_step0.json", "--out", f"{out}/ogc_basis.pt", *sets],
        "summarize": ["summarize", "--results-dir", str(i["root"] / "results"), "--out", f"{out}/summary.csv",
                      "--plots-dir", f"{out}/plots"],
    }


@pytest.mark.parametrize("fault", ["full", "read-only"])
@pytest.mark.parametrize("command", ["synth", "split", "train", "predict", "evaluate", "ogc-memory", "summarize"])
def test_a_failed_write_is_one_line_exit_2_and_leaves_nothing(inputs, tmp_path, monkeypatch, capsys, command,
                                                              fault):
    out = tmp_path / "out"
    out.mkdir()
    argv = _commands(inputs, out)[command]
    if fault == "full":
        full_disk(monkeypatch, out, FREE_BYTES)
    else:
        read_only(monkeypatch, out)
    code = main(argv)
    monkeypatch.undo()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: {out}/") and lines[0].endswith(REASONS[fault]), err
    assert "Traceback" not in err
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    # training's live log in its checkpoint folder (not an output) may hold the iterations done before the failure
    assert [p for p in left if not p.startswith("ckpt/")] == [], left


def test_split_on_a_full_disk_leaves_no_partial_folder(inputs, tmp_path, monkeypatch, capsys):
    """The case of issue 19: the split folder held only train_step0.json. Now the files are written in a staged
    folder that is removed; an older split in the folder is left as it was."""
    out = tmp_path / "split"
    argv = ["split", "--scenario", "synth_smoke", "--data-root", str(inputs["synth"]), "--out", str(out)]
    assert main(argv) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "classes.json").write_text(json.dumps({"an": "older split"}))
    before["classes.json"] = (out / "classes.json").read_bytes()
    full_disk(monkeypatch, tmp_path, SPLIT_FREE_BYTES)
    assert main(argv) == 2
    monkeypatch.undo()
    assert capsys.readouterr().err.endswith(f"{out}: no space left on device\n")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]
