"""Training parity with the authors' criteria: fixtures made by their code (tools/parity/train_parity_authors.py).

The fixture holds seeded predictions of 10 frame-decoder levels and 3 clip-decoder layers x 3 frame layers, clip
targets, the fixed point sets both sides drew, and what the authors' SetCriterion / VitaSetCriterion (with their
matchers) returned: every weighted loss term, every assignment and the gradient of every prediction tensor.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "train_parity" / "authors_criterion.pt"


def _tool():
    spec = importlib.util.spec_from_file_location("train_parity", ROOT / "tools" / "parity" / "train_parity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def result():
    tool = _tool()
    fx = torch.load(FIXTURE, weights_only=False)
    return fx, tool.compare(fx, tool.run_ours(fx))


def test_every_assignment_is_the_authors(result):
    _, rep = result
    assert rep["assignments_equal"] == {"frame": True, "video": True}


def test_every_loss_term_matches_the_authors(result):
    """40 terms: frame ce/mask/dice x 10 levels, video ce/mask/dice x 3 clip layers (ours: one term per (clip
    layer, frame layer), weighted 1/L; theirs pools the L frame layers), similarity. Ours computes the class and
    point losses in float32 (theirs: float64 for the video CE and all point losses): float32 rounding of sums
    over a few hundred values."""
    fx, rep = result
    assert set(rep["losses"]) == set(fx["losses"]) and len(rep["losses"]) == 40
    for name, row in rep["losses"].items():
        assert row["rel"] < 2e-6, (name, row)


def test_every_prediction_gradient_matches_the_authors(result):
    """Gradients of all 28 prediction tensors (relative to their largest entry; the fixture stores float32)."""
    fx, rep = result
    assert len(rep["grads"]) == len(fx["grads"]) == 28
    for name, row in rep["grads"].items():
        assert row["rel"] < 1e-5, (name, row)
