"""Weights files in our naming or in detectron2's (VITA-COCO, the authors' HVPL checkpoints) -> our model.

Two namings are read:
- ours (a ``model_final.pth`` or any state dict of :class:`~hvpl.model.hvpl.HVPLModel`);
- detectron2's VITA / Mask2Former / HVPL meta-architecture (``backbone.*``, ``sem_seg_head.pixel_decoder.*``,
  ``sem_seg_head.predictor.*``, ``vita_module.*``), renamed onto our modules by :func:`detectron2_target`:
  the trunks by module prefix (``_PREFIXES``), HVPL's own parts (incremental classifiers, frame and video prompt
  groups, tree-scan context encoder) by ``_HVPL_RULES``, three of which also reshape the tensor.

``scenario.train.init_weights`` (step 0; protocol.md Section 2: the paper starts from VITA-COCO) copies every
tensor whose renamed name and shape match and lists the rest of the file by name in the log. VITA-COCO's class
heads (``class_embed``, replaced by incremental classifiers) and window-attention object encoder
(``enc_self_attn`` / ``enc_ffn``, replaced by the tree scan) have no counterpart here (docs/DESIGN.md "Authors'
checkpoints"). VITA/Mask2Former's ResNet puts the stride in the 3x3 conv (``STRIDE_IN_1X1: False``), so loading
such a file moves our ResNet's stride there too. A whole authors' checkpoint of step t becomes a
``model_final.pth`` through :mod:`hvpl.engine.authors_checkpoint`.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

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


def _level_rules(theirs: str, level: str) -> tuple:
    """HVPL's per-task parts of one decoder level (ECLIPSE's classifier and prompts; continual/modeling/
    classifier.py and the two transformer decoders of JiahuaDong/HVPL). Their ``cls[0]`` is the no-object head,
    ``cls[k]`` task k-1's; ``prompt_*[g]`` is task g+1's group = our ``prompts[g]``; ``prompt_embed[g][l]`` is
    layer l's positional prompt, row l of our (L, P, C) ``pos``."""
    return (
        (rf"{theirs}class_embed\.cls\.0\.(?P<rest>.+)", f"{level}_classifier.no_object.{{rest}}", None),
        (rf"{theirs}class_embed\.cls\.(?P<k>\d+)\.(?P<rest>.+)", f"{level}_classifier.heads.{{task}}.{{rest}}", None),
        (rf"{theirs}prompt_feat\.(?P<g>\d+)\.weight", f"{level}_decoder.prompts.{{g}}.content", None),
        (rf"{theirs}prompt_embed\.(?P<g>\d+)\.(?P<row>\d+)\.weight", f"{level}_decoder.prompts.{{g}}.pos", None),
        (rf"{theirs}prompt_mask_embed\.(?P<g>\d+)\.(?P<rest>.+)", f"{level}_decoder.prompts.{{g}}.mask_embed.{{rest}}",
         None),
    )


_SCAN, _OURS_SCAN = r"vita_module\.enc_mamba\.(?P<i>\d+)\.", "video_decoder.context_encoder.layers.{i}."
# (authors' name pattern, our name template, tensor transform); first full match wins
_HVPL_RULES = _level_rules(r"sem_seg_head\.predictor\.", "frame") + _level_rules(r"vita_module\.", "video") + (
    (r"vita_module\.prompt_fq_pos\.(?P<g>\d+)\.weight", "video_decoder.prompts.{g}.fq_pos", None),
    # GrootV's layer (norm1/norm2 are one-module Sequentials, mlp = fc1 -> GELU -> fc2) and its Tree_SSM, which
    # stacks K = 1 scan direction into x_proj_weight (K, R+2N, D), dt_projs_* (K, ...)
    (_SCAN + r"norm(?P<n>[12])\.0\.(?P<p>weight|bias)", _OURS_SCAN + "norm{n}.{p}", None),
    (_SCAN + r"mlp\.fc1\.(?P<p>weight|bias)", _OURS_SCAN + "mlp.0.{p}", None),
    (_SCAN + r"mlp\.fc2\.(?P<p>weight|bias)", _OURS_SCAN + "mlp.2.{p}", None),
    (_SCAN + r"TreeSSM\.x_proj_weight", _OURS_SCAN + "ssm.x_proj.weight", "squeeze0"),
    (_SCAN + r"TreeSSM\.dt_projs_weight", _OURS_SCAN + "ssm.dt_proj.weight", "squeeze0"),
    (_SCAN + r"TreeSSM\.dt_projs_bias", _OURS_SCAN + "ssm.dt_proj.bias", "squeeze0"),
    (_SCAN + r"TreeSSM\.A_logs", _OURS_SCAN + "ssm.A_log", None),
    (_SCAN + r"TreeSSM\.Ds", _OURS_SCAN + "ssm.D", None),
    # their grid is (query, layer*batch) per frame (kernel rows = queries), ours (frame, query) (kernel columns =
    # queries): the transposed kernel takes the same taps along the query axis
    (_SCAN + r"TreeSSM\.conv2d\.(?P<p>weight|bias)", _OURS_SCAN + "ssm.conv.{p}", "swap_hw"),
    (_SCAN + r"TreeSSM\.(?P<m>in_proj|out_proj|h_norm|out_norm)\.(?P<p>weight|bias)", _OURS_SCAN + "ssm.{m}.{p}", None),
)
_TRANSFORMS = {
    "squeeze0": lambda t: t.squeeze(0) if t.dim() > 1 and t.shape[0] == 1 else t,
    "swap_hw": lambda t: t.transpose(-1, -2).contiguous() if t.dim() == 4 else t,
}
# biases of ours the authors' layer does not have (GrootV's depthwise conv: conv_bias=False): set to zero when the
# file gives the layer's weight, which makes the two layers compute the same
_ABSENT_IN_AUTHORS = (r"video_decoder\.context_encoder\.layers\.\d+\.ssm\.conv\.bias",)


class Target(NamedTuple):
    """Where a file tensor goes: our tensor ``name``, its row ``row`` (None: the whole tensor), after ``transform``."""
    name: str
    row: int | None = None
    transform: str | None = None


def detectron2_target(name: str) -> Target:
    """A detectron2 VITA/Mask2Former/HVPL tensor name -> its Target in our model (name unchanged when no rule
    applies)."""
    for pattern, template, transform in _HVPL_RULES:
        m = re.fullmatch(pattern, name)
        if m:
            groups = m.groupdict()
            task = int(groups["k"]) - 1 if "k" in groups else None
            row = int(groups.pop("row")) if "row" in groups else None
            return Target(template.format(task=task, **groups), row, transform)
    for pattern, repl in _PREFIXES:
        renamed, n = re.subn("^" + pattern, repl, name)
        if n:
            name = renamed
            break
    if name.startswith(("frame_decoder.", "video_decoder.")):
        for pattern, repl in _DECODER_LAYERS:
            name = re.sub(pattern, repl, name)
    return Target(name)


def vita_to_hvpl_name(name: str) -> str:
    """A detectron2 VITA/Mask2Former/HVPL parameter name -> our tensor's name (see :func:`detectron2_target`)."""
    return detectron2_target(name).name


def is_detectron2_state(state: dict) -> bool:
    return any(str(k).startswith(DETECTRON2_HEADS) for k in state)


@dataclass
class StateMatch:
    """The outcome of matching a file's state dict against a model's (:func:`match_state`)."""
    values: dict = field(default_factory=dict)       # our name -> tensor to load (our dtype)
    unused: list = field(default_factory=list)       # file names not loaded
    mismatched: list = field(default_factory=list)   # "file name (shape) vs (our shape)"
    partial: list = field(default_factory=list)      # our stacked tensors only some rows of which the file has
    absent: list = field(default_factory=list)       # our tensors set by _ABSENT_IN_AUTHORS

    def not_loaded(self, own: dict) -> list:
        """Our tensors the file gave nothing (the ResNet's stride-placement buffer is set by the loader)."""
        return [k for k in own if k not in self.values and not k.endswith("stride_in_1x1")]


def _place(match: StateMatch, rows: dict, key: str, value: torch.Tensor, target: Target, own: dict) -> None:
    ref = own.get(target.name)
    if ref is None:
        match.unused.append(key)
        return
    want = tuple(ref.shape) if target.row is None else tuple(ref.shape[1:])
    if tuple(value.shape) != want or (target.row is not None and target.row >= ref.shape[0]):
        match.unused.append(key)
        match.mismatched.append(f"{key} {tuple(value.shape)} vs {target.name} {tuple(ref.shape)}")
    elif target.row is None:
        match.values[target.name] = value.to(ref.dtype)
    else:
        rows.setdefault(target.name, {})[target.row] = value.to(ref.dtype)


def match_state(state: dict, own: dict, detectron2: bool) -> StateMatch:
    """Match ``state`` (file name -> tensor) against ``own`` (our state dict; meta tensors do): rename
    (``detectron2``) and reshape each file tensor, keep those whose shape is ours. Per-layer rows are stacked
    (rows the file lacks keep our values and the tensor is listed in ``partial``)."""
    match, rows = StateMatch(), {}
    for key, value in state.items():
        target = detectron2_target(key) if detectron2 else Target(key)
        if target.transform:
            value = _TRANSFORMS[target.transform](value)
        _place(match, rows, key, value, target, own)
    for name, got in rows.items():
        stacked = own[name].clone()
        for i, row in got.items():
            stacked[i] = row
        match.values[name] = stacked
        if len(got) < own[name].shape[0]:
            match.partial.append(name)
    if detectron2:
        for pattern in _ABSENT_IN_AUTHORS:
            for name in own:
                weight = name.rsplit(".", 1)[0] + ".weight"
                if re.fullmatch(pattern, name) and name not in match.values and weight in match.values:
                    match.values[name] = torch.zeros_like(own[name])
                    match.absent.append(name)
    return match


def _read_state(path: str) -> dict:
    """{name: CPU tensor} of a weights file (a ``{"model": state}`` wrapper, as ours and detectron2's, unwrapped)."""
    return state_of(read_weight_file(Path(path), "train.init_weights"), path, "train.init_weights")


def state_of(ckpt, path, what: str) -> dict:
    """{name: CPU tensor} of a loaded weights file: its ``model`` entry or the dict itself, a DistributedDataParallel
    ``module.`` prefix removed; HVPLError naming ``path`` otherwise."""
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise HVPLError(f"{path}: {what} must be a state dict or a dict with a 'model' entry")
    if state and all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module."):]: v for k, v in state.items()}
    return {str(k): weight_tensor(v, Path(path), str(k)) for k, v in state.items()}


def _group(name: str) -> str:
    """The module a file entry belongs to, for the log (``vita_module.enc_ffn``, ``sem_seg_head.predictor.x``)."""
    parts = name.split(".")
    return ".".join(parts[:3] if parts[0] == "sem_seg_head" else parts[:2])


def _counts(counter: Counter) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counter.items()))


def report_match(path, match: StateMatch, own: dict, naming: str) -> None:
    """Log what a file gave the model: counts per module, the file's unused tensors by name, and our tensors the
    file did not give (by module); warn about shape mismatches and partly given stacked tensors."""
    parts = Counter(name.split(".", 1)[0] for name in match.values)
    left = match.not_loaded(own)
    log(f"{path} ({naming}): initialised {len(match.values)} of {len(own)} tensors ({_counts(parts) or 'none'}); "
        f"{len(match.unused)} tensors of the file unused ({_counts(Counter(map(_group, match.unused))) or '-'}); "
        f"{len(left)} of ours not in the file ({_counts(Counter(map(_group, left))) or '-'})")
    if match.unused:
        log(f"{path}: unused: {', '.join(match.unused)}")
    if match.absent:
        log(f"{path}: {len(match.absent)} tensors without a counterpart in the file set to zero "
            f"(the authors' tree-scan depthwise conv has no bias): {', '.join(match.absent)}")
    if match.mismatched:
        log(f"warning: {path}: {len(match.mismatched)} tensors named as this model's have another shape (a different "
            f"model size?), e.g. {'; '.join(match.mismatched[:3])}")
    if match.partial:
        log(f"warning: {path}: only some layers' rows given for {', '.join(match.partial)}")


def load_init_weights(model, path: str) -> dict:
    """Copy every tensor of ``path`` whose name (ours or detectron2's, renamed) and shape match into ``model``.
    Returns {"format", "loaded", "unused": [file names], "not_loaded": [our names]}; logs what was loaded."""
    state = _read_state(path)
    detectron2 = is_detectron2_state(state)
    own = model.state_dict()
    match = match_state(state, own, detectron2)
    if detectron2 and any(k.startswith("backbone.") for k in match.values) and hasattr(model.backbone,
                                                                                          "set_stride_in_1x1"):
        model.backbone.set_stride_in_1x1(False)
        log(f"{path}: ResNet stride moved into the 3x3 conv (VITA/Mask2Former's STRIDE_IN_1X1: False)")
    model.load_state_dict(match.values, strict=False)
    naming = "detectron2 VITA/Mask2Former/HVPL names" if detectron2 else "this model's names"
    report_match(path, match, own, naming)
    if {name.split(".", 1)[0] for name in match.values} <= {"backbone"}:
        log(f"warning: {path}: only backbone tensors matched; the file names its heads neither as this model "
            "nor as detectron2's VITA/Mask2Former")
    return {"format": "detectron2-vita" if detectron2 else "hvpl", "loaded": len(match.values),
            "unused": match.unused, "not_loaded": match.not_loaded(own)}


def describe_init(cfg: dict) -> str:
    """Where the run's step-0 weights came from (summary.csv's ``init_weights``): a full-model file, an
    ImageNet backbone file, or ``scratch``."""
    model_file = cfg["scenario"]["train"].get("init_weights")
    backbone_file = cfg["model"].get("backbone", {}).get("weights")
    if model_file:
        return f"model:{model_file}"
    return f"backbone:{backbone_file}" if backbone_file else "scratch"
