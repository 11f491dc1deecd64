"""Slow, obvious reference implementations the tests compare the real code with (kept out of the package)."""
from __future__ import annotations

import math

import torch

from hvpl.model.spanning_tree import TreeStructure


def tree_aggregate_bruteforce(u: torch.Tensor, w: torch.Tensor, tree: TreeStructure) -> torch.Tensor:
    """O(N^2) reference of hvpl.model.tree_scan.tree_aggregate: walks the tree path of every pair (i, j)."""
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


def ms_deform_attn_naive(value: torch.Tensor, spatial_shapes: torch.Tensor, sampling_locations: torch.Tensor,
                         attention_weights: torch.Tensor) -> torch.Tensor:
    """Reference of hvpl.model.ms_deform_attn.ms_deform_attn_core: an explicit loop over every sampling point with
    hand-written bilinear interpolation (pixel centres at +0.5, zero outside the map). Same shapes."""
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = spatial_shapes.tolist()
    locs = sampling_locations.detach()
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = value.new_zeros(n, lq, m, d)
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(n_points):
                        x = float(locs[b, q, head, lvl, p, 0]) * w - 0.5
                        y = float(locs[b, q, head, lvl, p, 1]) * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = value.new_zeros(d)
                        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                            if 0 <= yy < h and 0 <= xx < w:
                                wt = (1 - abs(x - xx)) * (1 - abs(y - yy))
                                acc = acc + wt * value[b, starts[lvl] + yy * w + xx, head]
                        out[b, q, head] += attention_weights[b, q, head, lvl, p] * acc
    return out.reshape(n, lq, m * d)


def _slice_tree(node, index: slice):
    if isinstance(node, torch.Tensor):
        return node[index]
    if isinstance(node, dict):
        return {k: _slice_tree(v, index) for k, v in node.items()}
    if isinstance(node, list):
        return [_slice_tree(v, index) for v in node]
    return node


def slice_outputs(outputs: dict, j: int, num_frames: int) -> dict:
    """Reference of hvpl.engine.batching.split_outputs: outputs of clip ``j`` of a batch by plain slicing, frame
    tensors (B*T, ...) -> (T, ...), video tensors (B, ...) -> (1, ...)."""
    out = {}
    if "frame" in outputs:
        out["frame"] = _slice_tree(outputs["frame"], slice(j * num_frames, (j + 1) * num_frames))
    if "video" in outputs:
        out["video"] = _slice_tree(outputs["video"], slice(j, j + 1))
    return out
