"""Tree-scan state-space layer (GrootV-style) over a T x Q grid of frame queries (method.md Section 2).

Pipeline per sample: minimum spanning tree of the 4-connected grid (edge cost exp(-cosine);
``hvpl.model.spanning_tree``), then a
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

import torch
import torch.nn.functional as F
from torch import nn

from hvpl.model.spanning_tree import TreeStructure, grid_mst

ENGINES = ("levels", "doubling", "dense")
# ``auto`` engine policy on CPU: estimated cost of a forward+backward in arbitrary units (ms on one
# busy core, fitted with bench/bench_tree_scan.py; see docs/model_core.md). On GPUs: always doubling.
LEVEL_COST = 0.1                 # per BFS level (per-op overhead dominates: the rows per level are few)
DOUBLING_STEP_COST = 0.1         # per pointer-jumping step, fixed part
DOUBLING_COST_PER_ELEMENT = 1.8e-5   # per pointer-jumping step, per element of (B, N, D)
DT_MIN, DT_MAX, DT_INIT_FLOOR = 1e-3, 1e-1, 1e-4   # Mamba's dt initialisation range
DT_RANK_DIVISOR = 16             # Mamba's dt_rank="auto": ceil(d_model / 16)
LAYER_NORM_EPS = 1e-6            # the layers' pre-norms (GrootV's build_norm_layer); the mixer's own norms keep 1e-5


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
    """The ``auto`` policy for ``u`` (B, N, D): pointer jumping on GPUs (few launches); on CPU the cheaper of
    levels and doubling by a fitted cost model. The dense engine is never chosen automatically (slower on CPU)."""
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


# ---------------------------------------------------------------------------------------------- layers
class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample with probability ``p`` in training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, ...) -> same shape; each sample's branch is zeroed or scaled by 1 / (1 - p)."""
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class TreeSSM(nn.Module):
    """The selective state-space mixer with a tree scan. forward(x: (B, T, Q, C)) -> (B, T, Q, C)."""

    no_weight_decay = ("A_log", "D")   # Mamba's convention (engine/optim.py)

    def __init__(self, dim: int, d_state: int, expand: int, engine: str = "auto"):
        super().__init__()
        inner = expand * dim
        self.d_inner, self.d_state, self.engine = inner, d_state, engine
        self.dt_rank = math.ceil(dim / DT_RANK_DIVISOR)
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = nn.Conv2d(inner, inner, kernel_size=3, padding=1, groups=inner, bias=False)
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
        # float32 throughout, also under autocast (method.md): the spanning tree is built from these features,
        # and products of decays along tree paths lose precision in bf16
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._forward_float32(x.float()).to(x.dtype)

    def _forward_float32(self, x: torch.Tensor) -> torch.Tensor:
        b, t, q, _ = x.shape
        n, inner, ds = t * q, self.d_inner, self.d_state
        xs, z = self.in_proj(x).chunk(2, dim=-1)
        xs = F.silu(self.conv(xs.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)       # (B, T, Q, inner)
        tree = grid_mst(xs)
        xs = xs.reshape(b, n, inner)
        dt_low, b_in, c_out = torch.split(self.x_proj(xs), [self.dt_rank, ds, ds], dim=-1)
        dt = F.softplus(self.dt_proj(dt_low))                                      # (B, N, inner)
        a = -torch.exp(self.A_log)                                                 # (inner, ds)
        log_w = dt.unsqueeze(-1) * a                                               # (B, N, inner, ds)
        u = (dt * xs).unsqueeze(-1) * b_in.unsqueeze(2)                            # (B, N, inner, ds)
        h = tree_aggregate(u.reshape(b, n, -1), torch.exp(log_w).reshape(b, n, -1), tree,
                           engine=self.engine, log_w=log_w.reshape(b, n, -1))
        h = self.h_norm(h.reshape(b, n, inner, ds).transpose(2, 3))                # (B, N, ds, inner)
        y = torch.einsum("bnsc,bns->bnc", h, c_out) + self.D * xs
        y = self.out_norm(y) * F.silu(z.reshape(b, n, inner))
        return self.out_proj(y).reshape(b, t, q, -1)


class TreeScanLayer(nn.Module):
    """x += DropPath(TreeSSM(LN x)); x += DropPath(MLP(LN x)). forward(x: (B, T, Q, C)) -> same shape.

    tree_cfg: {"d_state", "expand", "mlp_ratio", "drop_path"} (+ optional "engine", default "auto");
    ``drop_path`` (this layer's rate) overrides tree_cfg["drop_path"] when given.
    """

    def __init__(self, dim: int, tree_cfg: dict, drop_path: float | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ssm = TreeSSM(dim, int(tree_cfg["d_state"]), int(tree_cfg["expand"]),
                           engine=tree_cfg.get("engine", "auto"))
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        hidden = int(tree_cfg["mlp_ratio"] * dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(float(tree_cfg["drop_path"] if drop_path is None else drop_path))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, Q, C) -> (B, T, Q, C)."""
        x = x + self.drop_path(self.ssm(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def drop_path_rates(max_rate: float, num_layers: int) -> list[float]:
    """Stochastic-depth rate of every layer: linear from 0 (first layer) to ``max_rate`` (last layer), as
    linspace(0, max_rate, num_layers) (GrootV / the authors); a single layer gets 0. Plain Python: the model may
    be built on the meta device."""
    return [max_rate * i / (num_layers - 1) if num_layers > 1 else 0.0 for i in range(num_layers)]


class VideoContextEncoder(nn.Module):
    """A stack of ``num_layers`` TreeScanLayers; the identity when num_layers == 0 (hvpl_no_context).
    tree_cfg["drop_path"] is the LAST layer's drop-path rate; the rates rise linearly from 0 (drop_path_rates).

    forward(x: (B, T, Q, C)) -> (B, T, Q, C).
    """

    def __init__(self, dim: int, num_layers: int, tree_cfg: dict):
        super().__init__()
        rates = drop_path_rates(float(tree_cfg["drop_path"]), num_layers)
        self.layers = nn.ModuleList(TreeScanLayer(dim, tree_cfg, drop_path=r) for r in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, Q, C) -> (B, T, Q, C)."""
        for layer in self.layers:
            x = layer(x)
        return x
