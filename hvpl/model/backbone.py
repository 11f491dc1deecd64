"""Backbones: ResNet-50 with detectron2 parameter names and FrozenBatchNorm (paper size), and a tiny
GroupNorm conv net (CPU size). Both return {"res2": stride 4, "res3": 8, "res4": 16, "res5": 32}."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hvpl.utils.errors import HVPLError
from hvpl.utils.logging import log
from hvpl.utils.safe_load import load_array_pickle, load_torch_file

STAGES = ("res2", "res3", "res4", "res5")
STRIDES = (4, 8, 16, 32)
RESNET50_BLOCKS = (3, 4, 6, 3)
BOTTLENECK_RATIO = 4          # bottleneck width = stage out channels / 4
BN_EPS = 1e-5
STRIDE_KEY = "stride_in_1x1"   # ResNet50 buffer: the stride placement of its weights


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine parameters, all stored as buffers (detectron2 names)."""

    def __init__(self, num_features: int, eps: float = BN_EPS):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> (N, C, H, W)."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


class ConvNorm(nn.Conv2d):
    """detectron2-style Conv2d with a ``.norm`` submodule (names: conv.weight, conv.norm.*)."""

    def __init__(self, *args, norm: nn.Module, **kwargs):
        super().__init__(*args, bias=False, **kwargs)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, H, W) -> (N, C_out, H / stride, W / stride)."""
        return self.norm(super().forward(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block; the stride sits in conv1 (stride_in_1x1) or conv2."""

    def __init__(self, cin: int, cout: int, width: int, stride: int, stride_in_1x1: bool):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNorm(cin, width, 1, stride=s1, norm=FrozenBatchNorm2d(width))
        self.conv2 = ConvNorm(width, width, 3, stride=s3, padding=1, norm=FrozenBatchNorm2d(width))
        self.conv3 = ConvNorm(width, cout, 1, norm=FrozenBatchNorm2d(cout))
        self.shortcut = (ConvNorm(cin, cout, 1, stride=stride, norm=FrozenBatchNorm2d(cout))
                         if cin != cout or stride != 1 else None)

    def set_stride_in_1x1(self, flag: bool) -> None:
        stride = max(self.conv1.stride[0], self.conv2.stride[0])
        self.conv1.stride = (stride, stride) if flag else (1, 1)
        self.conv2.stride = (1, 1) if flag else (stride, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, cin, H, W) -> (N, cout, H / stride, W / stride)."""
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        return F.relu_(out + (x if self.shortcut is None else self.shortcut(x)))


class BasicStem(nn.Module):
    """7x7 stride-2 conv + FrozenBN + ReLU + 3x3 stride-2 max pool (stride 4)."""

    def __init__(self, cout: int):
        super().__init__()
        self.conv1 = ConvNorm(3, cout, 7, stride=2, padding=3, norm=FrozenBatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, H, W) -> (N, C, H/4, W/4) (stride-2 conv, then stride-2 max pool)."""
        return F.max_pool2d(F.relu_(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class _Backbone(nn.Module):
    """Shared freezing + output bookkeeping. Subclasses define ``stem`` and ``res2``..``res5``."""

    out_channels: dict
    out_strides: dict

    def freeze(self, freeze_at: int) -> None:
        """detectron2 semantics: 0 = nothing, 1 = stem, k >= 2 = stem and res2..res{k}."""
        frozen = (["stem"] + list(STAGES))[:freeze_at]
        for name in frozen:
            for p in getattr(self, name).parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict:
        """x: (N, 3, H, W), already normalised -> {"res2": (N, C2, H/4, W/4), ..., "res5": (N, C5, H/32, W/32)}."""
        x = self.stem(x)
        out = {}
        for name in STAGES:
            x = getattr(self, name)(x)
            out[name] = x
        return out


class ResNet50(_Backbone):
    """ResNet-50, FrozenBatchNorm2d everywhere, detectron2 parameter names.

    Where the stride of a downsampling block sits (1x1 conv: detectron2's MSRA weights; 3x3 conv: torchvision
    and VITA/Mask2Former weights) belongs to the weights, so it is kept in the state dict as the buffer
    ``stride_in_1x1``: a model rebuilt from a checkpoint gets the placement its weights were trained with,
    whatever its config says. State dicts without the entry (weight files) keep the built placement.
    """

    def __init__(self, channels: list, stride_in_1x1: bool = True):
        super().__init__()
        self.register_buffer(STRIDE_KEY, torch.tensor(int(bool(stride_in_1x1)), dtype=torch.uint8))
        self.stem = BasicStem(channels[0] // BOTTLENECK_RATIO)
        cin = channels[0] // BOTTLENECK_RATIO
        for i, (name, cout, blocks) in enumerate(zip(STAGES, channels, RESNET50_BLOCKS)):
            first_stride = 1 if i == 0 else 2
            layers = [Bottleneck(cin if b == 0 else cout, cout, cout // BOTTLENECK_RATIO,
                                 first_stride if b == 0 else 1, stride_in_1x1) for b in range(blocks)]
            self.add_module(name, nn.Sequential(*layers))
            cin = cout
        self.out_channels = dict(zip(STAGES, channels))
        self.out_strides = dict(zip(STAGES, STRIDES))

    def set_stride_in_1x1(self, flag: bool) -> None:
        getattr(self, STRIDE_KEY).fill_(bool(flag))
        for name in STAGES:
            for block in getattr(self, name):
                block.set_stride_in_1x1(flag)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + STRIDE_KEY
        if key not in state_dict:
            state_dict[key] = getattr(self, STRIDE_KEY).clone()
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        self.set_stride_in_1x1(bool(getattr(self, STRIDE_KEY)))


def _conv_gn_relu(cin: int, cout: int, stride: int, groups: int) -> list:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(groups, cout),
            nn.ReLU(inplace=True)]


class TinyBackbone(_Backbone):
    """Stride-2 stem conv, then 4 stages (stride-2 conv + conv, GroupNorm + ReLU): strides 4, 8, 16, 32."""

    def __init__(self, channels: list, norm_groups: int):
        super().__init__()
        self.stem = nn.Sequential(*_conv_gn_relu(3, channels[0], 2, norm_groups))
        cin = channels[0]
        for name, cout in zip(STAGES, channels):
            self.add_module(name, nn.Sequential(*_conv_gn_relu(cin, cout, 2, norm_groups),
                                                *_conv_gn_relu(cout, cout, 1, norm_groups)))
            cin = cout
        self.out_channels = dict(zip(STAGES, channels))
        self.out_strides = dict(zip(STAGES, STRIDES))


def build_backbone(model_cfg: dict) -> nn.Module:
    """model_cfg["backbone"]: {"type": "resnet50" | "tiny", "channels": [4 ints], "norm_groups",
    "freeze_at", optional "stride_in_1x1" (resnet50, default True = detectron2's MSRA default),
    "weights": optional path loaded with ``load_backbone_weights``}."""
    cfg = model_cfg["backbone"]
    kind = cfg.get("type")
    channels = [int(c) for c in cfg["channels"]]
    if len(channels) != len(STAGES):
        raise HVPLError(f"model config: backbone.channels must list {len(STAGES)} values, got {channels}")
    if kind == "resnet50":
        net = ResNet50(channels, bool(cfg.get("stride_in_1x1", True)))
    elif kind == "tiny":
        net = TinyBackbone(channels, int(cfg["norm_groups"]))
    else:
        raise HVPLError(f"model config: backbone.type {kind!r} is not one of 'resnet50', 'tiny'")
    if cfg.get("weights"):
        load_backbone_weights(net, cfg["weights"])
    net.freeze(int(cfg.get("freeze_at", 0)))
    return net


# ---------------------------------------------------------------------------------------------- weights
_TV_IGNORED = re.compile(r"(^fc\.|num_batches_tracked$)")


def torchvision_to_detectron2(name: str) -> str | None:
    """Map a torchvision ResNet state-dict key to its detectron2 name (None if it has no counterpart)."""
    m = re.match(r"^layer(\d)\.(\d+)\.(.*)$", name)
    if m:
        stage = f"res{int(m.group(1)) + 1}.{m.group(2)}"
        rest = m.group(3)
        rest = re.sub(r"^conv(\d)\.weight$", r"conv\1.weight", rest)
        rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
        rest = re.sub(r"^downsample\.0\.", "shortcut.", rest)
        rest = re.sub(r"^downsample\.1\.", "shortcut.norm.", rest)
        return f"{stage}.{rest}"
    if name == "conv1.weight":
        return "stem.conv1.weight"
    m = re.match(r"^bn1\.(.*)$", name)
    return f"stem.conv1.norm.{m.group(1)}" if m else None


def read_weight_file(path: Path, what: str = "backbone weights") -> object:
    """A detectron2 ``.pkl`` pickle or a ``torch.save`` file, as stored (arrays and plain data only: nothing in
    the file can run code); HVPLError naming ``path`` if unreadable or refused."""
    if not path.is_file():
        raise HVPLError(f"{path}: {what} file not found")
    if path.suffix == ".pkl":
        return load_array_pickle(path, what)
    return load_torch_file(path, what, numpy=True)


def weight_tensor(value, path: Path, key: str) -> torch.Tensor:
    """A stored array (torch tensor or numpy array) as a CPU tensor; HVPLError naming the entry otherwise."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, order="C"))   # a copy; keeps 0-d arrays 0-d
    raise HVPLError(f"{path}: entry {key!r} is a {type(value).__name__}, not an array")


def _detect_format(keys: set) -> str | None:
    if "stem.conv1.weight" in keys:
        return "detectron2"
    if "conv1.weight" in keys and any(k.startswith("layer1.") for k in keys):
        return "torchvision"
    return None


def load_backbone_weights(backbone: nn.Module, path) -> dict:
    """Load detectron2 (.pkl {"model": {name: array}} or plain dict, names possibly prefixed "backbone.")
    or torchvision (.pth state dict) ResNet weights. torchvision weights (and d2 pickles converted from
    torchvision, "__author__": "torchvision") put the stride in the 3x3 conv, so it is moved there.

    Returns {"format", "loaded": int, "missing": [names], "unexpected": [names]}; prints a summary.
    """
    path = Path(path)
    data = read_weight_file(path)
    author = data.get("__author__") if isinstance(data, dict) else None
    for wrapper in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(wrapper), dict):
            data = data[wrapper]
    if not isinstance(data, dict):
        raise HVPLError(f"{path}: expected a dict of arrays (detectron2 .pkl or torchvision .pth state dict)")
    if any(str(k).startswith("backbone.") for k in data):
        data = {k[len("backbone."):]: v for k, v in data.items() if str(k).startswith("backbone.")}
    fmt = _detect_format(set(data))
    if fmt is None:
        raise HVPLError(f"{path}: neither detectron2 (stem.conv1.weight) nor torchvision (conv1.weight, "
                        f"layer1.*) ResNet names; first keys: {sorted(map(str, data))[:5]}")
    if fmt == "torchvision":
        data = {(torchvision_to_detectron2(k) or k): v for k, v in data.items() if not _TV_IGNORED.search(k)}
    if (fmt == "torchvision" or author == "torchvision") and hasattr(backbone, "set_stride_in_1x1"):
        backbone.set_stride_in_1x1(False)
    own = backbone.state_dict()
    loaded, unexpected = {}, []
    for key, value in data.items():
        if key not in own:
            unexpected.append(key)
            continue
        tensor = weight_tensor(value, path, key)
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise HVPLError(f"{path}: entry {key!r} has shape {tuple(tensor.shape)}, "
                            f"the model expects {tuple(own[key].shape)}")
        loaded[key] = tensor.to(own[key].dtype)
    missing = sorted(set(own) - set(loaded) - {STRIDE_KEY})
    backbone.load_state_dict(loaded, strict=False)
    log(f"backbone weights {path} ({fmt}): loaded {len(loaded)}, missing {len(missing)}, "
        f"unexpected {len(unexpected)}")
    return {"format": fmt, "loaded": len(loaded), "missing": missing, "unexpected": sorted(map(str, unexpected))}
