"""Test helper: our model's tensors written out in the authors' detectron2 naming (VITA-COCO, HVPL checkpoints).

Written by hand from the VITA / Mask2Former / JiahuaDong/HVPL module definitions, independently of the converter
(hvpl.engine.init_weights), and checked against the authors' own key lists (tests/data/authors_keys/, dumped from
their model by the parity harness) at the paper's sizes; at other sizes it makes reduced fake checkpoints.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

KEYS_DIR = Path(__file__).parent / "data" / "authors_keys"


def authors_keys(step: int) -> dict:
    """The authors' key list of ytvis2019_20-2 step ``step``: {"classes", "num_prompts", "tensors": {name:
    {"shape", "kind", "trainable"}}, ...}."""
    return json.loads((KEYS_DIR / f"authors_keys_step{step}.json").read_text())


def vita_names(cfg: dict) -> dict[str, str]:
    """{detectron2 VITA-COCO name: our name} of every tensor the two share, written out by hand from the
    VITA / Mask2Former module definitions (meta-arch prefixes sem_seg_head.pixel_decoder, .predictor, vita_module)
    for the sizes of ``cfg`` (a model config)."""
    pd, fd, vd = "sem_seg_head.pixel_decoder", "sem_seg_head.predictor", "vita_module"
    table = {f"{pd}.transformer.level_embed": "pixel_decoder.level_embed"}
    for i in range(3):
        for j in (0, 1):
            for p in ("weight", "bias"):
                table[f"{pd}.input_proj.{i}.{j}.{p}"] = f"pixel_decoder.input_proj.{i}.{j}.{p}"
    for i in range(cfg["pixel_decoder"]["num_layers"]):
        for sub in ("self_attn.sampling_offsets", "self_attn.attention_weights", "self_attn.value_proj",
                    "self_attn.output_proj", "norm1", "linear1", "linear2", "norm2"):
            for p in ("weight", "bias"):
                table[f"{pd}.transformer.encoder.layers.{i}.{sub}.{p}"] = f"pixel_decoder.layers.{i}.{sub}.{p}"
    table.update({f"{pd}.adapter_1.weight": "pixel_decoder.lateral_conv.0.weight",
                  f"{pd}.adapter_1.norm.weight": "pixel_decoder.lateral_conv.1.weight",
                  f"{pd}.adapter_1.norm.bias": "pixel_decoder.lateral_conv.1.bias",
                  f"{pd}.layer_1.weight": "pixel_decoder.output_conv.0.weight",
                  f"{pd}.layer_1.norm.weight": "pixel_decoder.output_conv.1.weight",
                  f"{pd}.layer_1.norm.bias": "pixel_decoder.output_conv.1.bias",
                  f"{pd}.mask_features.weight": "pixel_decoder.mask_features.weight",
                  f"{pd}.mask_features.bias": "pixel_decoder.mask_features.bias",
                  f"{fd}.level_embed.weight": "frame_decoder.level_embed.weight",
                  f"{vd}.vita_mask_features.weight": "video_decoder.mask_features.weight",
                  f"{vd}.vita_mask_features.bias": "video_decoder.mask_features.bias"})
    for prefix, ours, layers in ((fd, "frame_decoder", cfg["frame_decoder"]["num_layers"]),
                                 (vd, "video_decoder", cfg["video_decoder"]["dec_layers"])):
        for i in range(layers):
            for theirs, mine in ((f"transformer_cross_attention_layers.{i}.multihead_attn", f"cross_layers.{i}.attn"),
                                 (f"transformer_self_attention_layers.{i}.self_attn", f"self_layers.{i}.attn")):
                for p in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"):
                    table[f"{prefix}.{theirs}.{p}"] = f"{ours}.{mine}.{p}"
            for sub in ("transformer_cross_attention_layers", "transformer_self_attention_layers"):
                short = "cross_layers" if "cross" in sub else "self_layers"
                for p in ("weight", "bias"):
                    table[f"{prefix}.{sub}.{i}.norm.{p}"] = f"{ours}.{short}.{i}.norm.{p}"
            for sub in ("linear1", "linear2", "norm"):
                for p in ("weight", "bias"):
                    table[f"{prefix}.transformer_ffn_layers.{i}.{sub}.{p}"] = f"{ours}.ffn_layers.{i}.{sub}.{p}"
        for p in ("weight", "bias"):
            table[f"{prefix}.decoder_norm.{p}"] = f"{ours}.decoder_norm.{p}"
            for j in range(cfg["frame_decoder"]["mask_mlp_layers"]):
                table[f"{prefix}.mask_embed.layers.{j}.{p}"] = f"{ours}.mask_embed.layers.{j}.{p}"
        for emb in ("query_feat", "query_embed"):
            table[f"{prefix}.{emb}.weight"] = f"{ours}.{emb}.weight"
    table[f"{vd}.fq_pos.weight"] = "video_decoder.fq_pos.weight"
    for p in ("weight", "bias"):
        table[f"{vd}.input_proj_dec.{p}"] = f"video_decoder.input_proj.{p}"
        for sim in ("sim_embed_frame", "sim_embed_clip"):
            table[f"{vd}.{sim}.{p}"] = f"video_decoder.{sim}.{p}"
    return table



def _scan_entries(name: str, value: torch.Tensor) -> dict:
    """One tensor of our tree-scan layer i -> GrootVLayer / Tree_SSM (K = 1 direction stacked in front; the 3x3
    kernel's rows run over their query axis, ours' columns: transposed)."""
    i, rest = re.fullmatch(r"video_decoder\.context_encoder\.layers\.(\d+)\.(.+)", name).groups()
    pre = f"vita_module.enc_mamba.{i}."
    stacked = {"ssm.x_proj.weight": "x_proj_weight", "ssm.dt_proj.weight": "dt_projs_weight",
               "ssm.dt_proj.bias": "dt_projs_bias"}
    if rest in stacked:
        return {f"{pre}TreeSSM.{stacked[rest]}": value[None]}
    if rest == "ssm.conv.weight":
        return {f"{pre}TreeSSM.conv2d.weight": value.transpose(2, 3)}
    if rest in ("ssm.A_log", "ssm.D"):
        return {f"{pre}TreeSSM.{rest[4:]}s": value}
    if rest == "ssm.conv.bias":          # Tree_SSM's conv2d has no bias
        return {}
    for ours, theirs in ((r"norm([12])\.", r"norm\1.0."), (r"mlp\.0\.", "mlp.fc1."), (r"mlp\.2\.", "mlp.fc2."),
                         (r"ssm\.", "TreeSSM.")):
        rest, n = re.subn("^" + ours, theirs, rest)
        if n:
            return {pre + rest: value}
    raise KeyError(name)


def _level_entries(name: str, value: torch.Tensor) -> dict | None:
    """Classifier and prompt tensors of either level (ECLIPSE naming: cls[0] = no-object, cls[k] = task k-1;
    per-layer positional prompts one Embedding per layer), or None for a trunk tensor."""
    m = re.fullmatch(r"(frame|video)_(classifier|decoder)\.(no_object|heads\.(\d+)|prompts\.(\d+))\.(.+)", name)
    if m is None:
        return None
    level, _, part, head, group, rest = m.groups()
    pre = "sem_seg_head.predictor." if level == "frame" else "vita_module."
    if part == "no_object":
        return {f"{pre}class_embed.cls.0.{rest}": value}
    if head is not None:
        return {f"{pre}class_embed.cls.{int(head) + 1}.{rest}": value}
    if rest == "pos":
        return {f"{pre}prompt_embed.{group}.{layer}.weight": value[layer] for layer in range(value.shape[0])}
    if rest.startswith("mask_embed."):
        return {f"{pre}prompt_mask_embed.{group}.{rest[len('mask_embed.'):]}": value}
    return {f"{pre}{dict(content='prompt_feat', fq_pos='prompt_fq_pos')[rest]}.{group}.weight": value}


def authors_state(model, cfg: dict) -> dict:
    """``model``'s state dict (an HVPLModel of method hvpl, model config ``cfg``) in the authors' naming, with the
    criteria's no-object weights (K + 1 entries) they also save."""
    trunk = {ours: theirs for theirs, ours in vita_names(cfg).items()}
    out = {}
    for name, value in model.state_dict().items():
        if name.startswith("backbone."):
            if not name.endswith("stride_in_1x1"):
                out[name] = value
        elif name.startswith("video_decoder.context_encoder."):
            out.update(_scan_entries(name, value))
        else:
            level = _level_entries(name, value)
            out.update(level if level is not None else {trunk[name]: value})
    weights = torch.ones(model.num_classes + 1, device=next(model.parameters()).device)
    out.update({"criterion.empty_weight": weights, "vita_criterion.empty_weight": weights.clone()})
    return out
