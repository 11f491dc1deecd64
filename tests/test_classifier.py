"""Tests for hvpl.model.classifier: MLP, IncrementalClassifier growth, logit manipulation (hand values)."""
import math

import pytest
import torch

from hvpl.model.classifier import MLP, IncrementalClassifier, deltas_for_groups, manipulate_logits, task_slices

torch.set_num_threads(1)


def _logit(p):
    return math.log(p / (1 - p))


def _sig(z):
    return 1 / (1 + math.exp(-z))


def test_mlp_matches_manual_composition():
    torch.manual_seed(0)
    mlp = MLP(4, 6, 3, 3)
    x = torch.randn(5, 4)
    l0, l1, l2 = mlp.layers
    ref = x @ l0.weight.T + l0.bias
    ref = torch.relu(ref) @ l1.weight.T + l1.bias
    ref = torch.relu(ref) @ l2.weight.T + l2.bias
    torch.testing.assert_close(mlp(x), ref)
    assert len(MLP(4, 6, 3, 1).layers) == 1


def test_classifier_order_and_shapes():
    torch.manual_seed(0)
    clf = IncrementalClassifier(8, 3, [3, 2])
    x = torch.randn(2, 5, 8)
    out = clf(x)
    assert out.shape == (2, 5, 3 + 2 + 1)
    torch.testing.assert_close(out[..., :3], clf.heads[0](x))
    torch.testing.assert_close(out[..., 3:5], clf.heads[1](x))
    torch.testing.assert_close(out[..., 5:], clf.no_object(x))
    assert clf.num_classes == 5 and task_slices(clf.classes_per_task) == [slice(0, 3), slice(3, 5)]


def test_add_task_copies_no_object_head():
    torch.manual_seed(0)
    clf = IncrementalClassifier(8, 2, [3])
    head = clf.add_task(4)
    x = torch.randn(7, 8)
    out = clf(x)
    # every new-class logit equals the no-object logit at initialisation
    for c in range(3, 7):
        torch.testing.assert_close(out[:, c], out[:, -1])
    assert head.layers[-1].weight.shape == (4, 8)
    # independent copies: changing the new head leaves no-object unchanged
    with torch.no_grad():
        head.layers[0].weight.add_(1.0)
    torch.testing.assert_close(clf(x)[:, -1], out[:, -1])


def test_add_task_param_count_paper_size():
    clf = IncrementalClassifier(256, 3, [20])
    before = sum(p.numel() for p in clf.parameters())
    clf.add_task(2)
    assert sum(p.numel() for p in clf.parameters()) - before == 2 * (256 * 256 + 256) + 256 * 2 + 2


def test_manipulate_logits_positive_delta_hand_values():
    # K = 4 classes, own = {2, 3}; O = {0, 1}
    z = torch.tensor([[-1.0, -0.5, 2.0, -1.0, 0.5]])
    out = manipulate_logits(z, slice(2, 4), 0.4)
    mass = 0.4 * (_sig(-1.0) + _sig(-0.5))     # sum 0.65 < 1: not clipped
    assert out[0, 4].item() == pytest.approx(_logit(mass), abs=1e-5)
    assert out[0, 0].item() == -10.0 and out[0, 1].item() == -10.0
    assert out[0, 2].item() == 2.0 and out[0, 3].item() == -1.0
    assert z[0, 0].item() == -1.0  # input untouched


def test_manipulate_logits_clamps_probability():
    z = torch.tensor([[5.0, 5.0, 5.0, 0.0]])  # 3 classes, own = {2}
    out = manipulate_logits(z, [2], 1.0)       # 1.0 * (~2) clipped to 1 -> clamped to 0.999
    assert out[0, 3].item() == pytest.approx(_logit(0.999), abs=1e-4)
    z = torch.tensor([[-30.0, -30.0, 0.0, 0.0]])
    out = manipulate_logits(z, [2], 0.5)       # ~0 -> clamped to 0.001
    assert out[0, 3].item() == pytest.approx(_logit(0.001), abs=1e-4)


def test_manipulate_logits_clips_mass_before_scaling():
    # mass = sigmoid(3) + sigmoid(2) ~ 1.83 > 1: clipped to 1 first, then scaled -> no-object prob = delta;
    # scaling first would give min(0.4 * 1.83, 1) ~ 0.73 (the order the authors / ECLIPSE do not use)
    z = torch.tensor([[3.0, 2.0, 0.0, 0.0]])   # 3 classes, own = {2}
    out = manipulate_logits(z, [2], 0.4)
    assert out[0, 3].item() == pytest.approx(_logit(0.4), abs=1e-5)


def test_manipulate_logits_negative_and_zero_delta():
    z = torch.tensor([[0.3, -0.2, 1.5]])       # 2 classes, own = {0}
    out = manipulate_logits(z, [0], -0.5)
    assert out[0, 2].item() == pytest.approx(_logit(0.5 * _sig(1.5)), abs=1e-5)
    assert out[0, 1].item() == -10.0 and out[0, 0].item() == pytest.approx(0.3)
    out0 = manipulate_logits(z, [0], 0.0)
    assert out0[0, 2].item() == pytest.approx(1.5)
    assert out0[0, 1].item() == -10.0


def test_deltas_for_groups():
    assert deltas_for_groups([0.4, 0.5], 1) == [0.4]
    assert deltas_for_groups([0.4, 0.5], 4) == [0.4, 0.5, 0.5, 0.5]
    with pytest.raises(ValueError):
        deltas_for_groups([], 2)
