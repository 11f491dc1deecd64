"""Point sampling: bilinear reads at normalised coordinates, importance sampling, padding."""
import pytest
import torch

from hvpl.model.point_sampling import pad_to, point_sample, rand_points, uncertain_point_coords

torch.set_num_threads(1)


def test_point_sample_reads_pixel_centres_and_interpolates_by_hand():
    maps = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])           # (1, 1, 2, 2)
    # pixel (row r, col c) has its centre at ((c + 0.5) / W, (r + 0.5) / H)
    centres = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]])
    assert point_sample(maps, centres)[0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    middle = point_sample(maps, torch.tensor([[[0.5, 0.5]]]))
    assert middle.shape == (1, 1, 1) and float(middle) == pytest.approx(1.5)   # mean of the four
    # half a pixel left of the first centre: half of pixel 0 blended with the zero padding
    edge = point_sample(torch.ones(1, 1, 2, 2), torch.tensor([[[0.0, 0.25]]]))
    assert float(edge) == pytest.approx(0.5)


def test_uncertain_points_prefer_the_decision_boundary():
    """With importance ratio 1, every point comes from the most uncertain candidates: on a map whose logits are
    +-10 except one column at 0, the points fall in (or next to) that column."""
    logits = torch.full((2, 1, 8, 8), 10.0)
    logits[:, :, :, :4] = -10.0
    logits[:, :, :, 4] = 0.0
    gen = torch.Generator().manual_seed(0)
    pts = uncertain_point_coords(logits, num_points=16, oversample_ratio=8.0, importance_sample_ratio=1.0,
                                 generator=gen)
    assert pts.shape == (2, 16, 2)
    assert ((pts[..., 0] > 3 / 8) & (pts[..., 0] < 6 / 8)).all()
    uniform = uncertain_point_coords(logits, 16, 8.0, 0.0, generator=torch.Generator().manual_seed(0))
    assert not ((uniform[..., 0] > 3 / 8) & (uniform[..., 0] < 6 / 8)).all()


def test_uncertain_points_are_reproducible_and_check_their_ratios():
    logits = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    a = uncertain_point_coords(logits, 10, 3.0, 0.75, generator=torch.Generator().manual_seed(5))
    b = uncertain_point_coords(logits, 10, 3.0, 0.75, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (3, 10, 2) and ((a >= 0) & (a < 1)).all()
    with pytest.raises(ValueError, match="oversample_ratio"):
        uncertain_point_coords(logits, 10, 0.5, 0.75)
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        uncertain_point_coords(logits, 10, 3.0, 1.5)


def test_rand_points_follow_the_generator():
    a = rand_points((4, 2), torch.Generator().manual_seed(3), torch.device("cpu"))
    b = rand_points((4, 2), torch.Generator().manual_seed(3), torch.device("cpu"))
    assert torch.equal(a, b) and a.shape == (4, 2)


def test_pad_to_pads_bottom_right_and_refuses_larger_masks():
    m = torch.ones(2, 3, 4, dtype=torch.bool)
    out = pad_to(m, 5, 6)
    assert out.shape == (2, 5, 6) and out.dtype == torch.bool
    assert out[:, :3, :4].all() and not out[:, 3:].any() and not out[:, :, 4:].any()
    assert pad_to(m, 3, 4) is m
    with pytest.raises(ValueError, match="larger than the padded size"):
        pad_to(m, 2, 6)
