"""Benchmark: TreeScanLayer vs a self-attention layer (pre-norm nn.MultiheadAttention + FFN of the same
width) on the same T x Q tokens, forward and forward+backward, plus where the tree-scan time goes
(MST, aggregation engines, everything else = projections / conv / norms / MLP).

Usage: python bench/bench_tree_scan.py [--threads 1] [--repeats 5] [--quick]
Prints a table and writes bench/out/tree_scan.json. Target: tree scan <= 2x the attention layer.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from torch import nn

from hvpl.config import load_model_config
from hvpl.model.spanning_tree import grid_mst
from hvpl.model.tree_scan import ENGINES, TreeScanLayer, choose_engine, tree_aggregate
from hvpl.utils.io import atomic_write_json

OUT = Path(__file__).resolve().parent / "out" / "tree_scan.json"
CLOCK_NAME = "cpu"
# (name, model config, T frames, prompt tokens beside the base queries, B clips); width, heads, queries and the
# tree-scan settings come from the model config
SIZES = [("tiny", "tiny", 3, 8, 2), ("paper", "paper_r50", 5, 10, 2)]


class AttentionLayer(nn.Module):
    """x += MHA(LN x); x += FFN(LN x) over the T*Q tokens of each sample. forward(x: (B, T, Q, C))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, q, c = x.shape
        y = x.reshape(b, t * q, c)
        a = self.norm1(y)
        y = y + self.attn(a, a, a, need_weights=False)[0]
        return (y + self.mlp(self.norm2(y))).reshape(b, t, q, c)


CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}


def best_ms(fn, repeats: int) -> float:
    """Minimum time over ``repeats`` runs after one warm-up. The clock is process CPU time by default:
    with one thread it is what the run costs, and it ignores waiting for a core on a shared machine."""
    fn()
    clock = CLOCK[CLOCK_NAME]
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best * 1e3


def bench_size(name, model, t, prompts, b, repeats) -> dict:
    cfg = load_model_config(model)
    dim, video = cfg["hidden_dim"], cfg["video_decoder"]
    heads, tree_cfg, q = video["num_heads"], video["tree_scan"], cfg["frame_decoder"]["num_queries"] + prompts
    torch.manual_seed(0)
    x = torch.randn(b, t, q, dim, requires_grad=True)
    tree_layer = TreeScanLayer(dim, tree_cfg)
    attn_layer = AttentionLayer(dim, heads, tree_cfg["mlp_ratio"])
    row = {"size": name, "C": dim, "T": t, "Q": q, "B": b}
    for label, layer in (("tree", tree_layer), ("attn", attn_layer)):
        row[f"{label}_fwd_ms"] = best_ms(lambda: layer(x), repeats)
        row[f"{label}_fwdbwd_ms"] = best_ms(lambda: layer(x).sum().backward(), repeats)
    row["ratio_fwd"] = row["tree_fwd_ms"] / row["attn_fwd_ms"]
    row["ratio_fwdbwd"] = row["tree_fwdbwd_ms"] / row["attn_fwdbwd_ms"]
    # breakdown on the SSM's inner width
    inner = tree_cfg["expand"] * dim
    feats = torch.randn(b, t, q, inner)
    row["mst_ms"] = best_ms(lambda: grid_mst(feats), repeats)
    tree = grid_mst(feats)
    row["tree_depth"] = tree.max_depth
    u = torch.randn(b, t * q, inner, requires_grad=True)
    w = torch.rand(b, t * q, inner, requires_grad=True)
    row["auto_engine"] = choose_engine(u, tree)
    for engine in ENGINES:
        if engine == "dense" and b * (t * q) ** 2 * inner > 1 << 24:
            continue   # memory B*N^2*D: not run at paper size
        row[f"agg_{engine}_fwd_ms"] = best_ms(lambda: tree_aggregate(u, w, tree, engine=engine), repeats)
        row[f"agg_{engine}_fwdbwd_ms"] = best_ms(
            lambda: tree_aggregate(u, w, tree, engine=engine).sum().backward(), repeats)
    auto = row["auto_engine"]
    row["other_fwdbwd_ms"] = row["tree_fwdbwd_ms"] - row["mst_ms"] - row[f"agg_{auto}_fwdbwd_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny size only")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="cpu")
    args = parser.parse_args()
    global CLOCK_NAME
    CLOCK_NAME = args.clock
    torch.set_num_threads(args.threads)
    rows = [bench_size(*size, args.repeats) for size in (SIZES[:1] if args.quick else SIZES)]
    cols = ["size", "tree_fwd_ms", "attn_fwd_ms", "ratio_fwd", "tree_fwdbwd_ms", "attn_fwdbwd_ms", "ratio_fwdbwd",
            "mst_ms", "tree_depth", "auto_engine", "agg_levels_fwdbwd_ms", "agg_doubling_fwdbwd_ms",
            "agg_dense_fwdbwd_ms", "other_fwdbwd_ms"]
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(f"{row[c]:.2f}" if isinstance(row.get(c), float) else str(row.get(c, "-")) for c in cols))
    meta = {"threads": args.threads, "clock": args.clock, "repeats": args.repeats, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "device": "cpu", "target_ratio": 2.0}
    atomic_write_json(OUT, {"meta": meta, "rows": rows})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
