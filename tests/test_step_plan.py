"""hvpl.engine.step_plan: initialising a step-0 model from a weights file."""
from __future__ import annotations

import torch

from hvpl.config import load_run_config
from hvpl.engine.step_plan import load_init_weights
from hvpl.model.hvpl import HVPLModel


def _model(seed: int) -> HVPLModel:
    torch.manual_seed(seed)
    cfg = load_run_config("synth_smoke", "hvpl", None, [])
    return HVPLModel(cfg["model"], "hvpl", 2, [2])


def test_init_weights_copies_every_matching_tensor(tmp_path, capsys):
    src, dst = _model(0), _model(1)
    torch.save({"model": src.state_dict()}, tmp_path / "w.pth")
    load_init_weights(dst, str(tmp_path / "w.pth"))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    err = capsys.readouterr().err
    assert "initialised" in err and "warning" not in err


def test_init_weights_from_differently_named_heads_loads_the_backbone_and_warns(tmp_path, capsys):
    """A VITA-like file: the backbone under our names, the heads under other prefixes."""
    src, dst = _model(0), _model(1)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    renamed = {(k if k.startswith("backbone.") else f"sem_seg_head.{k}"): v for k, v in src.state_dict().items()}
    torch.save(renamed, tmp_path / "vita_like.pth")
    load_init_weights(dst, str(tmp_path / "vita_like.pth"))
    after = dst.state_dict()
    assert all(torch.equal(after[k], src.state_dict()[k]) for k in after if k.startswith("backbone."))
    assert all(torch.equal(after[k], before[k]) for k in after if not k.startswith("backbone."))
    err = capsys.readouterr().err
    assert "only backbone tensors matched" in err and "sem_seg_head" in err
