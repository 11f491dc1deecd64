"""RLE (compressed / uncompressed), polygon and null segmentations."""
import numpy as np
import pytest

from hvpl.data.masks import (check_segmentation, compressed_run_lengths, decode_segmentation, encode_mask,
                             encode_track, mask_bbox)
from hvpl.utils.errors import HVPLError


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """Independent COCO uncompressed RLE: run lengths over the column-major flattening, starting with 0s."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": counts}


@pytest.fixture
def mask():
    rng = np.random.default_rng(0)
    m = rng.random((7, 9)) > 0.6
    m[0, 0] = True  # first run of zeros has length 0
    return m


def test_compressed_round_trip(mask):
    rle = encode_mask(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [7, 9]
    np.testing.assert_array_equal(decode_segmentation(rle, 7, 9), mask)


def test_uncompressed_rle(mask):
    rle = _uncompressed_rle(mask)
    assert rle["counts"][0] == 0
    np.testing.assert_array_equal(decode_segmentation(rle, 7, 9), mask)


def test_polygon_rectangle():
    poly = [[1.0, 1.0, 6.0, 1.0, 6.0, 4.0, 1.0, 4.0]]
    m = decode_segmentation(poly, 8, 10)
    assert m.shape == (8, 10)
    assert m[2:4, 2:6].all()
    assert not m[6:, :].any() and not m[:, 8:].any()
    assert abs(int(m.sum()) - 15) <= 10  # 5 x 3 box, rasterisation adds a border


def test_null_and_errors():
    assert decode_segmentation(None, 4, 4) is None
    with pytest.raises(HVPLError, match="vid.json: annotation 3.*differs from the video size"):
        decode_segmentation(encode_mask(np.ones((4, 5), bool)), 4, 4, "vid.json: annotation 3")
    with pytest.raises(HVPLError, match="polygon"):
        check_segmentation([[1, 2, 3]], 4, 4, "x")
    with pytest.raises(HVPLError, match="segmentation must be"):
        check_segmentation(5, 4, 4, "x")


def test_rle_counts_are_checked_without_decoding(mask):
    h, w = mask.shape
    good = encode_mask(mask)
    check_segmentation(good, h, w, "x")
    with pytest.raises(HVPLError, match=r"v.json: ann 1 frame 0: RLE 'counts' is not a compressed RLE string"):
        check_segmentation(dict(good, counts="garbage!!"), h, w, "v.json: ann 1 frame 0")
    check_segmentation({"size": [h, w], "counts": [h * w]}, h, w, "x")
    for counts, message in (([h * w - 1], "cover"), ([-1, h * w + 1], "non-negative"), (3, "string or a list")):
        with pytest.raises(HVPLError, match=message):
            check_segmentation({"size": [h, w], "counts": counts}, h, w, "x")


@pytest.mark.parametrize("seed", range(40))
def test_compressed_run_lengths_match_an_independent_encoding(seed):
    """Decoding pycocotools' strings gives the run lengths of the column-major flattening (deltas, signs and
    multi-group runs included: large masks need runs over 31 and negative deltas)."""
    rng = np.random.default_rng(seed)
    h, w = (int(x) for x in rng.integers(1, 80, 2))
    m = rng.random((h, w)) < rng.random()
    if seed % 2:
        m = np.zeros((h, w), bool)
        m[rng.integers(0, h):, rng.integers(0, w):] = True
    runs = compressed_run_lengths(encode_mask(m)["counts"])
    assert runs.tolist() == _uncompressed_rle(m)["counts"]


def test_compressed_rle_that_does_not_cover_the_mask_is_refused(mask):
    """Such strings made pycocotools' merge loop forever (and decode write past the mask)."""
    h, w = mask.shape
    small = encode_mask(np.ones((5, 5), bool))["counts"]          # a mask encoded at another size
    for counts, message in ((small, "cover 25 pixels, the mask has 7x9"), ("0", "cover 0 pixels"),
                            ("PPPPPPPP", "truncated or corrupt"), ("1" + "o" * 20, "truncated or corrupt"),
                            ("0@", "negative run length")):
        with pytest.raises(HVPLError, match=message):
            check_segmentation({"size": [h, w], "counts": counts}, h, w, "x")


def test_polygon_coordinates_must_be_numbers():
    check_segmentation([[1, 1, 3, 1, 3, 3.5]], 4, 4, "x")
    for bad in ([[1, 1, 3, 1, 3, "3"]], [[1, 1, 3, 1, 3, float("nan")]], [[1, 1, 3, 1, 3, True]]):
        with pytest.raises(HVPLError, match="x: polygon coordinates must be finite numbers"):
            check_segmentation(bad, 4, 4, "x")


def test_encode_track_and_bbox():
    masks = np.zeros((3, 6, 8), bool)
    masks[0, 1:3, 2:7] = True
    masks[2, 5, 0] = True
    segs, areas, boxes = encode_track(masks)
    assert segs[1] is None and areas[1] is None and boxes[1] is None
    assert areas[0] == 10.0 and boxes[0] == [2.0, 1.0, 5.0, 2.0]
    assert boxes[2] == [0.0, 5.0, 1.0, 1.0]
    np.testing.assert_array_equal(decode_segmentation(segs[0], 6, 8), masks[0])
    assert mask_bbox(np.zeros((2, 2), bool)) is None
