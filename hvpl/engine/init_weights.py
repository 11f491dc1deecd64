"""Step-0 initialisation from a weights file (``scenario.train.init_weights``, protocol.md Section 2: the paper
starts from a VITA model pre-trained on COCO).

Two namings are read:
- ours (a ``model_final.pth`` or any state dict of :class:`~hvpl.model.hvpl.HVPLModel`);
- detectron2's VITA / Mask2Former meta-architecture (``sem_seg_head.pixel_decoder.*``,
  ``sem_seg_head.predictor.*``, ``vita_module.*``, ``backbone.*``), renamed onto our modules by
  :func:`vita_to_hvpl_name`.

Every tensor whose (renamed) name and shape match is copied; the rest of the model keeps its initialisation.
Not mapped, as in HVPL: VITA's class heads (``class_embed``: HVPL replaces them with incremental classifiers)
and its window-attention object encoder (``enc_self_attn`` / ``enc_ffn``: HVPL's tree-scan context encoder
replaces it), plus the criteria's buffers. VITA/Mask2Former's ResNet puts the stride in the 3x3 conv
(``STRIDE_IN_1X1: False``), so loading such a file moves our ResNet's stride there too.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from hvpl.engine.model_file import FINAL_NAME, load_model_file
from hvpl.model.backbone import read_weight_file, weight_tensor
from hvpl.utils.errors import HVPLError
from hvpl.utils.logging import log

# detectron2 prefix -> ours, first match wins (applied once per key; backbone names are already shared)
_PREFIXES = (
    (r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.", "pixel_decoder.layers."),
    (r"sem_seg_head\.pixel_decoder\.transformer\.level_embed$", "pixel_decoder.level_embed"),
    (r"sem_seg_head\.pixel_decoder\.adapter_1\.weight$", "pixel_decoder.lateral_conv.0.weight"),
    (r"sem_seg_head\.pixel_decoder\.adapter_1\.norm\.", "pixel_decoder.lateral_conv.1."),
    (r"sem_seg_head\.pixel_decoder\.layer_1\.weight$", "pixel_decoder.output_conv.0.weight"),
    (r"sem_seg_head\.pixel_decoder\.layer_1\.norm\.", "pixel_decoder.output_conv.1."),
    (r"sem_seg_head\.pixel_decoder\.", "pixel_decoder."),
    (r"sem_seg_head\.predictor\.", "frame_decoder."),
    (r"vita_module\.input_proj_dec\.", "video_decoder.input_proj."),
    (r"vita_module\.vita_mask_features\.", "video_decoder.mask_features."),
    (r"vita_module\.", "video_decoder."),
)
# inside both decoders: Mask2Former/VITA layer lists -> ours (attention modules are all named ``attn``)
_DECODER_LAYERS = (
    (r"\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.", r".cross_layers.\1.attn."),
    (r"\.transformer_cross_attention_layers\.", ".cross_layers."),
    (r"\.transformer_self_attention_layers\.(\d+)\.self_attn\.", r".self_layers.\1.attn."),
    (r"\.transformer_self_attention_layers\.", ".self_layers."),
    (r"\.transformer_ffn_layers\.", ".ffn_layers."),
)
DETECTRON2_HEADS = ("sem_seg_head.", "vita_module.")


def vita_to_hvpl_name(name: str) -> str:
    """A detectron2 VITA/Mask2Former parameter name -> ours (unchanged when no rule applies)."""
    for pattern, repl in _PREFIXES:
        renamed, n = re.subn("^" + pattern, repl, name)
        if n:
            name = renamed
            break
    if name.startswith(("frame_decoder.", "video_decoder.")):
        for pattern, repl in _DECODER_LAYERS:
            name = re.sub(pattern, repl, name)
    return name


def _read_state(path: str) -> dict:
    """{name: CPU tensor} of a weights file (a ``{"model": state}`` wrapper unwrapped)."""
    if str(path).endswith(FINAL_NAME):
        ckpt = load_model_file(path)
    else:
        ckpt = read_weight_file(Path(path), "train.init_weights")
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise HVPLError(f"{path}: train.init_weights must be a state dict or a dict with a 'model' entry")
    return {str(k): weight_tensor(v, Path(path), str(k)) for k, v in state.items()}


def _group(name: str) -> str:
    """The module a file entry belongs to, for the log (``vita_module.enc_ffn``, ``sem_seg_head.predictor.x``)."""
    parts = name.split(".")
    return ".".join(parts[:3] if parts[0] == "sem_seg_head" else parts[:2])


def _counts(counter: Counter) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counter.items()))


def load_init_weights(model, path: str) -> dict:
    """Copy every tensor of ``path`` whose name (ours or detectron2 VITA's, renamed) and shape match into
    ``model``. Returns {"format", "loaded", "unused": [file names]}; logs the counts per module and warns about
    tensors whose name matches but whose shape does not."""
    state = _read_state(path)
    vita = any(k.startswith(DETECTRON2_HEADS) for k in state)
    own = model.state_dict()
    match, unused, mismatched = {}, [], []
    for key, value in state.items():
        name = vita_to_hvpl_name(key) if vita else key
        if name in own and tuple(value.shape) == tuple(own[name].shape):
            match[name] = value.to(own[name].dtype)
        else:
            unused.append(key)
            if name in own:
                mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[name].shape)}")
    if vita and any(k.startswith("backbone.") for k in match) and hasattr(model.backbone, "set_stride_in_1x1"):
        model.backbone.set_stride_in_1x1(False)
        log(f"{path}: ResNet stride moved into the 3x3 conv (VITA/Mask2Former's STRIDE_IN_1X1: False)")
    model.load_state_dict(match, strict=False)
    parts = Counter(name.split(".", 1)[0] for name in match)
    groups = Counter(_group(k) for k in unused)
    naming = "detectron2 VITA/Mask2Former names" if vita else "this model's names"
    log(f"{path} ({naming}): initialised {len(match)} of {len(own)} tensors ({_counts(parts) or 'none'}); "
        f"{len(unused)} tensors of the file unused ({_counts(groups) or '-'})")
    if mismatched:
        log(f"warning: {path}: {len(mismatched)} tensors named as this model's have another shape (a different "
            f"model size?), e.g. {'; '.join(mismatched[:3])}")
    if set(parts) <= {"backbone"}:
        log(f"warning: {path}: only backbone tensors matched; the file names its heads neither as this model "
            "nor as detectron2's VITA/Mask2Former")
    return {"format": "detectron2-vita" if vita else "hvpl", "loaded": len(match), "unused": unused}


def describe_init(cfg: dict) -> str:
    """Where the run's step-0 weights came from (summary.csv's ``init_weights``): a full-model file, an
    ImageNet backbone file, or ``scratch``."""
    model_file = cfg["scenario"]["train"].get("init_weights")
    backbone_file = cfg["model"].get("backbone", {}).get("weights")
    if model_file:
        return f"model:{model_file}"
    return f"backbone:{backbone_file}" if backbone_file else "scratch"
