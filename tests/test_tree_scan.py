"""Tests for hvpl.model.tree_scan: grid MST, the aggregation engines, the layers."""
import numpy as np
import pytest
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from hvpl.model.tree_scan import (ENGINES, TreeScanLayer, TreeStructure, VideoContextEncoder, grid_edges,
                                  grid_mst, tree_aggregate, tree_aggregate_bruteforce)

torch.set_num_threads(1)
TREE_CFG = {"d_state": 1, "expand": 2, "mlp_ratio": 4, "drop_path": 0.0}


def _grid_costs(x):
    """Independent edge costs: exp(-cosine) from numpy, keyed by (i, j) with i < j."""
    b, t, q, d = x.shape
    f = x.reshape(b, t * q, d).double().numpy()
    f = f / np.linalg.norm(f, axis=-1, keepdims=True)
    ei, ej = grid_edges(t, q)
    return ei, ej, np.exp(-(f[:, ei] * f[:, ej]).sum(-1))


@pytest.mark.parametrize("shape", [(1, 1, 5), (2, 3, 4), (3, 4, 6), (2, 5, 7)])
def test_grid_mst_is_minimum_spanning_tree(shape):
    torch.manual_seed(sum(shape))
    b, t, q = shape
    x = torch.randn(b, t, q, 6)
    tree = grid_mst(x)
    n = t * q
    ei, ej, cost = _grid_costs(x)
    allowed = {(int(i), int(j)): k for k, (i, j) in enumerate(zip(ei, ej))}
    for s in range(b):
        par = tree.parent[s].numpy()
        assert par[0] == -1 and (par[1:] >= 0).all()
        tot = 0.0
        rows, cols = [], []
        for v in range(1, n):
            key = (min(v, par[v]), max(v, par[v]))
            assert key in allowed, f"{key} is not a grid edge"
            tot += cost[s, allowed[key]]
            rows.append(v)
            cols.append(par[v])
        g = csr_matrix((np.ones(n - 1), (rows, cols)), shape=(n, n))
        assert connected_components(g, directed=False)[0] == 1
        ref = minimum_spanning_tree(csr_matrix((cost[s], (ei, ej)), shape=(n, n))).sum()
        assert tot == pytest.approx(ref, rel=1e-6)


def test_grid_mst_bfs_order_and_depth():
    tree = grid_mst(torch.randn(2, 4, 5, 3))
    assert tree.parent.dtype == tree.order.dtype == tree.depth.dtype == torch.long
    for s in range(2):
        order = tree.order[s].tolist()
        assert order[0] == 0 and sorted(order) == list(range(20))
        seen = set()
        for v in order:
            p = int(tree.parent[s, v])
            assert p == -1 or p in seen
            assert int(tree.depth[s, v]) == (0 if p == -1 else int(tree.depth[s, p]) + 1)
            seen.add(v)
        depths = tree.depth[s, tree.order[s]]
        assert (depths[1:] >= depths[:-1]).all()


def _kruskal_edges(cost, ei, ej, n):
    """Plain Kruskal, edges visited by (cost, edge index)."""
    root = list(range(n))

    def find(a):
        while root[a] != a:
            root[a] = root[root[a]]
            a = root[a]
        return a

    chosen = set()
    for k in sorted(range(len(ei)), key=lambda k: (cost[k], k)):
        a, b = find(int(ei[k])), find(int(ej[k]))
        if a != b:
            root[a] = b
            chosen.add((int(ei[k]), int(ej[k])))
    return chosen


def test_grid_mst_breaks_ties_by_edge_index():
    gen = torch.Generator().manual_seed(11)
    labels = torch.randint(0, 3, (3, 3, 4), generator=gen)
    x = torch.nn.functional.one_hot(labels, 3).float()   # cosine exactly 0 or 1: two distinct costs, many ties
    tree = grid_mst(x)
    ei, ej, cost = _grid_costs(x)
    cost = np.round(cost, 12)
    for s in range(3):
        got = {(min(v, int(p)), max(v, int(p))) for v, p in enumerate(tree.parent[s].tolist()) if p >= 0}
        assert got == _kruskal_edges(cost[s], ei, ej, 12)


def test_grid_mst_ties_are_deterministic():
    x = torch.ones(2, 3, 4, 5)   # every edge costs the same
    a, b = grid_mst(x), grid_mst(x.clone())
    assert torch.equal(a.parent, b.parent) and torch.equal(a.parent[0], a.parent[1])


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
