"""HVPLModel: backbone + pixel decoder + frame decoder + video decoder + incremental classifiers
(method.md Section 1; names and output format fixed in docs/DESIGN.md "Model").

Groups: 0 = base queries, k >= 1 = task k's prompts. Training uses one group (:meth:`HVPLModel.set_step_mode`);
inference (:meth:`HVPLModel.forward_video`) runs every group alone over all frames of a video.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from hvpl.continual.methods import Method, get_method
from hvpl.model import authors_compat
from hvpl.model.backbone import build_backbone
from hvpl.model.classifier import IncrementalClassifier
from hvpl.model.frame_decoder import FrameDecoder
from hvpl.model.pixel_decoder import PixelDecoder
from hvpl.model.video_decoder import VideoDecoder
from hvpl.utils.errors import HVPLError

# ImageNet statistics on 0..255 RGB input (the backbones' pre-training normalisation).
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# The backbone's coarsest stride: inputs are zero-padded (after normalisation) to a multiple of it.
SIZE_DIVISIBILITY = 32


class HVPLModel(nn.Module):
    """The whole model; see docs/DESIGN.md "Model" for the output dicts."""

    def __init__(self, model_cfg: dict, method: Method | str, prompts_per_task: int,
                 classes_per_task: Sequence[int]):
        super().__init__()
        self.model_cfg = model_cfg
        self.method = get_method(method)
        self.prompts_per_task = prompts_per_task
        classes_per_task = list(classes_per_task)
        if not classes_per_task:
            raise ValueError("classes_per_task must list at least the base classes")
        dim, cls_layers = model_cfg["hidden_dim"], model_cfg["classifier_layers"]
        self.backbone = build_backbone(model_cfg)
        self.pixel_decoder = PixelDecoder(model_cfg, self.backbone.out_channels)
        self.frame_decoder = FrameDecoder(model_cfg)
        self.video_decoder = VideoDecoder(model_cfg, context=self.method.context)
        self.frame_classifier = IncrementalClassifier(dim, cls_layers, classes_per_task[:1])
        self.video_classifier = IncrementalClassifier(dim, cls_layers, classes_per_task[:1])
        self.register_buffer("pixel_mean", torch.tensor(model_cfg.get("pixel_mean", PIXEL_MEAN)).view(3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(model_cfg.get("pixel_std", PIXEL_STD)).view(3, 1, 1),
                             persistent=False)
        self.size_divisibility = model_cfg.get("size_divisibility", SIZE_DIVISIBILITY)
        self.chunk_frames = model_cfg.get("inference", {}).get("chunk_frames", 1)
        # the authors' test-time video path (hvpl.model.authors_compat); inference only, default off
        self.authors_compat = bool(model_cfg.get("inference", {}).get("authors_compat", False))
        self.train_group = 0
        for n in classes_per_task[1:]:
            self.add_task(n)

    # ----------------------------------------------------------------- growth
    @property
    def classes_per_task(self) -> list[int]:
        return list(self.frame_classifier.classes_per_task)

    @property
    def num_classes(self) -> int:
        return self.frame_classifier.num_classes

    @property
    def num_groups(self) -> int:
        return self.frame_decoder.num_groups

    def add_task(self, num_classes: int) -> None:
        """New class heads (both levels) and, for prompt methods, a frame (+ video) prompt group."""
        self.frame_classifier.add_task(num_classes)
        self.video_classifier.add_task(num_classes)
        if self.method.frame_prompts:
            self.frame_decoder.add_group(self.prompts_per_task)
            if self.method.video_prompts:
                self.video_decoder.add_group(self.prompts_per_task)

    def set_step_mode(self, step: int) -> None:
        """Train the newest group at step >= 1 of a prompt method, else the base group 0."""
        if self.method.frame_prompts and step >= 1:
            if step >= self.num_groups:
                raise HVPLError(f"step {step}: the model has only {self.num_groups} query groups; grow it first")
            self.train_group = step
        else:
            self.train_group = 0

    def video_group(self, frame_group: int) -> int:
        """The video query group paired with a frame group (base clip queries without video prompts)."""
        return frame_group if self.method.video_prompts else 0

    # ------------------------------------------------------------- trunk
    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) 0..255 RGB -> normalised, zero-padded at the bottom/right to a multiple of
        ``size_divisibility`` (model config, default 32)."""
        x = (frames.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        div = self.size_divisibility
        return F.pad(x, (0, (-w) % div, 0, (-h) % div))

    def _trunk_frozen(self) -> bool:
        """True when no backbone / pixel-decoder weight is trainable: the trunk then runs without autograd."""
        params = list(self.backbone.parameters()) + list(self.pixel_decoder.parameters())
        return not any(p.requires_grad for p in params)

    def trunk(self, frames: torch.Tensor) -> dict:
        """(N, 3, H, W) 0..255 -> pixel decoder outputs (mask_features, video_mask_source, multi_scale_features)."""
        ctx = torch.no_grad() if self._trunk_frozen() else contextlib.nullcontext()
        with ctx:
            return self.pixel_decoder(self.backbone(self.preprocess(frames)))

    # ------------------------------------------------------------- training
    def _frame_outputs(self, group_out: dict) -> dict:
        # unbind: one backward node per tensor instead of a full-size zero gradient per selected level
        logits = self.frame_classifier(group_out["queries"]).unbind(0)  # L+1 x (N, Qg, K+1)
        masks = group_out["masks"]
        aux = [{"pred_logits": logits[i], "pred_masks": masks[i]} for i in range(len(masks) - 1)]
        return {"pred_logits": logits[-1], "pred_masks": masks[-1], "aux_outputs": aux}

    def _video_outputs(self, vid: dict) -> dict:
        """VideoDecoder output (D, L, B, ...) -> final (last clip layer, last frame layer) + aux outputs."""
        logits = self.video_classifier(vid["queries"])  # (D, L, B, Qv, K+1)
        d, lyr = logits.shape[:2]
        # (D, L, ...) -> D*L levels in (i, j) order, by unbind (see _frame_outputs)
        logits = [x for row in logits.unbind(0) for x in row.unbind(0)]
        masks = [x for row in vid["masks"].unbind(0) for x in row.unbind(0)]
        aux = [{"pred_logits": logits[k], "pred_masks": masks[k]} for k in range(d * lyr - 1)]
        # the criterion averages the L frame layers' terms and pools the similarity loss over them (authors);
        # the embeddings keep the clip axis first (the trainer splits outputs per clip along dim 0)
        return {"pred_logits": logits[-1], "pred_masks": masks[-1], "aux_outputs": aux, "frame_layers": lyr,
                "pred_fq_embed": vid["fq_embed"].transpose(0, 1), "pred_cq_embed": vid["cq_embed"][-1].transpose(0, 1)}

    def forward(self, images: torch.Tensor) -> dict:
        """images: (B, T, 3, H, W) 0..255 -> {"frame": ..., "video": ...} for the group of the current step
        (docs/DESIGN.md). In training the video decoder is fed the last ``num_frame_layers_train`` frame
        layers, in eval mode the last one."""
        b, t = images.shape[:2]
        pix = self.trunk(images.flatten(0, 1))
        fd = self.frame_decoder(pix["multi_scale_features"], pix["mask_features"], groups=[self.train_group])
        group_out = fd["groups"][0]
        n_layers = self.video_decoder.num_frame_layers_train if self.training else 1
        queries = group_out["queries"]
        if n_layers > queries.shape[0] - 1:
            raise HVPLError(f"model config: video_decoder.num_frame_layers_train={n_layers} exceeds "
                            f"frame_decoder.num_layers={queries.shape[0] - 1}")
        fq = queries[-n_layers:]
        fq = fq.reshape(n_layers, b, t, *fq.shape[2:])
        vmf = self.video_decoder.project_mask_features(pix["video_mask_source"])
        vmf = vmf.reshape(b, t, *vmf.shape[1:])
        vid = self.video_decoder(fq, vmf, self.video_group(self.train_group), prompt_input=self.train_group > 0)
        return {"frame": self._frame_outputs(group_out), "video": self._video_outputs(vid)}

    # ------------------------------------------------------------- inference
    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor, groups: Sequence[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """frames (T, 3, H, W) (any device; moved chunk by chunk) in chunks of ``inference.chunk_frames`` ->
        (per group the last layer's normed frame queries (T, Qg, C), video mask features (T, C, h, w))."""
        per_group: list[list[torch.Tensor]] = [[] for _ in groups]
        vmfs = []
        for start in range(0, frames.shape[0], self.chunk_frames):
            pix = self.trunk(frames[start:start + self.chunk_frames].to(self.pixel_mean.device))
            fd = self.frame_decoder(pix["multi_scale_features"], pix["mask_features"], groups=groups)
            for acc, g in zip(per_group, fd["groups"]):
                acc.append(g["queries"][-1])
            vmfs.append(self.video_decoder.project_mask_features(pix["video_mask_source"]))
        return [torch.cat(acc, 0) for acc in per_group], torch.cat(vmfs, 0)

    @torch.no_grad()
    def forward_video(self, frames: torch.Tensor, groups: Sequence[int] | None = None) -> list[dict]:
        """frames: (T, 3, H, W) 0..255 -> [{"pred_logits": (Qv, K+1), "pred_masks": (Qv, T, h, w), "task": k}]
        per group k: every frame, every group alone, each group's clip queries attending to its own frame
        queries over ALL T frames (not only frame 0). Call in eval mode. With ``authors_compat`` set (model config
        ``inference.authors_compat``) the authors' test path instead (hvpl.model.authors_compat)."""
        groups = list(range(self.num_groups)) if groups is None else list(groups)
        frame_queries, vmf = self.encode_frames(frames, groups)
        if authors_compat.applies(self):
            return authors_compat.forward_video_authors(self, frame_queries, vmf, groups)
        results = []
        for k, fq in zip(groups, frame_queries):
            vid = self.video_decoder(fq[None, None], vmf[None], self.video_group(k), prompt_input=k > 0)
            logits = self.video_classifier(vid["queries"][-1, -1, 0])
            results.append({"pred_logits": logits, "pred_masks": vid["masks"][-1, -1, 0], "task": k})
        return results


def without_weight_files(model_cfg: dict) -> dict:
    """A copy of ``model_cfg`` whose backbone loads no pre-trained weight file (weights come from elsewhere)."""
    return dict(model_cfg, backbone=dict(model_cfg["backbone"], weights=None))

