"""Mask2Former frame decoder with base queries and task-specific frame prompt groups (method.md Section 1).

Every layer: masked cross-attention to scale level ``i % 3`` -> self-attention -> FFN (post-norm, dropout 0).
A prediction head (decoder norm + mask MLP) runs before layer 0 and after every layer. Query groups never
interact: each group (group 0 = base queries, group k >= 1 = task k's prompts) runs through the decoder
alone, so adding or changing a group cannot change another group's outputs. Class logits are not computed
here (see :mod:`hvpl.model.classifier`); the decoder returns the normed query outputs of every layer.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hvpl.model.classifier import MLP
from hvpl.model.pixel_decoder import ENCODER_LEVELS
from hvpl.model.position_encoding import PositionEmbeddingSine

# The pixel decoder hands over three scales (strides 32, 16, 8), visited round-robin by the layers.
NUM_FEATURE_LEVELS = len(ENCODER_LEVELS)
# A previous-prediction pixel is attended to when its mask probability is >= this value.
MASK_ATTN_THRESHOLD = 0.5


def _xavier_(module: nn.Module) -> None:
    """Xavier-uniform init of every weight matrix (Mask2Former's / VITA's transformer-layer init)."""
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, S, C) -> (N, heads, S, C / heads)."""
    n, s, c = x.shape
    return x.reshape(n, s, heads, c // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(N, heads, S, C / heads) -> (N, S, C)."""
    return x.transpose(1, 2).flatten(2)


class CrossAttentionLayer(nn.Module):
    """Post-norm cross-attention: q = norm(q + attn(q + q_pos, mem + mem_pos, mem, mask)).

    The memory's keys/values are projected once (:meth:`project_memory`) and can be shared by every query
    group attending to the same memory. Weights live in an ``nn.MultiheadAttention`` (standard names).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        _xavier_(self)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return _split_heads(x, self.attn.num_heads)

    def project_memory(self, memory: torch.Tensor, mem_pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory: (N, S, C); mem_pos: (N, S, C) or (S, C) -> keys, values (N, heads, S, C / heads)."""
        w_k, w_v = self.attn.in_proj_weight.chunk(3)[1:]
        b_k, b_v = self.attn.in_proj_bias.chunk(3)[1:]
        return self._heads(F.linear(memory + mem_pos, w_k, b_k)), self._heads(F.linear(memory, w_v, b_v))

    def forward(self, q, kv, q_pos, allowed=None):
        """q: (N, Q, C); kv: :meth:`project_memory` output; q_pos: (Q, C) or (N, Q, C);
        allowed: (N, 1, Q, S) bool, True = attended (every row needs one True)."""
        w_q, b_q = self.attn.in_proj_weight.chunk(3)[0], self.attn.in_proj_bias.chunk(3)[0]
        out = F.scaled_dot_product_attention(self._heads(F.linear(q + q_pos, w_q, b_q)), *kv, attn_mask=allowed)
        return self.norm(q + self.attn.out_proj(_merge_heads(out)))


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention: q = norm(q + attn(q + pos, q + pos, q))."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        _xavier_(self)

    def forward(self, q, q_pos):
        """q: (N, Q, C); q_pos: broadcastable to q. The attention of ``self.attn`` (the same weights and
        formula), written with scaled_dot_product_attention: its functional path costs ~90 ops per call."""
        dim, heads = q.shape[-1], self.attn.num_heads
        w, b = self.attn.in_proj_weight, self.attn.in_proj_bias
        qq, kk = F.linear(q + q_pos, w[:2 * dim], b[:2 * dim]).chunk(2, -1)
        v = F.linear(q, w[2 * dim:], b[2 * dim:])
        out = F.scaled_dot_product_attention(*(_split_heads(x, heads) for x in (qq, kk, v)))
        return self.norm(q + self.attn.out_proj(_merge_heads(out)))


class FFNLayer(nn.Module):
    """Post-norm feed-forward: q = norm(q + W2 relu(W1 q))."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)
        _xavier_(self)

    def forward(self, q):
        """q: (N, Q, C) -> (N, Q, C)."""
        return self.norm(q + self.linear2(F.relu(self.linear1(q))))


class FramePromptGroup(nn.Module):
    """Task-specific frame prompts: content (P, C), per-layer positional prompts (L, P, C), own mask MLP."""

    no_weight_decay = ("content", "pos")   # learned query embeddings (engine/optim.py); the mask MLP decays

    def __init__(self, num_prompts: int, num_layers: int, dim: int, mask_embed: MLP):
        super().__init__()
        self.content = nn.Parameter(torch.zeros(num_prompts, dim))
        self.pos = nn.Parameter(torch.zeros(num_layers, num_prompts, dim))
        self.mask_embed = mask_embed


class FrameDecoder(nn.Module):
    """Mask2Former transformer decoder; sizes from ``model_cfg["frame_decoder"]`` and ``hidden_dim``."""

    def __init__(self, model_cfg: dict):
        super().__init__()
        cfg = model_cfg["frame_decoder"]
        dim = model_cfg["hidden_dim"]
        self.hidden_dim = dim
        self.num_layers = cfg["num_layers"]
        self.num_heads = cfg["num_heads"]
        self.pe_layer = PositionEmbeddingSine(dim // 2, normalize=True)
        self.level_embed = nn.Embedding(NUM_FEATURE_LEVELS, dim)
        self.cross_layers = nn.ModuleList(CrossAttentionLayer(dim, self.num_heads) for _ in range(self.num_layers))
        self.self_layers = nn.ModuleList(SelfAttentionLayer(dim, self.num_heads) for _ in range(self.num_layers))
        self.ffn_layers = nn.ModuleList(FFNLayer(dim, cfg["ffn_dim"]) for _ in range(self.num_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(cfg["num_queries"], dim)
        self.query_embed = nn.Embedding(cfg["num_queries"], dim)
        self.mask_embed = MLP(dim, dim, dim, cfg["mask_mlp_layers"])
        self.prompts = nn.ModuleList()

    @property
    def num_groups(self) -> int:
        return 1 + len(self.prompts)

    @torch.no_grad()
    def add_group(self, num_prompts: int) -> FramePromptGroup:
        """Append a prompt group initialised per method.md Section 3: content = P copies of the mean base
        content query, every positional layer = the mean base positional query, mask MLP = copy of the base."""
        group = FramePromptGroup(num_prompts, self.num_layers, self.hidden_dim, copy.deepcopy(self.mask_embed))
        group.to(self.query_feat.weight.device)
        group.content.copy_(self.query_feat.weight.mean(0).expand_as(group.content))
        group.pos.copy_(self.query_embed.weight.mean(0).expand_as(group.pos))
        self.prompts.append(group)
        return group

    def group_queries(self, group: int):
        """-> (content (Qg, C), per-layer positions: a list of L tensors (Qg, C), mask MLP) of ``group``."""
        if group == 0:
            pos = self.query_embed.weight
            return self.query_feat.weight, [pos] * self.num_layers, self.mask_embed
        if not 1 <= group <= len(self.prompts):
            raise IndexError(f"frame decoder has no query group {group} (groups 0..{len(self.prompts)})")
        g = self.prompts[group - 1]
        return g.content, list(g.pos.unbind(0)), g.mask_embed

    def prepare_memory(self, multi_scale_features: Sequence[torch.Tensor]):
        """[3 x (N, C, h_l, w_l)] -> lists of memory (N, h_l*w_l, C), positions (same), sizes (h_l, w_l)."""
        if len(multi_scale_features) != NUM_FEATURE_LEVELS:
            raise ValueError(f"expected {NUM_FEATURE_LEVELS} feature levels, got {len(multi_scale_features)}")
        srcs, poss, sizes = [], [], []
        for lvl, feat in enumerate(multi_scale_features):
            sizes.append(tuple(feat.shape[-2:]))
            poss.append(self.pe_layer(feat).flatten(2).transpose(1, 2))
            srcs.append((feat.flatten(2) + self.level_embed.weight[lvl][None, :, None]).transpose(1, 2))
        return srcs, poss, sizes

    def _predict(self, q, mask_embed, mask_features, attn_size):
        """q: (N, Qg, C) -> normed queries (N, Qg, C), mask logits (N, Qg, h, w), attention mask for the
        next layer (N, 1, Qg, h_a * w_a) bool (True = attended; a query that would see nothing sees all)."""
        normed = self.decoder_norm(q)
        masks = torch.einsum("nqc,nchw->nqhw", mask_embed(normed), mask_features)
        with torch.no_grad():
            small = F.interpolate(masks, size=attn_size, mode="bilinear", align_corners=False)
            allowed = small.sigmoid().flatten(2) >= MASK_ATTN_THRESHOLD
            allowed |= ~allowed.any(-1, keepdim=True)
        return normed, masks, allowed.unsqueeze(1)

    def run_groups(self, groups: Sequence[int], memory, mask_features: torch.Tensor,
                   capture_layer0: bool = False) -> list[dict]:
        """Each query group alone through the decoder, layer by layer (the memory's keys/values are
        projected once per layer and shared: a group's result does not depend on the other groups).

        memory: the output of :meth:`prepare_memory`; mask_features: (N, C, h, w).
        Returns per group {"task": group, "queries": (L+1, N, Qg, C) normed outputs (entry 0 = before
        layer 0), "masks": list of L+1 mask logits (N, Qg, h, w)} and, with capture_layer0,
        "layer0_self_attn": (N, Qg, C), the layer-0 output right after self-attention.
        """
        srcs, poss, sizes = memory
        n = mask_features.shape[0]
        specs = [self.group_queries(g) for g in groups]
        states, outs = [], []
        for g, (content, _, mask_embed) in zip(groups, specs):
            q = content.unsqueeze(0).expand(n, -1, -1)
            normed, mask, allowed = self._predict(q, mask_embed, mask_features, sizes[0])
            states.append([q, allowed])
            outs.append({"task": g, "queries": [normed], "masks": [mask]})
        for i in range(self.num_layers):
            lvl = i % NUM_FEATURE_LEVELS
            kv = self.cross_layers[i].project_memory(srcs[lvl], poss[lvl])
            for state, out, (_, pos_per_layer, mask_embed) in zip(states, outs, specs):
                q = self.cross_layers[i](state[0], kv, pos_per_layer[i], state[1])
                q = self.self_layers[i](q, pos_per_layer[i])
                if capture_layer0 and i == 0:
                    out["layer0_self_attn"] = q
                q = self.ffn_layers[i](q)
                normed, mask, state[1] = self._predict(q, mask_embed, mask_features,
                                                       sizes[(i + 1) % NUM_FEATURE_LEVELS])
                state[0] = q
                out["queries"].append(normed)
                out["masks"].append(mask)
        for out in outs:
            out["queries"] = torch.stack(out["queries"], 0)
        return outs

    def run_group(self, group: int, memory, mask_features: torch.Tensor, capture_layer0: bool = False) -> dict:
        """:meth:`run_groups` for one group."""
        return self.run_groups([group], memory, mask_features, capture_layer0)[0]

    def forward(self, multi_scale_features: Sequence[torch.Tensor], mask_features: torch.Tensor,
                groups: Sequence[int] | None = None, capture_layer0: bool = False) -> dict:
        """multi_scale_features: [3 x (N, C, h_l, w_l)] (strides 32, 16, 8); mask_features: (N, C, h, w).

        ``groups``: the query groups to run (default: all), each alone. Returns {"groups": [per group
        output of :meth:`run_groups`]} and, with capture_layer0, "layer0_self_attn": (N, sum of Qg, C).
        """
        groups = list(range(self.num_groups)) if groups is None else list(groups)
        outs = self.run_groups(groups, self.prepare_memory(multi_scale_features), mask_features, capture_layer0)
        result = {"groups": outs}
        if capture_layer0:
            result["layer0_self_attn"] = torch.cat([o.pop("layer0_self_attn") for o in outs], dim=1)
        return result
