"""Tests for hvpl.model.ms_deform_attn."""
import pytest
import torch

from hvpl.model import ms_deform_attn as mda
from hvpl.model.ms_deform_attn import MSDeformAttn, ms_deform_attn_core, softmax_last

from reference_impls import ms_deform_attn_naive

torch.set_num_threads(1)
SHAPES = torch.tensor([[6, 4], [3, 5], [2, 2]], dtype=torch.long)


def _inputs(n=2, lq=3, m=2, d=4, p=3, dtype=torch.float64, seed=0, spread=0.2):
    gen = torch.Generator().manual_seed(seed)
    s = int((SHAPES[:, 0] * SHAPES[:, 1]).sum())
    value = torch.randn(n, s, m, d, dtype=dtype, generator=gen)
    # locations slightly outside [0, 1] too, to exercise the zero padding
    loc = torch.rand(n, lq, m, len(SHAPES), p, 2, dtype=dtype, generator=gen) * (1 + 2 * spread) - spread
    attn = torch.rand(n, lq, m, len(SHAPES), p, dtype=dtype, generator=gen)
    return value, SHAPES, loc, attn


def test_core_matches_naive():
    args = _inputs()
    out = ms_deform_attn_core(*args)
    assert out.shape == (2, 3, 2 * 4)
    torch.testing.assert_close(out, ms_deform_attn_naive(*args), rtol=1e-10, atol=1e-10)


def test_core_at_pixel_centre_returns_the_pixel():
    value, shapes, loc, attn = _inputs(n=1, lq=1, m=1, d=3, p=1)
    h, w = 6, 4
    i, j = 2, 1
    loc[..., 0] = (j + 0.5) / w
    loc[..., 1] = (i + 0.5) / h
    attn.zero_()
    attn[:, :, :, 0] = 1.0   # only level 0 contributes
    out = ms_deform_attn_core(value, shapes, loc, attn)
    torch.testing.assert_close(out[0, 0], value[0, i * w + j, 0])


def test_core_gradcheck():
    value, shapes, loc, attn = _inputs(n=1, lq=2, m=1, d=2, p=2, spread=0.0)
    value.requires_grad_()
    attn.requires_grad_()
    assert torch.autograd.gradcheck(lambda v, a: ms_deform_attn_core(v, shapes, loc, a), (value, attn))


def _module_inputs(dim=16, n=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    s = int((SHAPES[:, 0] * SHAPES[:, 1]).sum())
    start = torch.cat([torch.zeros(1, dtype=torch.long), (SHAPES[:, 0] * SHAPES[:, 1]).cumsum(0)[:-1]])
    src = torch.randn(n, s, dim, generator=gen)
    ref = torch.rand(n, s, len(SHAPES), 2, generator=gen)
    return src, ref, start


def test_module_matches_naive_and_masks_padding():
    torch.manual_seed(0)
    attn = MSDeformAttn(16, n_levels=3, n_heads=4, n_points=2)
    torch.nn.init.normal_(attn.sampling_offsets.weight, std=0.1)
    torch.nn.init.normal_(attn.attention_weights.weight, std=0.1)
    src, ref, start = _module_inputs()
    out = attn(src, ref, src, SHAPES, start)
    assert out.shape == src.shape
    mda.ms_deform_attn_core, saved = ms_deform_attn_naive, mda.ms_deform_attn_core
    try:
        ref_out = attn(src[:, :5], ref[:, :5], src, SHAPES, start)
    finally:
        mda.ms_deform_attn_core = saved
    torch.testing.assert_close(out[:, :5], ref_out, rtol=1e-4, atol=1e-5)
    mask = torch.ones(src.shape[:2], dtype=torch.bool)
    zero_out = attn(src, ref, src, SHAPES, start, padding_mask=mask)
    torch.testing.assert_close(zero_out, attn.output_proj.bias.expand_as(zero_out))


def test_module_init_offsets_and_uniform_weights():
    attn = MSDeformAttn(8, n_levels=2, n_heads=8, n_points=3)
    off = attn.sampling_offsets.bias.view(8, 2, 3, 2)
    assert torch.allclose(off[0, 0, :, 0], torch.tensor([1.0, 2.0, 3.0]))   # head 0 points along +x
    assert torch.allclose(off[2, 1, :, 1], torch.tensor([1.0, 2.0, 3.0]))   # head 2 points along +y
    with pytest.raises(ValueError):
        MSDeformAttn(10, 2, 4, 2)


def test_fused_core_hook_only_for_cuda():
    calls = []
    mda.register_core(lambda *a: calls.append(1))
    try:
        attn = MSDeformAttn(16, 3, 4, 2)
        src, ref, start = _module_inputs()
        attn(src, ref, src, SHAPES, start)
    finally:
        mda.register_core(None)
    assert not calls   # CPU tensors keep the grid_sample core


@pytest.mark.parametrize("width", [1, 5, 12, 16, 20])
def test_softmax_last_equals_softmax(width):
    x = torch.randn(7, 3, width, generator=torch.Generator().manual_seed(width), requires_grad=True)
    got, want = softmax_last(x), x.softmax(-1)
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6)
    g = torch.randn_like(want)
    assert torch.allclose(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], atol=1e-6)
