"""hvpl.utils.safe_load: no file hvpl reads can run code (a pickle whose __reduce__ would create a marker file),
while every format it reads (model files, checkpoints with numpy RNG state, OGC bases, detectron2 .pkl) loads."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from hvpl.cli import main
from hvpl.utils.errors import HVPLError
from hvpl.utils.safe_load import load_array_pickle, load_torch_file


class _Payload:
    """Unpickling calls os.system(command): what a crafted model file would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _evil_files(tmp_path):
    marker = tmp_path / "code_ran"
    payload = _Payload(f"touch {marker}")
    pth = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "method": payload}, pth)
    pkl = tmp_path / "evil.pkl"
    with open(pkl, "wb") as f:
        pickle.dump({"model": {"w": np.zeros(2)}, "extra": payload}, f)
    return marker, pth, pkl


def test_the_payload_runs_when_unpickled_plainly(tmp_path):
    """The fixture is live: a plain pickle load creates the marker (so the tests below can fail)."""
    marker, _, pkl = _evil_files(tmp_path)
    with open(pkl, "rb") as f:
        pickle.load(f)
    assert marker.exists()


@pytest.mark.parametrize("load", [
    lambda p: load_torch_file(p, "model file"),
    lambda p: load_torch_file(p, "checkpoint", numpy=True),
])
def test_a_torch_file_naming_code_is_refused_without_running_it(tmp_path, load):
    marker, pth, _ = _evil_files(tmp_path)
    with pytest.raises(HVPLError, match=r"evil.pth: refused to load: it names the Python object \S*system"):
        load(pth)
    assert not marker.exists()


def test_a_detectron2_pickle_naming_code_is_refused_without_running_it(tmp_path):
    marker, _, pkl = _evil_files(tmp_path)
    with pytest.raises(HVPLError, match=r"evil.pkl: refused to load: it names the Python object \S*system"):
        load_array_pickle(pkl, "backbone weights")
    assert not marker.exists()


def test_allowed_content_loads(tmp_path):
    """Checkpoints hold numpy's RNG state (only with numpy=True); detectron2 pickles hold arrays and scalars."""
    state = {"rng": np.random.get_state(), "model": {"w": torch.arange(3.0)}, "log": [{"iter": 1}]}
    torch.save(state, tmp_path / "ckpt.pt")
    back = load_torch_file(tmp_path / "ckpt.pt", "checkpoint", numpy=True)
    assert np.array_equal(back["rng"][1], state["rng"][1]) and torch.equal(back["model"]["w"], torch.arange(3.0))
    with pytest.raises(HVPLError, match="refused to load"):
        load_torch_file(tmp_path / "ckpt.pt", "model file")          # a model file has no numpy in it
    arrays = {"model": {"a": np.ones((2, 3), np.float32), "b": np.float64(2.0)}, "__author__": "d2"}
    with open(tmp_path / "w.pkl", "wb") as f:
        pickle.dump(arrays, f)
    back = load_array_pickle(tmp_path / "w.pkl", "weights")
    assert back["model"]["a"].dtype == np.float32 and back["model"]["b"] == 2.0


def test_a_truncated_file_is_a_read_error_naming_it(tmp_path):
    torch.save({"w": torch.zeros(100)}, tmp_path / "ok.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:200])
    with pytest.raises(HVPLError, match="cut.pt: cannot read model file: not a complete file"):
        load_torch_file(tmp_path / "cut.pt", "model file")


def test_cli_predict_with_a_crafted_model_exits_2_and_runs_nothing(tmp_path, capsys):
    marker, pth, _ = _evil_files(tmp_path)
    code = main(["predict", "--model", str(pth), "--test-json", str(tmp_path / "t.json"),
                 "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {pth}: refused to load") and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "p.json").exists()


def test_checkpoints_and_bases_naming_code_are_not_run(tmp_path):
    """A crafted checkpoint is skipped (resume looks for the previous one); a crafted basis is an error."""
    from hvpl.continual.ogc import load_basis
    from hvpl.engine.checkpoint import load_latest

    marker, pth, _ = _evil_files(tmp_path)
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    os.replace(pth, ckpts / "ckpt_00000010.pt")
    assert load_latest(ckpts) is None
    torch.save({"basis": _Payload(f"touch {marker}"), "step": 1}, tmp_path / "basis.pt")
    with pytest.raises(HVPLError, match="basis.pt: refused to load"):
        load_basis(tmp_path / "basis.pt")
    assert not marker.exists()
