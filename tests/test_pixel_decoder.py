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
