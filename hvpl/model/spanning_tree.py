"""Minimum spanning trees of T x Q grids of frame queries, the tree structure of the tree scan (method.md
Section 2).

``grid_mst`` builds, per sample, the MST of the 4-connected grid with edge cost exp(-cosine) (unique: ties broken
by edge index). ``TreeStructure`` holds parent / BFS order / depth and lazily builds, per device, the index
plans that the aggregation engines of ``hvpl.model.tree_scan`` use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

SUPER_ROOT_COST = 0.5           # below every grid edge's rank (ranks start at 1)


@dataclass
class TreeStructure:
    """Spanning trees of B grids with N nodes each (node n = t * Q + q).

    parent: (B, N) long, parent node, -1 at the root (node 0). order: (B, N) BFS order. depth: (B, N).
    Index plans for the engines are built lazily (numpy) and cached per device.
    """

    parent: torch.Tensor
    order: torch.Tensor
    depth: torch.Tensor
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def batch(self) -> int:
        return self.parent.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.parent.shape[1]

    @property
    def max_depth(self) -> int:
        return int(self.depth.max())

    def _cached(self, key, device, build):
        k = (key, str(device))
        if k not in self._cache:
            self._cache[k] = build(device)
        return self._cache[k]

    def level_plan(self, device):
        """{"perm": (B*N,) long, the nodes ordered by depth, then tree, then BFS rank; "ppos": (B*N,) long, the
        parent's position in that order (0 for roots); "bounds": max_depth + 2 ints, the slice of each depth;
        "num_roots": B} (cached per device)."""
        return self._cached("levels", device, self._build_level_plan)

    def doubling_plan(self, device):
        """{"anc": list of (B*N+1,) long tables, the 2^k-th ancestor of every flat node (the extra last row,
        index "sink", stands for none); "sink": B*N} (cached per device)."""
        return self._cached("doubling", device, self._build_doubling_plan)

    def dense_plan(self, device):
        """{"ancestors": (B, N, N) float, "lca": (B, N*N) long}, see ``_build_dense_plan`` (cached per device)."""
        return self._cached("dense", device, self._build_dense_plan)

    def _flat_parent(self) -> np.ndarray:
        """(B*N,) parent as flat index b*N + n; -1 at roots."""
        par = self.parent.cpu().numpy()
        offs = (np.arange(self.batch) * self.num_nodes)[:, None]
        return np.where(par < 0, -1, par + offs).reshape(-1)

    def _build_level_plan(self, device):
        b, n = self.batch, self.num_nodes
        depth = self.depth.cpu().numpy()
        rank = np.empty_like(depth)
        np.put_along_axis(rank, self.order.cpu().numpy(), np.arange(n)[None].repeat(b, 0), axis=1)
        sample = np.arange(b)[:, None].repeat(n, 1)
        perm = np.lexsort((rank.ravel(), sample.ravel(), depth.ravel()))    # depth, then sample, then BFS
        pos = np.empty_like(perm)
        pos[perm] = np.arange(perm.size)
        par = self._flat_parent()[perm]
        ppos = np.where(par < 0, 0, pos[np.maximum(par, 0)])
        counts = np.bincount(depth.ravel())
        bounds = np.concatenate(([0], np.cumsum(counts))).tolist()
        as_t = lambda a: torch.as_tensor(a, dtype=torch.long, device=device)  # noqa: E731
        return {"perm": as_t(perm), "ppos": as_t(ppos), "bounds": bounds, "num_roots": b}

    def _build_doubling_plan(self, device):
        total = self.batch * self.num_nodes
        sink = total                       # an extra all-zero row stands for "no such ancestor"
        anc = self._flat_parent()
        anc = np.where(anc < 0, sink, anc)
        anc = np.concatenate((anc, [sink]))
        steps = max(1, self.max_depth.bit_length())
        tables = [anc]
        for _ in range(steps - 1):
            tables.append(tables[-1][tables[-1]])
        return {"anc": [torch.as_tensor(a, dtype=torch.long, device=device) for a in tables], "sink": sink}

    def _build_dense_plan(self, device):
        """ancestors: (B, N, N) float, [i, k] = 1 if k is on the path i -> root (k != root);
        lca: (B, N*N) long, flat index of lca(i, j)."""
        b, n = self.batch, self.num_nodes
        par = self.parent.cpu().numpy()
        order = self.order.cpu().numpy()
        anc = np.zeros((b, n, n), dtype=bool)
        lca = np.zeros((b, n, n), dtype=np.int64)
        for s in range(b):
            for v in order[s, 1:]:                   # parents come before children in BFS order
                p = par[s, v]
                anc[s, v] = anc[s, p]
                anc[s, v, v] = True
            for v in order[s]:
                below = anc[s, :, v] if v != 0 else np.ones(n, dtype=bool)
                p = par[s, v]
                lca[s, v] = np.where(below, v, lca[s, p] if p >= 0 else 0)
        return {"ancestors": torch.as_tensor(anc, dtype=torch.float32, device=device),
                "lca": torch.as_tensor(lca.reshape(b, n * n), device=device)}


def grid_edges(t: int, q: int) -> tuple[np.ndarray, np.ndarray]:
    """The 4-connected T x Q grid's edges (i < j), indexed in lexicographic (i, j) order."""
    idx = np.arange(t * q).reshape(t, q)
    i = np.concatenate((idx[:, :-1].ravel(), idx[:-1, :].ravel()))
    j = np.concatenate((idx[:, 1:].ravel(), idx[1:, :].ravel()))
    key = np.lexsort((j, i))
    return i[key], j[key]


@lru_cache(maxsize=32)
def _batched_grid_csr(b: int, t: int, q: int) -> tuple:
    """CSR structure (indices, indptr) of B disjoint T x Q grids plus a super-root (last node) linked to
    every grid's node 0. Row-major (i, j) edge order equals ``grid_edges`` order within each grid."""
    n = t * q
    ei, ej = grid_edges(t, q)
    offs = np.arange(b) * n
    rows = np.concatenate(((ei[None] + offs[:, None]).ravel(), np.full(b, b * n)))
    cols = np.concatenate(((ej[None] + offs[:, None]).ravel(), offs))
    indptr = np.concatenate(([0], np.cumsum(np.bincount(rows, minlength=b * n + 1))))
    return cols.astype(np.int32), indptr.astype(np.int32)


@torch.no_grad()
def grid_mst(x: torch.Tensor) -> TreeStructure:
    """x: (B, T, Q, D) -> the minimum spanning tree of each sample's 4-connected T x Q grid.

    Edge cost exp(-cosine(x_i, x_j)); ties are broken by edge index (``grid_edges`` order): the costs
    are replaced by their stable ranks, which makes the MST unique. Root node 0, BFS order.
    All samples go through scipy at once as one graph: B disjoint grids plus a super-root joined to
    every node 0 by edges cheaper than any grid edge, so its MST is the B grid MSTs plus those edges.
    """
    b, t, q, _ = x.shape
    n = t * q
    ei, ej = grid_edges(t, q)
    feats = F.normalize(x.detach().float().reshape(b, n, -1), dim=-1)
    idx_i, idx_j = torch.as_tensor(ei, device=x.device), torch.as_tensor(ej, device=x.device)
    cos = (feats.index_select(1, idx_i) * feats.index_select(1, idx_j)).sum(-1)
    cost = torch.exp(-cos).cpu().numpy()                                       # (B, E)
    ne = len(ei)
    rank = np.empty((b, ne))
    np.put_along_axis(rank, np.argsort(cost, axis=1, kind="stable"), np.arange(1, ne + 1, dtype=float)[None], 1)
    root = b * n                                            # the super-root
    indices, indptr = _batched_grid_csr(b, t, q)
    data = np.concatenate((rank.ravel(), np.full(b, SUPER_ROOT_COST)))
    mst = minimum_spanning_tree(csr_matrix((data, indices, indptr), shape=(root + 1, root + 1)))
    order, pred = breadth_first_order(mst, root, directed=False, return_predecessors=True)
    order = order[1:]                                       # drop the super-root
    depth = _depths(pred, root)
    offs = np.repeat(np.arange(b) * n, n)
    parent = np.where(pred[:root] == root, -1, pred[:root] - offs).reshape(b, n)
    order_per = (order % n)[np.argsort(order // n, kind="stable")].reshape(b, n)
    dev = x.device
    as_long = lambda a: torch.as_tensor(a, dtype=torch.long, device=dev)  # noqa: E731
    return TreeStructure(as_long(parent), as_long(order_per), as_long(depth.reshape(b, n)))


def _depths(pred: np.ndarray, root: int) -> np.ndarray:
    """pred: (M+1,) BFS predecessors below the super-root ``root`` (index M) -> (M,) depths, the
    super-root's children at depth 0. Pointer jumping: log2(depth) vectorised steps."""
    anc = pred.copy()
    anc[root] = root
    dist = np.ones(len(pred), dtype=np.int64)        # edges between a node and anc[node]
    dist[root] = 0
    while (anc != root).any():
        dist = dist + dist[anc]
        anc = anc[anc]
    return dist[:root] - 1
