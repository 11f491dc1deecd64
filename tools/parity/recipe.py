"""Seeded weights and inputs that both sides of the parity fixtures regenerate (pure torch, no model imports).

Every tensor is drawn from its own generator, seeded from (seed, name), so a value depends only on the seed,
the project's name of the tensor and its shape, never on construction or iteration order. The fixture tool
maps these tensors to the authors' names to run their model; tests/test_parity_fixtures.py regenerates them
for hvpl. Values are float32 (exact in float64 too).

Rules (by the project's parameter names, hvpl's ``HVPLModel.state_dict()``):
- 1-D ``*.weight`` (LayerNorm / GroupNorm affines): 1 + 0.1 N(0, 1); biases: 0.05 N(0, 1);
- deformable attention: ``sampling_offsets.bias`` 2 N(0, 1) (pixel offsets), ``sampling_offsets.weight`` and
  ``attention_weights.weight`` 0.01 N(0, 1);
- tree scan: ``A_log`` 0.5 N(0, 1), ``D`` 1 + 0.2 N(0, 1), ``dt_proj.bias`` Mamba's inverse-softplus of a
  log-uniform dt in [DT_LOW, DT_HIGH];
- embeddings (queries, positions, prompts, level embeddings): N(0, 1);
- every other matrix / kernel: N(0, 1) / sqrt(fan_in).
Backbone features (the fixtures' inputs): ReLU(N(0, 1)) per level, named ``input.<level>``.
"""
from __future__ import annotations

import math
import re
import zlib

import torch

DT_LOW, DT_HIGH = 1e-3, 1e-1          # Mamba's dt range
NORM_SCALE, BIAS_SCALE, DEFORM_SCALE, OFFSET_BIAS_SCALE = 0.1, 0.05, 0.01, 2.0
A_LOG_SCALE, D_SCALE = 0.5, 0.2
_SEED_MIX = 1_000_003
_EMBEDDINGS = re.compile(r"(query_feat|query_embed|fq_pos|level_embed)(\.weight)?$|prompts\.\d+\.(content|pos|fq_pos)$")


def generator(seed: int, name: str) -> torch.Generator:
    """The generator of tensor ``name``: seeded from (seed, crc32(name))."""
    return torch.Generator().manual_seed((seed * _SEED_MIX + zlib.crc32(name.encode())) % (2 ** 63))


def tensor(seed: int, name: str, shape) -> torch.Tensor:
    """The recipe's value of parameter ``name`` (project naming) with ``shape``, float32."""
    shape = tuple(int(s) for s in shape)
    g = generator(seed, name)
    n = torch.randn(shape, generator=g, dtype=torch.float32)
    if name.endswith("dt_proj.bias"):
        u = torch.rand(shape, generator=g, dtype=torch.float32)
        dt = torch.exp(u * (math.log(DT_HIGH) - math.log(DT_LOW)) + math.log(DT_LOW))
        return dt + torch.log(-torch.expm1(-dt))
    if name.endswith("sampling_offsets.bias"):
        return OFFSET_BIAS_SCALE * n
    if name.endswith(("sampling_offsets.weight", "attention_weights.weight")):
        return DEFORM_SCALE * n
    if name.endswith("A_log"):
        return A_LOG_SCALE * n
    if name.endswith(".D"):
        return 1.0 + D_SCALE * n
    if _EMBEDDINGS.search(name):
        return n
    if len(shape) == 1:
        return 1.0 + NORM_SCALE * n if name.endswith("weight") else BIAS_SCALE * n
    fan_in = math.prod(shape[1:])
    return n / math.sqrt(fan_in)


def state_dict(seed: int, shapes: dict, skip=("backbone.",)) -> dict:
    """{name: tensor} for every (name, shape) of ``shapes`` whose name does not start with ``skip``."""
    return {k: tensor(seed, k, s) for k, s in shapes.items() if not k.startswith(tuple(skip))}


def features(seed: int, channels, num_frames: int, padded: tuple, strides=(4, 8, 16, 32)) -> dict:
    """Backbone features {"res2".."res5": (T, C_l, H/s, W/s)} of a padded input size (H, W), float32."""
    out = {}
    for level, (c, s) in enumerate(zip(channels, strides)):
        name = f"res{level + 2}"
        shape = (num_frames, int(c), padded[0] // s, padded[1] // s)
        out[name] = torch.relu(torch.randn(shape, generator=generator(seed, "input." + name), dtype=torch.float32))
    return out
