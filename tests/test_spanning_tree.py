"""Tests for hvpl.model.spanning_tree: the grid MST (minimality, BFS metadata, tie-breaking)."""
import numpy as np
import pytest
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

from hvpl.model.spanning_tree import grid_edges, grid_mst


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
