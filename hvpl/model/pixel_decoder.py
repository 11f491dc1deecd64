"""Mask2Former-style pixel decoder: a deformable-attention encoder over strides 8/16/32, then an FPN
step up to stride 4 (method.md Section 1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hvpl.model.backbone import STAGES, STRIDES
from hvpl.model.ms_deform_attn import MSDeformAttn
from hvpl.model.position_encoding import PositionEmbeddingSine

ENCODER_LEVELS = ("res5", "res4", "res3")   # strides 32, 16, 8 (the order of multi_scale_features)
FPN_LEVEL = "res2"                          # stride 4
# Input pixels per pixel of the mask features (the FPN level): masks are predicted at this stride.
MASK_STRIDE = STRIDES[STAGES.index(FPN_LEVEL)]


def _c2_xavier_fill(module: nn.Module) -> None:
    """detectron2's conv init: kaiming_uniform with a=1, zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class DeformEncoderLayer(nn.Module):
    """Post-norm layer: src = LN(src + MSDeformAttn(src + pos)); src = LN(src + FFN(src))."""

    def __init__(self, dim: int, ffn_dim: int, n_levels: int, n_heads: int, n_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index):
        """src, pos: (N, S, C); reference_points: (N, S, L, 2). Returns (N, S, C)."""
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


def reference_points(spatial_shapes: torch.Tensor, n_levels: int, batch: int, device, dtype) -> torch.Tensor:
    """Pixel centres of every level, normalised to [0, 1] as (x, y): (N, S, L, 2) (unpadded inputs)."""
    refs = []
    for h, w in spatial_shapes.tolist():
        ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack((gx.reshape(-1), gy.reshape(-1)), -1))
    ref = torch.cat(refs, 0)
    return ref[None, :, None, :].expand(batch, -1, n_levels, -1)


class PixelDecoder(nn.Module):
    """forward(features: {"res2": (N, C2, H/4, W/4), ..., "res5": (N, C5, H/32, W/32)}) ->
    {"mask_features": (N, C, H/4, W/4), "video_mask_source": (N, C, H/4, W/4),
     "multi_scale_features": [(N, C, H/32, W/32), (N, C, H/16, W/16), (N, C, H/8, W/8)]}, C = hidden_dim.
    """

    def __init__(self, model_cfg: dict, in_channels: dict):
        super().__init__()
        cfg = model_cfg["pixel_decoder"]
        dim, groups = int(model_cfg["hidden_dim"]), int(cfg["norm_groups"])
        self.n_levels = len(ENCODER_LEVELS)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels[name], dim, 1), nn.GroupNorm(groups, dim)) for name in ENCODER_LEVELS)
        self.pe_layer = PositionEmbeddingSine(dim // 2, normalize=True)
        self.level_embed = nn.Parameter(torch.empty(self.n_levels, dim))
        self.layers = nn.ModuleList(
            DeformEncoderLayer(dim, int(cfg["ffn_dim"]), self.n_levels, int(cfg["num_heads"]), int(cfg["num_points"]))
            for _ in range(int(cfg["num_layers"])))
        self.lateral_conv = nn.Sequential(nn.Conv2d(in_channels[FPN_LEVEL], dim, 1, bias=False),
                                          nn.GroupNorm(groups, dim))
        self.output_conv = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False),
                                         nn.GroupNorm(groups, dim), nn.ReLU(inplace=True))
        self.mask_features = nn.Conv2d(dim, dim, 1)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for layer in self.layers:
            for lin in (layer.linear1, layer.linear2):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        nn.init.normal_(self.level_embed)
        for conv in (self.lateral_conv[0], self.output_conv[0], self.mask_features):
            _c2_xavier_fill(conv)

    def encode(self, features: dict) -> list:
        """Deformable encoder over ENCODER_LEVELS -> list of (N, C, h_l, w_l), strides 32, 16, 8."""
        srcs, poss, shapes = [], [], []
        for lvl, name in enumerate(ENCODER_LEVELS):
            x = self.input_proj[lvl](features[name])
            shapes.append(x.shape[-2:])
            poss.append(self.pe_layer(x).flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
            srcs.append(x.flatten(2).transpose(1, 2))
        src, pos = torch.cat(srcs, 1), torch.cat(poss, 1)
        spatial_shapes = torch.as_tensor([tuple(s) for s in shapes], dtype=torch.long, device=src.device)
        sizes = spatial_shapes.prod(1)
        level_start = torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))
        refs = reference_points(spatial_shapes, self.n_levels, src.shape[0], src.device, src.dtype)
        for layer in self.layers:
            src = layer(src, pos, refs, spatial_shapes, level_start)
        maps = src.split(sizes.tolist(), dim=1)
        return [m.transpose(1, 2).reshape(src.shape[0], -1, h, w) for m, (h, w) in zip(maps, shapes)]

    def forward(self, features: dict) -> dict:
        multi_scale = self.encode(features)
        fine = features[FPN_LEVEL]
        y = self.lateral_conv(fine) + F.interpolate(multi_scale[-1], size=fine.shape[-2:], mode="bilinear",
                                                    align_corners=False)
        y = self.output_conv(y)
        return {"mask_features": self.mask_features(y), "video_mask_source": y, "multi_scale_features": multi_scale}
