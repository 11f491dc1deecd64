"""Tree-scan state-space layer (GrootV-style) over a T x Q grid of frame queries (method.md Section 2).

Pipeline per sample: minimum spanning tree of the 4-connected grid (edge cost exp(-cosine)), then a
tree "scan" h_i = sum_j (prod of w on the tree path i..j) * u_j, computed exactly in two passes
(leaf->root, root->leaf). Three interchangeable engines compute the two passes:

- ``levels``: level-synchronous over BFS depth; all trees of the batch are merged into one forest laid
  out level by level, so one level is one contiguous row block (few tiny ops per level).
- ``doubling``: pointer jumping over 2^k-th ancestors; ~6 full-size ops per step, log2(depth) steps
  (few kernel launches: the right choice on GPUs and for deep trees).
- ``dense``: the N x N path-weight matrix exp(S_i + S_j - 2 S_lca(i,j)) from root prefix sums of
  log w; memory B * N^2 * D, so only for small problems (an exact cross-check; never chosen by ``auto``).

``levels`` and ``doubling`` share one autograd Function whose backward is analytic: the path-weight
matrix is symmetric, so grad_u is the aggregation of grad_h, and grad_w needs one more aggregation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree
from torch import nn

ENGINES = ("levels", "doubling", "dense")
# ``auto`` engine policy on CPU: estimated cost of a forward+backward in arbitrary units (ms on one
# busy core, fitted with bench/bench_tree_scan.py; see docs/model_core.md). On GPUs: always doubling.
LEVEL_COST = 0.1                 # per BFS level (per-op overhead dominates: the rows per level are few)
DOUBLING_STEP_COST = 0.1         # per pointer-jumping step, fixed part
DOUBLING_COST_PER_ELEMENT = 1.8e-5   # per pointer-jumping step, per element of (B, N, D)
SUPER_ROOT_COST = 0.5           # below every grid edge's rank (ranks start at 1)
DT_MIN, DT_MAX, DT_INIT_FLOOR = 1e-3, 1e-1, 1e-4   # Mamba's dt initialisation range


# ----------------------------------------------------------------------------------------------- tree
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

    def edges(self) -> torch.Tensor:
        """(B, N-1, 2) undirected tree edges (child, parent), children in BFS order."""
        child = self.order[:, 1:]
        return torch.stack((child, self.parent.gather(1, child)), dim=2)

    def _cached(self, key, device, build):
        k = (key, str(device))
        if k not in self._cache:
            self._cache[k] = build(device)
        return self._cache[k]

    def level_plan(self, device):
        return self._cached("levels", device, self._build_level_plan)

    def doubling_plan(self, device):
        return self._cached("doubling", device, self._build_doubling_plan)

    def dense_plan(self, device):
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


# ----------------------------------------------------------------------------------------- aggregation
def _two_pass_levels(u: torch.Tensor, w: torch.Tensor, tree: TreeStructure):
    """u, w: (B, N, D) -> (up, h) each (B, N, D); no autograd (called inside _TreeAggregate)."""
    b, n, d = u.shape
    plan = tree.level_plan(u.device)
    perm, ppos, bounds = plan["perm"], plan["ppos"], plan["bounds"]
    up = u.reshape(b * n, d)[perm]              # rows ordered level by level
    wp = w.reshape(b * n, d)[perm]
    nlev = len(bounds) - 1
    for lvl in range(nlev - 1, 0, -1):
        s, e = bounds[lvl], bounds[lvl + 1]
        up.index_add_(0, ppos[s:e], wp[s:e] * up[s:e])
    h = up * (1 - wp * wp)
    r = plan["num_roots"]
    h[:r] = up[:r]
    for lvl in range(1, nlev):
        s, e = bounds[lvl], bounds[lvl + 1]
        h[s:e].addcmul_(wp[s:e], h.index_select(0, ppos[s:e]))
    out_up, out_h = torch.empty_like(up), torch.empty_like(h)
    out_up[perm], out_h[perm] = up, h
    return out_up.reshape(b, n, d), out_h.reshape(b, n, d)


def _two_pass_doubling(u: torch.Tensor, w: torch.Tensor, tree: TreeStructure):
    """Pointer-jumping version of ``_two_pass_levels`` (same outputs)."""
    b, n, d = u.shape
    plan = tree.doubling_plan(u.device)
    anc, sink = plan["anc"], plan["sink"]
    zero = u.new_zeros(1, d)
    nonroot = (tree.parent.reshape(-1, 1) >= 0).to(u.dtype)
    w0 = torch.cat((w.reshape(b * n, d) * nonroot, zero))     # roots and sink: no edge upward
    g = torch.cat((u.reshape(b * n, d), zero))
    pw = [w0]                                                 # pw[k][v] = prod of w over 2^k edges up
    for k, a in enumerate(anc):
        g = g.index_add(0, a, pw[k] * g)
        if k + 1 < len(anc):
            pw.append(pw[k] * pw[k][a])
    g[sink] = 0
    up = g
    acc = up * (1 - w0 * w0)
    for k, a in enumerate(anc):
        acc = torch.addcmul(acc, pw[k], acc[a])
    return up[:sink].reshape(b, n, d), acc[:sink].reshape(b, n, d)


_TWO_PASS = {"levels": _two_pass_levels, "doubling": _two_pass_doubling}


class _TreeAggregate(torch.autograd.Function):
    """h = W u with W_ij = prod of w on the tree path i..j (per channel); analytic backward."""

    @staticmethod
    def forward(ctx, u, w, tree, engine):
        up, h = _TWO_PASS[engine](u, w, tree)
        ctx.save_for_backward(w, up, h)
        ctx.tree, ctx.engine = tree, engine
        return h

    @staticmethod
    def backward(ctx, grad_h):
        w, up_u, h_u = ctx.saved_tensors
        tree = ctx.tree
        up_g, h_g = _TWO_PASS[ctx.engine](grad_h.contiguous(), w, tree)
        grad_w = None
        if ctx.needs_input_grad[1]:
            par = tree.parent.clamp(min=0).unsqueeze(-1).expand_as(w)
            hu_p, hg_p = h_u.gather(1, par), h_g.gather(1, par)
            # edge v-parent(v) lies on path(i, j) iff exactly one of i, j is in the subtree of v
            grad_w = up_g * (hu_p - w * up_u) + up_u * (hg_p - w * up_g)
            grad_w = grad_w * (tree.parent >= 0).unsqueeze(-1).to(grad_w.dtype)
        return h_g, grad_w, None, None


def _aggregate_dense(u: torch.Tensor, log_w: torch.Tensor, tree: TreeStructure) -> torch.Tensor:
    """h_i = sum_j exp(S_i + S_j - 2 S_lca(i,j)) u_j with S = root prefix sums of log w (plain autograd)."""
    b, n, d = u.shape
    plan = tree.dense_plan(u.device)
    s = torch.bmm(plan["ancestors"].to(log_w.dtype), log_w)                 # (B, N, D)
    s_lca = s.gather(1, plan["lca"].unsqueeze(-1).expand(b, n * n, d)).reshape(b, n, n, d)
    weights = torch.exp(s.unsqueeze(2) + s.unsqueeze(1) - 2 * s_lca)       # (B, N, N, D)
    return torch.einsum("bijd,bjd->bid", weights, u)


def choose_engine(u: torch.Tensor, tree: TreeStructure) -> str:
    """The ``auto`` policy: pointer jumping on GPUs (few launches); on CPU the cheaper of levels and
    doubling by a fitted cost model. The dense engine is never chosen automatically (slower on CPU)."""
    if u.device.type != "cpu":
        return "doubling"
    depth = tree.max_depth
    steps = max(1, depth.bit_length())
    levels = depth * LEVEL_COST
    doubling = steps * (DOUBLING_STEP_COST + DOUBLING_COST_PER_ELEMENT * u.numel())
    return "levels" if levels <= doubling else "doubling"


def tree_aggregate(u: torch.Tensor, w: torch.Tensor, tree: TreeStructure, engine: str = "auto",
                   log_w: torch.Tensor | None = None) -> torch.Tensor:
    """u: (B, N, D) inputs, w: (B, N, D) weight of the edge node -> parent (ignored at the root),
    tree: from ``grid_mst``. Returns h (B, N, D), h_i = sum_j (prod of w on the path i..j) u_j.

    ``log_w`` (= log w, optional) is used by the dense engine to avoid log(0). Gradients flow to u and w
    (and log_w for the dense engine).
    """
    if engine == "auto":
        engine = choose_engine(u, tree)
    if engine not in ENGINES:
        raise ValueError(f"unknown tree aggregation engine {engine!r}; expected one of {ENGINES}")
    if engine == "dense":
        return _aggregate_dense(u, torch.log(w) if log_w is None else log_w, tree)
    return _TreeAggregate.apply(u.contiguous(), w.contiguous(), tree, engine)


def tree_aggregate_bruteforce(u: torch.Tensor, w: torch.Tensor, tree: TreeStructure) -> torch.Tensor:
    """O(N^2) reference: walks the tree path of every pair (i, j). For tests only."""
    b, n, _ = u.shape
    par = tree.parent.tolist()
    depth = tree.depth.tolist()
    out = torch.zeros_like(u)
    for s in range(b):
        for i in range(n):
            for j in range(n):
                prod = torch.ones_like(u[s, 0])
                a, c = i, j
                while a != c:   # climb from the deeper node until both meet at the LCA
                    if depth[s][a] >= depth[s][c]:
                        prod = prod * w[s, a]
                        a = par[s][a]
                    else:
                        prod = prod * w[s, c]
                        c = par[s][c]
                out[s, i] = out[s, i] + prod * u[s, j]
    return out


# ---------------------------------------------------------------------------------------------- layers
class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample with probability ``p`` in training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class TreeSSM(nn.Module):
    """The selective state-space mixer with a tree scan. forward(x: (B, T, Q, C)) -> (B, T, Q, C)."""

    def __init__(self, dim: int, d_state: int, expand: int, engine: str = "auto"):
        super().__init__()
        inner = expand * dim
        self.d_inner, self.d_state, self.engine = inner, d_state, engine
        self.dt_rank = math.ceil(dim / 16)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, kernel_size=3, padding=1, groups=inner)
        self.x_proj = nn.Linear(inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, inner)
        self.A_log = nn.Parameter(torch.zeros(inner, d_state))
        self.D = nn.Parameter(torch.ones(inner))
        self.h_norm = nn.LayerNorm(inner)
        self.out_norm = nn.LayerNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self._init_dt()

    def _init_dt(self) -> None:
        """Mamba's init: softplus(bias) log-uniform in [DT_MIN, DT_MAX], weight ~ U(+-dt_rank^-0.5)."""
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(DT_MAX) - math.log(DT_MIN)) + math.log(DT_MIN))
        dt = dt.clamp(min=DT_INIT_FLOOR)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # inverse softplus

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, q, _ = x.shape
        n, inner, ds = t * q, self.d_inner, self.d_state
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs = F.silu(self.conv(xs.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)       # (B, T, Q, inner)
        tree = grid_mst(xs)
        with torch.autocast(device_type=x.device.type, enabled=False):
            xs = xs.float().reshape(b, n, inner)
            dt_low, b_in, c_out = torch.split(self.x_proj(xs), [self.dt_rank, ds, ds], dim=-1)
            dt = F.softplus(self.dt_proj(dt_low))                                  # (B, N, inner)
            a = -torch.exp(self.A_log.float())                                     # (inner, ds)
            log_w = dt.unsqueeze(-1) * a                                           # (B, N, inner, ds)
            u = (dt * xs).unsqueeze(-1) * b_in.unsqueeze(2)                        # (B, N, inner, ds)
            h = tree_aggregate(u.reshape(b, n, -1), torch.exp(log_w).reshape(b, n, -1), tree,
                               engine=self.engine, log_w=log_w.reshape(b, n, -1))
            h = self.h_norm(h.reshape(b, n, inner, ds).transpose(2, 3))            # (B, N, ds, inner)
            y = torch.einsum("bnsc,bns->bnc", h, c_out) + self.D * xs
            y = self.out_norm(y) * F.silu(z.float().reshape(b, n, inner))
        return self.out_proj(y.to(x.dtype)).reshape(b, t, q, -1)


class TreeScanLayer(nn.Module):
    """x += DropPath(TreeSSM(LN x)); x += DropPath(MLP(LN x)). forward(x: (B, T, Q, C)) -> same shape.

    tree_cfg: {"d_state", "expand", "mlp_ratio", "drop_path"} (+ optional "engine", default "auto").
    """

    def __init__(self, dim: int, tree_cfg: dict):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.ssm = TreeSSM(dim, int(tree_cfg["d_state"]), int(tree_cfg["expand"]),
                           engine=tree_cfg.get("engine", "auto"))
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(tree_cfg["mlp_ratio"] * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(float(tree_cfg["drop_path"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.ssm(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VideoContextEncoder(nn.Module):
    """A stack of ``num_layers`` TreeScanLayers; the identity when num_layers == 0 (hvpl_no_context).

    forward(x: (B, T, Q, C)) -> (B, T, Q, C).
    """

    def __init__(self, dim: int, num_layers: int, tree_cfg: dict):
        super().__init__()
        self.layers = nn.ModuleList(TreeScanLayer(dim, tree_cfg) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
