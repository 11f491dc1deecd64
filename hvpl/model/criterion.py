"""Frame and video set criteria (method.md Section 4).

For every output level (final + aux) the predictions are Hungarian-matched to the targets and scored with
- softmax cross-entropy over K+1 classes, unmatched queries labelled no-object, the no-object class weighted by
  ``no_object_weight`` (weighted mean, as ``F.cross_entropy`` with class weights);
- sigmoid BCE and dice on ``num_points`` importance-sampled points per mask (per frame of a track at video level,
  a track's points over all its frames forming one BCE mean and one dice), summed over matched pairs and divided
  by the number of GT instances of the call's targets (never averaged over processes: see count_instances).
All output levels of a part are matched and scored in one batched computation (``_output_losses``).
The video level adds the similarity loss on the final outputs. Terms are returned already weighted by the
config weights, keyed ``{frame,video}_loss_{ce,mask,dice}[_aux{i}]`` and ``video_loss_sim``; the total loss is
the sum of the values.

Targets are the clip dicts of DESIGN.md (``labels`` (N,), ``masks`` (N, T, H, W), ``present`` (N, T)):
video targets = instances present in at least one frame, frame targets = instances present in that frame.
Targets are zero-padded to the extent the predictions cover (``MASK_STRIDE`` x the prediction size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hvpl.model.matcher import HungarianMatcher
from hvpl.model.pixel_decoder import MASK_STRIDE
from hvpl.model.point_sampling import pad_to, point_sample, uncertain_point_coords
from hvpl.utils.errors import HVPLError

REQUIRED_KEYS = ("class_weight", "mask_weight", "dice_weight", "sim_weight", "no_object_weight", "num_points",
                 "oversample_ratio", "importance_sample_ratio")


def split_targets(targets: list[dict], height: int, width: int, device: torch.device,
                  dtype: torch.dtype = torch.bool) -> tuple[list[dict], list[dict]]:
    """Clip targets -> (frame targets, video targets), masks zero-padded to (height, width).

    Returns B*T frame dicts (index b*T + t) with ``labels`` (n,), ``masks`` (n, height, width) of ``dtype`` (0/1)
    and ``ids`` (n,) = the instance's row in the clip, and B video dicts with ``labels``, ``masks``
    (n, T, height, width), ``ids``. The criterion asks for float32 masks: converted once per clip instead of once
    per output level in matching and point sampling (the values are the same 0/1).
    """
    frame_targets, video_targets = [], []
    for clip in targets:
        labels = clip["labels"].to(device)
        masks = pad_to(clip["masks"].to(device).bool(), height, width).to(dtype)  # (N, T, height, width)
        present = clip["present"].to(device).bool()
        ids = torch.arange(labels.shape[0], device=device)
        keep = present.any(1)
        video_targets.append({"labels": labels[keep], "masks": masks[keep], "ids": ids[keep]})
        for t in range(present.shape[1]):
            sel = present[:, t]
            frame_targets.append({"labels": labels[sel], "masks": masks[sel, t], "ids": ids[sel]})
    return frame_targets, video_targets


def count_instances(targets: list[dict]) -> float:
    """Number of GT instances of ``targets``, at least 1. Deliberately not averaged over processes: the trainer
    calls the criterion per clip, so every clip is normalised by its own count whatever the process count."""
    return max(float(sum(int(t["labels"].numel()) for t in targets)), 1.0)


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat along dim 0 without the copy when there is one tensor (the criterion runs per clip)."""
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def sigmoid_bce_per_mask(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits, labels: (M, P) -> (M,) mean sigmoid BCE over the points of each mask."""
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)


def dice_per_mask(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits, labels: (M, P) -> (M,) 1 - soft dice (smoothed by 1) of each mask."""
    probs = logits.sigmoid()
    numerator = 2.0 * (probs * labels).sum(1)
    denominator = probs.sum(1) + labels.sum(1)
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


def matched_pairs(indices: list[list], targets: list[dict], device: torch.device) -> tuple[torch.Tensor, ...]:
    """L levels x B matchings -> LongTensors (M,) on ``device``: (level, batch element, query, target row),
    the target row counting over the targets of every batch element concatenated."""
    offsets = [0]
    for tgt in targets[:-1]:
        offsets.append(offsets[-1] + int(tgt["labels"].numel()))
    level, batch, query, row = [], [], [], []
    for lvl, per_level in enumerate(indices):
        for b, (q_idx, t_idx) in enumerate(per_level):
            n = int(q_idx.numel())
            level += [lvl] * n
            batch += [b] * n
            query += q_idx.tolist()
            row += [offsets[b] + t for t in t_idx.tolist()]
    return tuple(torch.tensor(x, dtype=torch.long, device=device) for x in (level, batch, query, row))


class SetCriterion(nn.Module):
    """Frame + video criteria.

    Args: ``loss_cfg`` = ``model_cfg["loss"]`` (weights, no-object weight, point sampling sizes),
    ``num_classes`` = K, the number of classes seen so far (logits have K+1 entries).
    """

    def __init__(self, loss_cfg: dict, num_classes: int):
        super().__init__()
        missing = [k for k in REQUIRED_KEYS if k not in loss_cfg]
        if missing:
            raise HVPLError(f"model config: loss: missing key(s) {', '.join(missing)}")
        self.cfg = dict(loss_cfg)
        self.num_classes = num_classes
        self.matcher = HungarianMatcher(loss_cfg["class_weight"], loss_cfg["mask_weight"], loss_cfg["dice_weight"],
                                        int(loss_cfg["num_points"]))
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = loss_cfg["no_object_weight"]
        self.register_buffer("empty_weight", empty_weight, persistent=False)

    def forward(self, outputs: dict, targets: list[dict], generator: torch.Generator | None = None
                ) -> dict[str, torch.Tensor]:
        """outputs: the training output dict of HVPLModel (``frame`` and/or ``video`` parts, DESIGN.md);
        targets: B clip dicts. Returns {name: weighted scalar loss}."""
        ref = outputs["frame"] if "frame" in outputs else outputs["video"]
        h, w = ref["pred_masks"].shape[-2:]
        device = ref["pred_masks"].device
        frame_targets, video_targets = split_targets(targets, h * MASK_STRIDE, w * MASK_STRIDE, device,
                                                       torch.float32)
        losses: dict[str, torch.Tensor] = {}
        frame_idx = video_idx = None
        if "frame" in outputs:
            frame_idx = self._output_losses(outputs["frame"], frame_targets, "frame", losses, generator)
        if "video" in outputs:
            video = outputs["video"]
            layers = int(video.get("frame_layers", 1))
            video_idx = self._output_losses(video, video_targets, "video", losses, generator, 1.0 / layers)
            if frame_idx is not None and "pred_fq_embed" in video and "pred_cq_embed" in video:
                # the L frame layers fed to the video decoder are the last L frame levels; the final clip layer's
                # L levels are the last L video levels ((clip layer, frame layer) order)
                fq, cq = video["pred_fq_embed"], video["pred_cq_embed"]   # (B, L, T, Qf, C), (B, L, Qv, C)
                fq, cq = (fq[None], cq[None]) if fq.dim() == 4 else (fq.transpose(0, 1), cq.transpose(0, 1))
                sim = similarity_loss(fq, cq, frame_idx[-layers:], frame_targets, video_idx[-layers:], video_targets)
                losses["video_loss_sim"] = self.cfg["sim_weight"] * sim
        return losses

    def _output_losses(self, out: dict, targets: list[dict], prefix: str, losses: dict,
                       generator: torch.Generator | None, scale: float = 1.0) -> list:
        """Add the weighted terms (times ``scale``) of the final and aux outputs of one level; return the
        matchings of every output in network order (aux 0, aux 1, ..., final).

        All output levels are matched and scored at once (stacked along a leading level dim): the per-level
        values are the same functions as level by level, only the random points are drawn once per batch
        element for matching (shared by its levels) and once for all matched masks for the mask losses.
        ``scale`` = 1/L at video level: the authors' video term of a clip-decoder layer is the mean over the L
        frame layers it decodes (VitaSetCriterion pools L x B; its instance count is N x L).
        """
        levels = [out] + list(out.get("aux_outputs", []))
        logits = torch.stack([lv["pred_logits"] for lv in levels])  # (L, B, Q, K+1)
        masks = torch.stack([lv["pred_masks"] for lv in levels])  # (L, B, Q, [T,] h, w)
        if logits.shape[-1] != self.num_classes + 1:
            raise ValueError(f"pred_logits has {logits.shape[-1]} classes, the criterion expects "
                             f"{self.num_classes} + 1 (no-object)")
        num_masks = count_instances(targets)
        indices = self.matcher.match_levels(logits.detach(), masks.detach(), targets, generator)
        matched = matched_pairs(indices, targets, masks.device)
        terms = {"loss_ce": self.cfg["class_weight"] * self.class_loss_levels(logits, targets, matched),
                 **self.mask_losses_levels(masks, targets, matched, num_masks, generator)}
        suffixes = [""] + [f"_aux{i}" for i in range(len(levels) - 1)]
        for name, values in terms.items():
            for suffix, value in zip(suffixes, (values * scale if scale != 1.0 else values).unbind(0)):
                losses[f"{prefix}_{name}{suffix}"] = value
        return indices[1:] + indices[:1]

    def class_loss_levels(self, logits: torch.Tensor, targets: list[dict], matched: tuple) -> torch.Tensor:
        """logits (L, B, Q, K+1), ``matched`` from :func:`matched_pairs` -> (L,) unweighted class losses: per level
        the softmax CE over its B x Q queries, unmatched ones labelled no-object (index K), averaged with the
        class weights (as ``F.cross_entropy`` with ``weight``)."""
        level, batch, query, row = matched
        target_classes = torch.full(logits.shape[:3], self.num_classes, dtype=torch.long, device=logits.device)
        if level.numel():
            labels = _cat([t["labels"] for t in targets]).to(logits.device)
            target_classes[level, batch, query] = labels[row]
        weight = self.empty_weight.to(device=logits.device, dtype=torch.float32)
        n_levels = logits.shape[0]
        ce = F.cross_entropy(logits.float().flatten(0, 2), target_classes.flatten(), weight, reduction="none")
        return ce.view(n_levels, -1).sum(1) / weight[target_classes].view(n_levels, -1).sum(1)

    def mask_losses_levels(self, masks: torch.Tensor, targets: list[dict], matched: tuple, num_masks: float,
                           generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Weighted point-sampled BCE and dice of the matched masks of L levels -> {name: (L,)}.

        masks: (L, B, Q, h, w) or (L, B, Q, T, h, w); target masks padded to (MASK_STRIDE*h, MASK_STRIDE*w).
        Per level: the per-mask losses summed over its matched masks and divided by ``num_masks``.
        """
        level, batch, query, row = matched
        n_levels = masks.shape[0]
        if level.numel() == 0:
            zero = (masks.sum() * 0.0).expand(n_levels)  # keeps the graph connected (DDP) when nothing is matched
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        src = masks[level, batch, query]  # (M, [T,] h, w)
        tgt = _cat([t["masks"] for t in targets]).to(masks.device)[row]
        if masks.dim() == 5:
            src, tgt = src.unsqueeze(1), tgt.unsqueeze(1)
        m = src.shape[0]
        src_flat = src.flatten(0, 1).unsqueeze(1).float()  # (M*T, 1, h, w)
        tgt_flat = tgt.flatten(0, 1).unsqueeze(1).float()  # (M*T, 1, H', W')
        coords = uncertain_point_coords(src_flat, int(self.cfg["num_points"]), float(self.cfg["oversample_ratio"]),
                                        float(self.cfg["importance_sample_ratio"]), generator)
        with torch.no_grad():
            labels = point_sample(tgt_flat, coords).reshape(m, -1)
        point_logits = point_sample(src_flat, coords).reshape(m, -1)
        per_mask = torch.stack([sigmoid_bce_per_mask(point_logits, labels), dice_per_mask(point_logits, labels)], 1)
        per_level = per_mask.new_zeros(n_levels, 2).index_add(0, level, per_mask) / num_masks
        return {"loss_mask": self.cfg["mask_weight"] * per_level[:, 0],
                "loss_dice": self.cfg["dice_weight"] * per_level[:, 1]}


def similarity_loss(fq_embed: torch.Tensor, cq_embed: torch.Tensor, frame_indices: list, frame_targets: list,
                    clip_indices: list, clip_targets: list) -> torch.Tensor:
    """Similarity loss between matched frame-query and clip-query embeddings (unweighted).

    fq_embed: (L, B, T, Qf, C) (or (B, T, Qf, C): L = 1); cq_embed: (L, B, Qv, C) (or (B, Qv, C));
    frame_indices: L lists of B*T matchings (frame b*T + t) of the L frame layers the video decoder read (or one
    list when L = 1); clip_indices: L lists of B matchings of the final clip layer on each frame layer;
    targets carry ``ids`` (the instance's row in its clip).
    Per (frame layer, clip): the matched embeddings E (M, C) with instance ids, logits E E^T, target 1 where the
    ids agree; BCE averaged over all (ordered) pairs from the same (layer, clip), pooled over layers and clips
    (as the authors' VitaSetCriterion.loss_fg_sim). Scalar.
    """
    if fq_embed.dim() == 4:
        fq_embed, cq_embed, frame_indices, clip_indices = fq_embed[None], cq_embed[None], [frame_indices], [clip_indices]
    pair_losses = []
    for lyr in range(fq_embed.shape[0]):
        pair_losses += _similarity_pairs(fq_embed[lyr], cq_embed[lyr], frame_indices[lyr], frame_targets,
                                         clip_indices[lyr], clip_targets)
    if not pair_losses:
        return fq_embed.sum() * 0.0 + cq_embed.sum() * 0.0
    return torch.cat(pair_losses).mean()


def _similarity_pairs(fq_embed: torch.Tensor, cq_embed: torch.Tensor, frame_indices: list, frame_targets: list,
                      clip_indices: list, clip_targets: list) -> list[torch.Tensor]:
    """One frame layer: fq_embed (B, T, Qf, C), cq_embed (B, Qv, C) -> per clip the flattened pair BCEs."""
    b_size, t_size = fq_embed.shape[:2]
    pair_losses = []
    for b in range(b_size):
        embeds, ids = [], []
        for t in range(t_size):
            q_idx, t_idx = frame_indices[b * t_size + t]
            embeds.append(fq_embed[b, t][q_idx.to(fq_embed.device)])
            ids.append(frame_targets[b * t_size + t]["ids"][t_idx.to(fq_embed.device)])
        q_idx, t_idx = clip_indices[b]
        embeds.append(cq_embed[b][q_idx.to(cq_embed.device)])
        ids.append(clip_targets[b]["ids"][t_idx.to(cq_embed.device)])
        emb = torch.cat(embeds).float()
        if emb.shape[0] == 0:
            continue
        inst = torch.cat(ids)
        logits = emb @ emb.T
        target = (inst[:, None] == inst[None, :]).float()
        pair_losses.append(F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten())
    return pair_losses
