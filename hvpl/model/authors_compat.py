"""The authors' test-time video path, on request (model config ``inference.authors_compat``, default off).

Reproduces, at inference only, the two test-time behaviours of the authors' code that method.md Section 3
lists as defects (differences 2 and 3), so that numbers obtained with their released weights can be reproduced
and set against the corrected path (docs/model.md "Authors' test path"):

- known-3: the tree-scan context encoder runs on each frame separately, over ONE chain of all query groups'
  frame queries jointly (their per-frame (queries x layer*batch) grid, which at test is queries x 1), instead of
  each group's T x Q grid. In our layout that is a (T, 1, sum Qg, C) batch: one 1 x Q grid per frame.
- known-2: when the model has prompt groups, the encoded frame queries of all frames are flattened frame-major
  (T * sum Qg rows) and clip-query group n cross-attends to rows [q_n, q_{n+1}) of them, with q the cumulative
  CLIP query counts (base, then P per prompt group), and to the same rows of their key positions (every group's
  ``fq_pos`` tiled over frames, groups one after the other). For the base group that is frame 0's base frame
  queries; for a prompt group it is frame 0's prompts with rows of the base ``fq_pos`` as key positions (for
  T >= 2). With a single group every row is read, as in our path.

Only models in which every frame query group has its own video query group use this path (methods with video
prompts, and any model with one group); for the others (``eclipse``, ``hvpl_no_video_prompts`` at steps >= 1)
the setting has no effect, since the authors' HVPL code has no such model.
"""
from __future__ import annotations

import torch

from hvpl.utils.errors import HVPLError


def applies(model) -> bool:
    """True when the model's config asks for the authors' test path and the model has its structure."""
    return bool(getattr(model, "authors_compat", False)) and (model.method.video_prompts or model.num_groups == 1)


def encode_per_frame(video_decoder, frame_queries: list) -> torch.Tensor:
    """Per group (T, Qg, C) -> input projection + context encoder over each frame's chain of all groups'
    queries (known-3) -> (T, sum Qg, C)."""
    x = video_decoder.input_proj(torch.cat(frame_queries, 1))          # (T, Qall, C)
    return video_decoder.context_encoder(x[:, None]).squeeze(1)         # a 1 x Qall grid per frame


def group_memories(video_decoder, encoded: torch.Tensor) -> list:
    """Encoded (T, Qall, C) -> per group (memory (1, S, C), key positions (S, C)) as the authors slice them
    (known-2): all T * Qall rows for a single group, else rows [q_n, q_{n+1}) with q = cumsum of the clip
    query counts."""
    t, _, c = encoded.shape
    src = encoded.reshape(1, -1, c)
    key_pos = [video_decoder.fq_pos.weight] + [g.fq_pos for g in video_decoder.prompts]
    dec_pos = torch.cat([p.repeat(t, 1) for p in key_pos], 0)            # (T * Qall, C), group after group
    if video_decoder.num_groups == 1:
        return [(src, dec_pos)]
    sizes = [video_decoder.query_feat.weight.shape[0]] + [g.content.shape[0] for g in video_decoder.prompts]
    bounds = torch.tensor([0] + sizes).cumsum(0).tolist()
    return [(src[:, a:b], dec_pos[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def forward_video_authors(model, frame_queries: list, vmf: torch.Tensor, groups: list) -> list:
    """HVPLModel.forward_video's output ([{"pred_logits" (Qv, K+1), "pred_masks" (Qv, T, h, w), "task"}]) computed
    the authors' way from per group last-layer frame queries (T, Qg, C) and video mask features (T, C, h, w).
    Needs every group of the model (their slicing depends on all of them)."""
    if list(groups) != list(range(model.num_groups)):
        raise HVPLError(f"inference.authors_compat: runs all {model.num_groups} query groups, got groups {list(groups)}")
    vd = model.video_decoder
    encoded = encode_per_frame(vd, frame_queries)
    results = []
    for k, ((memory, mem_pos), fq) in enumerate(zip(group_memories(vd, encoded), frame_queries)):
        content, pos_per_layer, _, mask_embed = vd.group_queries(k, fq.shape[1], prompt_input=False)
        q = vd.decode(content, pos_per_layer, memory, mem_pos)[-1, 0]     # (Qv, C)
        masks = torch.einsum("qc,tchw->qthw", mask_embed(q), vmf)
        results.append({"pred_logits": model.video_classifier(q), "pred_masks": masks, "task": k})
    return results
