"""Tests for hvpl.model.position_encoding and hvpl.model.pixel_decoder."""
import math

import pytest
import torch

from hvpl.model.position_encoding import PositionEmbeddingSine

torch.set_num_threads(1)


def _sine_reference(h, w, f, temperature=10000.0):
    """Per-pixel loop: channel k<F encodes y, k>=F encodes x; even k sin, odd k cos."""
    out = torch.zeros(2 * f, h, w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            ys = (i + 1) / h * 2 * math.pi
            xs = (j + 1) / w * 2 * math.pi
            for k in range(f):
                freq = temperature ** (2 * (k // 2) / f)
                fn = math.sin if k % 2 == 0 else math.cos
                out[k, i, j] = fn(ys / freq)
                out[f + k, i, j] = fn(xs / freq)
    return out


def test_position_embedding_matches_loop_reference():
    f = 6
    pe = PositionEmbeddingSine(f)
    x = torch.randn(2, 12, 4, 7)
    out = pe(x)
    assert out.shape == (2, 2 * f, 4, 7)
    ref = _sine_reference(4, 7, f).float()
    torch.testing.assert_close(out[0], ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], ref, atol=1e-5, rtol=0)


def test_position_embedding_padding_mask_restarts_normalisation():
    pe = PositionEmbeddingSine(4)
    x = torch.randn(1, 8, 3, 6)
    mask = torch.zeros(1, 3, 6, dtype=torch.bool)
    mask[:, :, 4:] = True  # last two columns are padding
    out = pe(x, mask)
    ref = pe(torch.randn(1, 8, 3, 4))
    torch.testing.assert_close(out[..., :4], ref)


def test_position_embedding_rejects_odd_size():
    with pytest.raises(ValueError):
        PositionEmbeddingSine(5)


# ------------------------------------------------------------------------------------------ pixel decoder
import copy  # noqa: E402

import torch.nn.functional as F  # noqa: E402

from hvpl.model.pixel_decoder import PixelDecoder, reference_points  # noqa: E402

TINY_CFG = {"hidden_dim": 16, "pixel_decoder": {"num_layers": 1, "num_heads": 4, "num_points": 2,
                                                "ffn_dim": 32, "norm_groups": 4}}
IN_CH = {"res2": 8, "res3": 12, "res4": 20, "res5": 24}


def _features(n=2, h=64, w=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(n, c, h // s, w // s, generator=gen)
            for (name, c), s in zip(IN_CH.items(), (4, 8, 16, 32))}


def test_pixel_decoder_shapes_and_grads():
    torch.manual_seed(0)
    dec = PixelDecoder(TINY_CFG, IN_CH)
    feats = {k: v.requires_grad_() for k, v in _features().items()}
    out = dec(feats)
    assert out["mask_features"].shape == (2, 16, 16, 24)
    assert out["video_mask_source"].shape == (2, 16, 16, 24)
    assert [tuple(m.shape) for m in out["multi_scale_features"]] == [(2, 16, 2, 3), (2, 16, 4, 6), (2, 16, 8, 12)]
    loss = out["mask_features"].sum() + sum(m.square().sum() for m in out["multi_scale_features"])
    loss.backward()
    for name in IN_CH:
        assert feats[name].grad is not None and feats[name].grad.abs().sum() > 0, name


def test_pixel_decoder_without_encoder_layers_is_projection_plus_fpn():
    torch.manual_seed(1)
    cfg = copy.deepcopy(TINY_CFG)
    cfg["pixel_decoder"]["num_layers"] = 0
    dec = PixelDecoder(cfg, IN_CH).eval()
    feats = _features(seed=1)
    out = dec(feats)
    for lvl, name in enumerate(("res5", "res4", "res3")):
        torch.testing.assert_close(out["multi_scale_features"][lvl], dec.input_proj[lvl](feats[name]))
    top = dec.input_proj[2](feats["res3"])
    lat = F.group_norm(F.conv2d(feats["res2"], dec.lateral_conv[0].weight), 4,
                       dec.lateral_conv[1].weight, dec.lateral_conv[1].bias)
    y = lat + F.interpolate(top, scale_factor=2, mode="bilinear", align_corners=False)
    y = F.relu(F.group_norm(F.conv2d(y, dec.output_conv[0].weight, padding=1), 4,
                            dec.output_conv[1].weight, dec.output_conv[1].bias))
    torch.testing.assert_close(out["video_mask_source"], y)
    torch.testing.assert_close(out["mask_features"], F.conv2d(y, dec.mask_features.weight, dec.mask_features.bias))


def test_reference_points_are_pixel_centres():
    shapes = torch.tensor([[2, 3], [1, 2]])
    ref = reference_points(shapes, 2, batch=1, device="cpu", dtype=torch.float32)
    assert ref.shape == (1, 8, 2, 2)
    torch.testing.assert_close(ref[0, 4, 0], torch.tensor([1.5 / 3, 1.5 / 2]))   # level 0, row 1, col 1
    torch.testing.assert_close(ref[0, 7, 1], torch.tensor([1.5 / 2, 0.5]))       # level 1, col 1


def test_pixel_decoder_encoder_mixes_levels():
    """A perturbation of the stride-32 input must reach the stride-8 output through deformable attention."""
    torch.manual_seed(2)
    dec = PixelDecoder(TINY_CFG, IN_CH).eval()
    feats = _features(seed=2)
    base = dec(feats)["multi_scale_features"][2]
    feats["res5"] = feats["res5"] + 1.0
    moved = dec(feats)["multi_scale_features"][2]
    assert (moved - base).abs().max() > 1e-3


def test_pixel_decoder_deterministic():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(PixelDecoder(TINY_CFG, IN_CH)(_features(seed=3))["mask_features"])
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_pixel_decoder_paper_width_small_input():
    cfg = {"hidden_dim": 256, "pixel_decoder": {"num_layers": 6, "num_heads": 8, "num_points": 4,
                                                "ffn_dim": 1024, "norm_groups": 32}}
    in_ch = {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048}
    dec = PixelDecoder(cfg, in_ch)
    feats = {name: torch.randn(1, c, 64 // s, 64 // s) for (name, c), s in zip(in_ch.items(), (4, 8, 16, 32))}
    with torch.no_grad():
        out = dec(feats)
    assert out["mask_features"].shape == (1, 256, 16, 16)
    assert torch.isfinite(out["mask_features"]).all()
