"""VITA-style video decoder with a tree-scan context encoder and task-specific video prompt groups
(method.md Section 1, "Video decoder (VITA) with video prompts").

Per query group and per video: frame queries (L, B, T, Qf, C) -> input projection -> context encoder over the
T x Qf grid of that group of that video -> clip decoder (cross-attention of the clip queries to the encoded
frame queries of the same group over all T frames, key positions = per-query ``fq_pos`` repeated over frames
-> self-attention -> FFN) -> decoder norm -> mask embedding; masks = einsum(mask embedding, video mask
features). Groups never see each other, in training and at test alike.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from hvpl.model.classifier import MLP
from hvpl.model.frame_decoder import CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from hvpl.model.tree_scan import VideoContextEncoder


class VideoPromptGroup(nn.Module):
    """Task-specific video prompts: content (P, C), per-layer positions (L_dec, P, C), key positions of the
    group's frame-query tokens ``fq_pos`` (P, C), own mask MLP."""

    no_weight_decay = ("content", "pos", "fq_pos")   # learned query embeddings (engine/optim.py)

    def __init__(self, num_prompts: int, num_layers: int, dim: int, mask_embed: MLP):
        super().__init__()
        self.content = nn.Parameter(torch.zeros(num_prompts, dim))
        self.pos = nn.Parameter(torch.zeros(num_layers, num_prompts, dim))
        self.fq_pos = nn.Parameter(torch.zeros(num_prompts, dim))
        self.mask_embed = mask_embed


class VideoDecoder(nn.Module):
    """Sizes from ``model_cfg["video_decoder"]``; ``context=False`` (or enc_layers 0) makes the context
    encoder the identity (hvpl_no_context). ``fq_pos`` holds one key position per base frame query
    (``frame_decoder.num_queries``)."""

    def __init__(self, model_cfg: dict, context: bool = True):
        super().__init__()
        cfg = model_cfg["video_decoder"]
        dim = model_cfg["hidden_dim"]
        self.hidden_dim = dim
        self.num_layers = cfg["dec_layers"]
        self.num_frame_layers_train = cfg["num_frame_layers_train"]
        self.input_proj = nn.Linear(dim, dim)
        enc_layers = cfg["enc_layers"] if context else 0
        self.context_encoder = VideoContextEncoder(dim, enc_layers, cfg["tree_scan"])
        heads = cfg["num_heads"]
        self.cross_layers = nn.ModuleList(CrossAttentionLayer(dim, heads) for _ in range(self.num_layers))
        self.self_layers = nn.ModuleList(SelfAttentionLayer(dim, heads) for _ in range(self.num_layers))
        self.ffn_layers = nn.ModuleList(FFNLayer(dim, cfg["ffn_dim"]) for _ in range(self.num_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(cfg["num_queries"], dim)
        self.query_embed = nn.Embedding(cfg["num_queries"], dim)
        self.fq_pos = nn.Embedding(model_cfg["frame_decoder"]["num_queries"], dim)
        self.mask_embed = MLP(dim, dim, dim, model_cfg["frame_decoder"]["mask_mlp_layers"])
        self.sim_embed_frame = nn.Linear(dim, dim)
        self.sim_embed_clip = nn.Linear(dim, dim)
        self.mask_features = nn.Conv2d(dim, dim, kernel_size=1)
        self.prompts = nn.ModuleList()

    @property
    def num_groups(self) -> int:
        return 1 + len(self.prompts)

    @torch.no_grad()
    def add_group(self, num_prompts: int) -> VideoPromptGroup:
        """Append a prompt group (method.md Section 3): content = P copies of the mean base clip query, every
        positional layer = the mean base positional query, fq_pos = the mean base fq_pos, mask MLP copied."""
        group = VideoPromptGroup(num_prompts, self.num_layers, self.hidden_dim, copy.deepcopy(self.mask_embed))
        group.to(self.query_feat.weight.device)
        group.content.copy_(self.query_feat.weight.mean(0).expand_as(group.content))
        group.pos.copy_(self.query_embed.weight.mean(0).expand_as(group.pos))
        group.fq_pos.copy_(self.fq_pos.weight.mean(0).expand_as(group.fq_pos))
        self.prompts.append(group)
        return group

    def group_queries(self, group: int, num_frame_queries: int, prompt_input: bool = False):
        """-> (content (Qv, C), L_dec positions (Qv, C), frame-query key positions (Qf, C), mask MLP).

        Group 0 = base clip queries. When group 0 is fed a frame prompt group (``prompt_input``: methods without
        video prompts) the key positions are the mean ``fq_pos`` for every token, whatever their number.
        """
        if group == 0:
            pos = self.query_embed.weight
            key_pos = self.fq_pos.weight
            if prompt_input:
                key_pos = key_pos.mean(0, keepdim=True).expand(num_frame_queries, -1)
            elif num_frame_queries != key_pos.shape[0]:
                raise ValueError(f"the base clip queries expect {key_pos.shape[0]} base frame queries, got "
                                 f"{num_frame_queries} (a frame prompt group needs prompt_input=True)")
            return self.query_feat.weight, [pos] * self.num_layers, key_pos, self.mask_embed
        if not 1 <= group <= len(self.prompts):
            raise IndexError(f"video decoder has no query group {group} (groups 0..{len(self.prompts)})")
        g = self.prompts[group - 1]
        if num_frame_queries != g.fq_pos.shape[0]:
            raise ValueError(f"video prompt group {group} expects {g.fq_pos.shape[0]} frame queries, "
                             f"got {num_frame_queries}")
        return g.content, list(g.pos.unbind(0)), g.fq_pos, g.mask_embed

    def project_mask_features(self, video_mask_source: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) stride-4 pixel-decoder map -> video mask features (N, C, h, w)."""
        return self.mask_features(video_mask_source)

    def encode(self, frame_queries: torch.Tensor) -> torch.Tensor:
        """(L, B, T, Qf, C) -> input projection + context encoder over each T x Qf grid -> same shape."""
        lyr, b, t, qf, c = frame_queries.shape
        x = self.input_proj(frame_queries).reshape(lyr * b, t, qf, c)
        return self.context_encoder(x).reshape(lyr, b, t, qf, c)

    def forward(self, frame_queries: torch.Tensor, video_mask_features: torch.Tensor, group: int,
                prompt_input: bool = False) -> dict:
        """frame_queries: (L, B, T, Qf, C), the frame decoder's normed outputs of ONE frame query group for L
        frame-decoder layers; video_mask_features: (B, T, C, h, w) (from :meth:`project_mask_features`);
        ``prompt_input``: that frame group is a prompt group (see :meth:`group_queries`).

        Returns {"queries": (D, L, B, Qv, C) normed clip-query outputs, "masks": (D, L, B, Qv, T, h, w),
        "fq_embed": (L, B, T, Qf, C), "cq_embed": (D, L, B, Qv, C)}; D = dec_layers in training, 1 (the last
        clip-decoder layer) in eval mode.
        """
        lyr, b, t, qf, c = frame_queries.shape
        content, pos_per_layer, key_pos, mask_embed = self.group_queries(group, qf, prompt_input)
        encoded = self.encode(frame_queries)
        fq_embed = self.sim_embed_frame(encoded)
        memory = encoded.reshape(lyr * b, t * qf, c)
        mem_pos = key_pos.repeat(t, 1)  # token (frame f, query j) -> fq_pos[j]
        queries = self.decode(content, pos_per_layer, memory, mem_pos)
        queries = queries.reshape(len(queries), lyr, b, -1, c)
        masks = torch.einsum("dlbqc,btchw->dlbqthw", mask_embed(queries), video_mask_features)
        return {"queries": queries, "masks": masks, "fq_embed": fq_embed, "cq_embed": self.sim_embed_clip(queries)}

    def decode(self, content: torch.Tensor, pos_per_layer: list, memory: torch.Tensor, mem_pos: torch.Tensor
               ) -> torch.Tensor:
        """The clip decoder: content (Qv, C) and L_dec x (Qv, C) query positions from :meth:`group_queries`,
        memory (N, S, C) with key positions (S, C) -> normed outputs (D, N, Qv, C); D = dec_layers in training,
        1 (the last layer) in eval mode."""
        q = content.unsqueeze(0).expand(memory.shape[0], -1, -1)
        outputs = []
        for i in range(self.num_layers):
            q = self.cross_layers[i](q, self.cross_layers[i].project_memory(memory, mem_pos), pos_per_layer[i])
            q = self.self_layers[i](q, pos_per_layer[i])
            q = self.ffn_layers[i](q)
            if self.training or i == self.num_layers - 1:
                outputs.append(self.decoder_norm(q))
        return torch.stack(outputs, 0)
