"""Clip transforms: resize shapes, the sampled augmentation, images and masks transformed alike."""
import numpy as np
import torch

from hvpl.data.transforms import ClipTransform, apply_to_images, apply_to_masks, resize_shape, sample_clip_transform


def test_transform_helpers():
    assert resize_shape(480, 640, 360, 640) == (360, 480)
    assert resize_shape(360, 1280, 360, 640) == (180, 640)
    rng = np.random.default_rng(0)
    cfg = {"min_size_train": [288], "max_size_train": 768, "aug_resize": [400], "crop": [384, 600], "aug_prob": 1.0}
    tf = sample_clip_transform(rng, 720, 1280, cfg, train=True)
    assert tf.pre_size == (400, 711)
    y0, x0, ch, cw = tf.crop
    assert 384 <= ch <= 400 and 384 <= cw <= 600 and y0 + ch <= 400 and x0 + cw <= 711
    assert min(tf.size) == 288
    test_tf = sample_clip_transform(rng, 720, 1280, {"min_size_test": 360, "max_size_test": 640}, train=False)
    assert test_tf == ClipTransform(None, None, (360, 640), False)
    m = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    m[0, 0, :2, :2] = True
    out = apply_to_masks(m, ClipTransform(None, (0, 1, 4, 3), (8, 6), True))
    expected = torch.zeros(8, 6, dtype=torch.bool)
    expected[:4, 4:] = True  # column 1 of the crop -> 2 columns after x2, flipped to the right edge
    assert torch.equal(out[0, 0], expected) and not out[0, 1].any()


def test_uint8_frames_transform_like_float_frames():
    """Frames are resized as uint8 (fast path): within one level per resize of the float resize; masks exact."""
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 40, 60, 3), dtype=torch.uint8, generator=gen).permute(0, 3, 1, 2)
    masks = torch.rand(3, 2, 40, 60, generator=gen) > 0.6
    for tf, levels in ((ClipTransform(None, None, (40, 60), True), 0),     # no resize: exact
                       (ClipTransform(None, None, (24, 36), False), 1),
                       (ClipTransform((50, 75), (3, 5, 40, 50), (32, 40), True), 2)):
        fast, slow = apply_to_images(frames, tf), apply_to_images(frames.float(), tf)
        assert fast.dtype == torch.float32 and fast.shape == slow.shape == (2, 3, *tf.size)
        assert (fast - slow).abs().max() <= levels + 1e-3
        assert (fast == fast.round()).all() and fast.min() >= 0 and fast.max() <= 255
        by_float = torch.nn.functional.interpolate(masks.float(), size=tf.pre_size, mode="nearest") > 0.5 \
            if tf.pre_size else masks
        if tf.crop:
            y0, x0, ch, cw = tf.crop
            by_float = by_float[..., y0:y0 + ch, x0:x0 + cw]
        by_float = torch.nn.functional.interpolate(by_float.float(), size=tf.size, mode="nearest") > 0.5
        assert torch.equal(apply_to_masks(masks, tf), by_float.flip(-1) if tf.flip else by_float)


def test_paper_augmentation_probabilities():
    """protocol.md: the resize + crop branch with p = 0.5, a horizontal flip with p = 0.5 (the paper's config)."""
    from hvpl.config import load_scenario

    cfg = load_scenario("ytvis2019_20-2")["input"]
    rng = np.random.default_rng(0)
    draws = [sample_clip_transform(rng, 720, 1280, cfg, train=True) for _ in range(4000)]
    cropped = np.mean([tf.crop is not None for tf in draws])
    flipped = np.mean([tf.flip for tf in draws])
    assert abs(cropped - 0.5) < 0.03 and abs(flipped - 0.5) < 0.03, (cropped, flipped)
