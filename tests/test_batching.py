"""Batching helpers of the trainer: padding clips, splitting outputs per clip."""
from __future__ import annotations

import torch

from hvpl.engine import batching

from reference_impls import slice_outputs


def test_pad_clips_pads_with_the_pixel_mean():
    mean = torch.tensor([10.0, 20.0, 30.0])
    clips = [{"images": torch.zeros(2, 3, 4, 5)}, {"images": torch.ones(2, 3, 6, 3)}]
    out = batching.pad_clips(clips, mean)
    assert out.shape == (2, 2, 3, 6, 5)
    assert torch.equal(out[0, :, :, :4, :5], clips[0]["images"])
    assert torch.equal(out[0, :, 1, 4:, :], torch.full((2, 2, 5), 20.0))
    assert torch.equal(out[1, :, 2, :, 3:], torch.full((2, 6, 2), 30.0))


def test_split_outputs_equals_slice_outputs_values_and_gradients():
    """split_outputs (one backward node per tensor) gives slice_outputs' tensors and the same gradients."""
    g = torch.Generator().manual_seed(0)
    b, t = 2, 3

    def leaves():
        fm = torch.randn(b * t, 4, 5, 5, generator=g, requires_grad=True)
        vm = torch.randn(b, 4, t, 5, 5, generator=g, requires_grad=True)
        return fm, vm

    fm, vm = leaves()

    def tree(fm, vm):
        return {"frame": {"pred_masks": fm * 2, "aux_outputs": [{"pred_masks": fm + 1}], "n": 3},
                "video": {"pred_masks": vm * 3, "aux_outputs": [{"pred_masks": vm - 1}, {"pred_masks": vm * vm}]}}

    def loss(parts, weights):
        total = 0.0
        for j, p in enumerate(parts):
            total = total + weights[j] * (p["frame"]["pred_masks"].sum() + p["frame"]["aux_outputs"][0]["pred_masks"]
                                          .pow(2).sum() + sum(a["pred_masks"].sin().sum()
                                                              for a in p["video"]["aux_outputs"]))
        return total

    out = tree(fm, vm)
    split = batching.split_outputs(out, b, t)
    sliced = [slice_outputs(out, j, t) for j in range(b)]
    for s, r in zip(split, sliced):
        assert s["frame"]["n"] == 3 and len(s["video"]["aux_outputs"]) == 2
        assert torch.equal(s["frame"]["pred_masks"], r["frame"]["pred_masks"])
        assert torch.equal(s["video"]["aux_outputs"][1]["pred_masks"], r["video"]["aux_outputs"][1]["pred_masks"])
    grads_split = torch.autograd.grad(loss(split, [0.5, 2.0]), [fm, vm])
    out = tree(fm, vm)
    grads_slice = torch.autograd.grad(loss([slice_outputs(out, j, t) for j in range(b)], [0.5, 2.0]), [fm, vm])
    for a, c in zip(grads_split, grads_slice):
        assert torch.equal(a, c)
