"""Tests for hvpl.model.tree_scan: the aggregation engines, the layers."""
import pytest
import torch

from hvpl.model.spanning_tree import TreeStructure, grid_mst
from hvpl.model.tree_scan import (ENGINES, LAYER_NORM_EPS, TreeScanLayer, VideoContextEncoder, drop_path_rates,
                                  tree_aggregate)

from reference_impls import tree_aggregate_bruteforce

torch.set_num_threads(1)
TREE_CFG = {"d_state": 1, "expand": 2, "mlp_ratio": 4, "drop_path": 0.0}


def _random_tree(b, n, gen):
    """Random rooted trees (not grid trees): parent of v is uniform in [0, v), then BFS metadata."""
    parent = torch.full((b, n), -1, dtype=torch.long)
    depth = torch.zeros(b, n, dtype=torch.long)
    for s in range(b):
        for v in range(1, n):
            parent[s, v] = int(torch.randint(0, v, (1,), generator=gen))
            depth[s, v] = depth[s, parent[s, v]] + 1
    order = torch.stack([torch.tensor(sorted(range(n), key=lambda v: (int(depth[s, v]), v)))
                         for s in range(b)])
    return TreeStructure(parent, order, depth)


@pytest.mark.parametrize("engine", ENGINES)
def test_engines_match_bruteforce_random_trees(engine):
    gen = torch.Generator().manual_seed(3)
    for b, n, d in [(1, 1, 2), (2, 9, 3), (3, 17, 2)]:
        tree = _random_tree(b, n, gen)
        u = torch.randn(b, n, d, dtype=torch.float64, generator=gen)
        w = torch.rand(b, n, d, dtype=torch.float64, generator=gen)
        ref = tree_aggregate_bruteforce(u, w, tree)
        torch.testing.assert_close(tree_aggregate(u, w, tree, engine=engine), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("engine", ENGINES)
def test_engines_match_bruteforce_grid_trees(engine):
    torch.manual_seed(4)
    tree = grid_mst(torch.randn(2, 3, 5, 4))
    u = torch.randn(2, 15, 3, dtype=torch.float64)
    w = torch.rand(2, 15, 3, dtype=torch.float64)
    torch.testing.assert_close(tree_aggregate(u, w, tree, engine=engine),
                               tree_aggregate_bruteforce(u, w, tree), rtol=1e-10, atol=1e-10)


def test_deep_path_tree():
    """A 1 x Q grid is a path: depth Q-1 exercises many levels / doubling steps."""
    torch.manual_seed(5)
    tree = grid_mst(torch.randn(1, 1, 37, 3))
    assert tree.max_depth >= 18
    u = torch.randn(1, 37, 2, dtype=torch.float64)
    w = torch.rand(1, 37, 2, dtype=torch.float64)
    ref = tree_aggregate_bruteforce(u, w, tree)
    for engine in ENGINES:
        torch.testing.assert_close(tree_aggregate(u, w, tree, engine=engine), ref)


@pytest.mark.parametrize("engine", ENGINES)
def test_gradcheck(engine):
    gen = torch.Generator().manual_seed(6)
    tree = _random_tree(2, 7, gen)
    u = torch.randn(2, 7, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    w = (0.1 + 0.8 * torch.rand(2, 7, 2, dtype=torch.float64, generator=gen)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, c: tree_aggregate(a, c, tree, engine=engine), (u, w))


def test_grad_matches_bruteforce_autograd():
    gen = torch.Generator().manual_seed(7)
    tree = _random_tree(1, 8, gen)
    u = torch.randn(1, 8, 3, dtype=torch.float64, generator=gen)
    w = torch.rand(1, 8, 3, dtype=torch.float64, generator=gen)
    g = torch.randn(1, 8, 3, dtype=torch.float64, generator=gen)
    grads = []
    for fn in (tree_aggregate_bruteforce, lambda a, c, t: tree_aggregate(a, c, t, engine="levels")):
        a, c = u.clone().requires_grad_(), w.clone().requires_grad_()
        (fn(a, c, tree) * g).sum().backward()
        grads.append((a.grad, c.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    c_grad_ref = grads[0][1].clone()
    c_grad_ref[:, 0] = 0   # the root has no edge
    torch.testing.assert_close(c_grad_ref, grads[1][1])


def test_unknown_engine():
    tree = grid_mst(torch.randn(1, 2, 2, 3))
    with pytest.raises(ValueError):
        tree_aggregate(torch.randn(1, 4, 2), torch.rand(1, 4, 2), tree, engine="nope")


def test_tree_ssm_runs_in_float32_under_bf16_autocast():
    """Every part of the mixer (projections, conv, spanning tree, scan) is float32 under autocast: the output is
    the float32 result rounded once to the input's dtype."""
    torch.manual_seed(9)
    ssm = TreeScanLayer(32, TREE_CFG).ssm
    x = torch.randn(2, 3, 5, 32).bfloat16()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        y = ssm(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, ssm(x.float()).bfloat16())


@pytest.mark.parametrize("engine", ["auto", "levels", "doubling", "dense"])
def test_tree_scan_layer_shapes_and_grads(engine):
    torch.manual_seed(8)
    layer = TreeScanLayer(32, dict(TREE_CFG, engine=engine))
    x = torch.randn(2, 3, 5, 32, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert layer.ssm.A_log.grad is not None and layer.ssm.dt_proj.weight.grad.abs().sum() > 0


def test_tree_scan_layer_engines_agree():
    torch.manual_seed(9)
    layer = TreeScanLayer(16, TREE_CFG).eval()
    x = torch.randn(2, 3, 4, 16)
    outs = []
    for engine in ENGINES:
        layer.ssm.engine = engine
        outs.append(layer(x))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(outs[0], outs[2], atol=1e-5, rtol=1e-4)


def test_tree_scan_layer_d_state_two_and_determinism():
    torch.manual_seed(10)
    a = TreeScanLayer(16, dict(TREE_CFG, d_state=2))
    torch.manual_seed(10)
    b = TreeScanLayer(16, dict(TREE_CFG, d_state=2))
    x = torch.randn(1, 2, 6, 16)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


def test_video_context_encoder():
    x = torch.randn(1, 2, 3, 16)
    assert torch.equal(VideoContextEncoder(16, 0, TREE_CFG)(x), x)
    enc = VideoContextEncoder(16, 2, TREE_CFG)
    assert len(enc.layers) == 2 and enc(x).shape == x.shape


def test_tree_scan_layer_matches_authors_layout():
    """No bias on the depthwise 3x3 conv, pre-norms with eps 1e-6 (GrootV), mixer norms at the default."""
    layer = TreeScanLayer(32, TREE_CFG)
    assert layer.ssm.conv.bias is None
    assert layer.norm1.eps == layer.norm2.eps == LAYER_NORM_EPS == 1e-6
    assert layer.ssm.h_norm.eps == layer.ssm.out_norm.eps == 1e-5
    x = torch.randn(1, 2, 3, 32) * 1e-3    # small variance: eps matters
    ref = torch.nn.functional.layer_norm(x, (32,), layer.norm1.weight, layer.norm1.bias, eps=1e-6)
    torch.testing.assert_close(layer.norm1(x), ref, rtol=0, atol=0)


def test_drop_path_rates_rise_linearly():
    assert drop_path_rates(0.2, 6) == pytest.approx([0.0, 0.04, 0.08, 0.12, 0.16, 0.2], abs=1e-7)
    assert drop_path_rates(0.2, 1) == [0.0]
    assert drop_path_rates(0.0, 3) == [0.0, 0.0, 0.0]
    enc = VideoContextEncoder(16, 3, dict(TREE_CFG, drop_path=0.2))
    assert [layer.drop_path.p for layer in enc.layers] == pytest.approx([0.0, 0.1, 0.2], abs=1e-7)


def test_drop_path_active_in_training_only():
    torch.manual_seed(11)
    enc = VideoContextEncoder(16, 2, dict(TREE_CFG, drop_path=0.9))
    x = torch.randn(8, 2, 3, 16)
    for p in enc.parameters():
        p.requires_grad_(False)   # a frozen encoder (incremental steps) still drops paths in train mode
    enc.train()
    torch.manual_seed(0)
    a = enc(x)
    torch.manual_seed(1)
    b = enc(x)
    assert not torch.allclose(a, b)
    enc.eval()
    torch.testing.assert_close(enc(x), enc(x), rtol=0, atol=0)
