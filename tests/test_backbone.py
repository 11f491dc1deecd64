"""Tests for hvpl.model.backbone: shapes, freezing, detectron2/torchvision weight loading."""
import pickle

import pytest
import torch

from hvpl.model.backbone import STRIDE_KEY, FrozenBatchNorm2d, build_backbone, load_backbone_weights
from hvpl.utils.errors import HVPLError

torch.set_num_threads(1)
TINY = {"backbone": {"type": "tiny", "channels": [8, 16, 24, 32], "norm_groups": 4, "weights": None,
                     "freeze_at": 0}}
R50 = {"backbone": {"type": "resnet50", "channels": [256, 512, 1024, 2048], "norm_groups": 32,
                    "weights": None, "freeze_at": 1}}


def _randomise(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.05)
    return model


def _to_torchvision(d2_state):
    """Independent renaming of detectron2 keys to torchvision ones (+ keys torchvision also has)."""
    out = {}
    for k, v in d2_state.items():
        if k == STRIDE_KEY:
            continue
        parts = k.split(".")
        if parts[0] == "stem":
            name = "conv1.weight" if parts[-1] == "weight" and parts[2] == "weight" else "bn1." + parts[-1]
        else:
            layer = f"layer{int(parts[0][3]) - 1}.{parts[1]}"
            if parts[2] == "shortcut":
                name = f"{layer}.downsample.0.weight" if parts[3] == "weight" else f"{layer}.downsample.1.{parts[-1]}"
            elif parts[3] == "weight":
                name = f"{layer}.{parts[2]}.weight"
            else:
                name = f"{layer}.bn{parts[2][-1]}.{parts[-1]}"
        out[name] = v.clone()
    out["bn1.num_batches_tracked"] = torch.tensor(3)
    out["fc.weight"] = torch.zeros(10, 2048)
    out["fc.bias"] = torch.zeros(10)
    return out


def test_tiny_shapes_and_strides():
    net = build_backbone(TINY)
    out = net(torch.randn(2, 3, 64, 96))
    for (name, c), s in zip(net.out_channels.items(), (4, 8, 16, 32)):
        assert out[name].shape == (2, c, 64 // s, 96 // s)
        assert net.out_strides[name] == s


def test_frozen_batchnorm_matches_eval_batchnorm():
    bn = torch.nn.BatchNorm2d(5).eval()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    fbn = FrozenBatchNorm2d(5)
    for k in ("weight", "bias", "running_mean", "running_var"):
        getattr(fbn, k).copy_(getattr(bn, k))
    x = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(fbn(x), bn(x))
    assert not list(fbn.parameters())


@pytest.fixture(scope="module")
def r50():
    return _randomise(build_backbone(R50)).eval()


def test_resnet50_names_shapes_and_freezing(r50):
    names = set(r50.state_dict())
    for key in ("stem.conv1.weight", "stem.conv1.norm.running_var", "res2.0.shortcut.norm.bias",
                "res2.0.conv1.weight", "res3.3.conv3.norm.weight", "res5.2.conv2.weight"):
        assert key in names
    assert "res5.3.conv1.weight" not in names and "res3.1.shortcut.weight" not in names
    assert sum(p.numel() for p in r50.parameters()) == 23454912   # torchvision resnet50 convs, no BN/fc
    assert not r50.stem.conv1.weight.requires_grad and r50.res2[0].conv1.weight.requires_grad
    assert r50.res3[0].conv1.stride == (2, 2) and r50.res3[0].conv2.stride == (1, 1)   # MSRA default
    with torch.no_grad():
        out = r50(torch.randn(1, 3, 64, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "res2": (1, 256, 16, 16), "res3": (1, 512, 8, 8), "res4": (1, 1024, 4, 4), "res5": (1, 2048, 2, 2)}


def test_load_detectron2_pickle(r50, tmp_path):
    state = r50.state_dict()
    path = tmp_path / "r50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"backbone." + k: v.numpy() for k, v in state.items()},
                     "__author__": "MSRA"}, f)
    fresh = build_backbone(R50)
    info = load_backbone_weights(fresh, path)
    assert info["format"] == "detectron2" and not info["missing"] and not info["unexpected"]
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, state[k]), k
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x)["res5"], r50(x)["res5"])


def test_load_torchvision_state_dict_moves_stride(r50, tmp_path):
    state = r50.state_dict()
    path = tmp_path / "r50.pth"
    torch.save(_to_torchvision(state), path)
    fresh = build_backbone(R50)
    info = load_backbone_weights(fresh, path)
    assert info["format"] == "torchvision" and not info["missing"] and not info["unexpected"]
    assert info["loaded"] == len(state) - 1   # every weight; the stride placement is not in the file
    for k, v in fresh.state_dict().items():
        assert k == STRIDE_KEY or torch.equal(v, state[k]), k
    assert fresh.res3[0].conv1.stride == (1, 1) and fresh.res3[0].conv2.stride == (2, 2)
    assert int(fresh.state_dict()[STRIDE_KEY]) == 0
    r50.set_stride_in_1x1(False)
    try:
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(fresh.eval()(x)["res4"], r50(x)["res4"])
    finally:
        r50.set_stride_in_1x1(True)


def test_stride_placement_travels_with_the_state_dict(r50):
    """A ResNet rebuilt from a state dict takes the stride placement its weights had, not its config's."""
    x = torch.randn(1, 3, 32, 32)
    r50.set_stride_in_1x1(False)
    try:
        state = r50.state_dict()
        fresh = build_backbone(R50)                                   # config: stride in the 1x1 conv
        fresh.load_state_dict(state, strict=True)
        assert fresh.res4[0].conv1.stride == (1, 1) and fresh.res4[0].conv2.stride == (2, 2)
        with torch.no_grad():
            torch.testing.assert_close(fresh.eval()(x)["res5"], r50(x)["res5"], rtol=0, atol=0)
    finally:
        r50.set_stride_in_1x1(True)
    fresh.load_state_dict(r50.state_dict(), strict=True)             # and back
    assert fresh.res4[0].conv1.stride == (2, 2) and fresh.res4[0].conv2.stride == (1, 1)


def test_state_dict_without_the_stride_entry_keeps_the_built_placement(r50):
    state = {k: v for k, v in r50.state_dict().items() if k != STRIDE_KEY}
    fresh = build_backbone(dict(R50, backbone=dict(R50["backbone"], stride_in_1x1=False)))
    fresh.load_state_dict(state, strict=True)
    assert fresh.res3[0].conv1.stride == (1, 1) and fresh.res3[0].conv2.stride == (2, 2)
    assert int(fresh.state_dict()[STRIDE_KEY]) == 0


def test_load_reports_missing_and_unexpected(r50, tmp_path):
    partial = {"stem.conv1.weight": r50.stem.conv1.weight.detach().clone(), "res9.bogus": torch.zeros(1)}
    path = tmp_path / "partial.pth"
    torch.save({"model": partial}, path)
    net = build_backbone(R50)
    info = load_backbone_weights(net, path)
    assert info["unexpected"] == ["res9.bogus"] and info["loaded"] == 1
    assert "res2.0.conv1.weight" in info["missing"] and "stem.conv1.weight" not in info["missing"]
    assert torch.equal(net.stem.conv1.weight, partial["stem.conv1.weight"])


def test_load_rejects_bad_files(tmp_path):
    net = build_backbone(TINY)
    bad = tmp_path / "bad.pth"
    torch.save({"foo.weight": torch.zeros(1)}, bad)
    with pytest.raises(HVPLError, match="bad.pth"):
        load_backbone_weights(net, bad)
    with pytest.raises(HVPLError, match="not found"):
        load_backbone_weights(net, tmp_path / "none.pkl")
    shape = tmp_path / "shape.pth"
    torch.save({"conv1.weight": torch.zeros(2, 2), "layer1.0.conv1.weight": torch.zeros(1)}, shape)
    with pytest.raises(HVPLError, match="shape"):
        load_backbone_weights(build_backbone(R50), shape)


def test_bad_config():
    with pytest.raises(HVPLError, match="backbone.type"):
        build_backbone({"backbone": dict(TINY["backbone"], type="vgg")})
