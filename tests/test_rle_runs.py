"""Compressed RLE strings read many at once (hvpl/data/rle_runs.py) against pycocotools and the per-string
decoder of hvpl/data/masks.py."""
from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from hvpl.data.masks import compressed_run_lengths
from hvpl.data.rle_runs import CORRUPT, TOO_LARGE, check_compressed_rles, stored_runs


def _encode(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def _random_masks(seed: int, count: int = 30):
    """Masks of many sizes: random pixels, blocks (long runs: multi-group values, negative differences),
    empty and full masks."""
    rng = np.random.default_rng(seed)
    masks = []
    for k in range(count):
        h, w = (int(x) for x in rng.integers(1, 90, 2))
        kind = k % 4
        if kind == 0:
            m = rng.random((h, w)) < rng.random()
        elif kind == 1:
            m = np.zeros((h, w), bool)
            m[rng.integers(0, h):, rng.integers(0, w):] = True
        else:
            m = np.zeros((h, w), bool) if kind == 2 else np.ones((h, w), bool)
        masks.append(m)
    return masks


@pytest.mark.parametrize("seed", range(6))
def test_batch_areas_equal_pycocotools(seed):
    masks = _random_masks(seed)
    strings = [_encode(m) for m in masks]
    areas, problems = check_compressed_rles(strings, [m.shape[0] for m in masks], [m.shape[1] for m in masks])
    assert problems == [None] * len(masks)
    assert areas.tolist() == [int(m.sum()) for m in masks]
    stored, first, count, bad = stored_runs(strings)
    for i, s in enumerate(strings):   # the batch's values of each string are that string's alone
        assert stored_runs([s])[0].tolist() == stored[first[i]:first[i] + count[i]].tolist()
        runs = compressed_run_lengths(s)   # the per-string decoder (data loading): the same numbers
        assert int(runs.sum()) == masks[i].size and int(runs[1::2].sum()) == areas[i]


def test_large_mask_values():
    """A 720x1280 mask: runs of up to 921,600 pixels (four 5-bit groups) and large negative differences."""
    m = np.zeros((720, 1280), bool)
    m[100:600, 200:1100] = True
    m[700:, :3] = True
    s = _encode(m)
    areas, problems = check_compressed_rles([s, s], [720, 720], [1280, 1280])
    assert problems == [None, None] and areas.tolist() == [int(m.sum())] * 2


def test_bad_strings_are_named_and_do_not_disturb_the_others():
    masks = _random_masks(7, 12)
    strings = [_encode(m) for m in masks]
    h, w = [m.shape[0] for m in masks], [m.shape[1] for m in masks]
    other_size = _encode(np.eye(h[3] + 1, w[3], dtype=bool))   # short runs: only their sum is wrong
    bad = {1: "ab!", 3: other_size, 5: "PPPP", 7: "0@", 9: "1" + "o" * 13 + "0", 10: "é"}
    for i, s in bad.items():
        strings[i] = s
    strings[11] = strings[11] + "7"   # one more run of 7: covers 7 pixels too many
    areas, problems = check_compressed_rles(strings, h, w)
    assert "not a compressed RLE string (character '!' at 2)" in problems[1]
    assert f"cover {(h[3] + 1) * w[3]} pixels, the mask has {h[3]}x{w[3]}" in problems[3]
    assert problems[5] == CORRUPT                       # ends inside a value
    assert "negative run length" in problems[7]
    assert problems[9] in (CORRUPT, TOO_LARGE)          # a value of 14 groups
    assert "not a compressed RLE string" in problems[10]
    assert "cover" in problems[11]
    good = [i for i in range(len(masks)) if i not in bad and i != 11]
    assert all(problems[i] is None for i in good)
    assert [int(areas[i]) for i in good] == [int(masks[i].sum()) for i in good]


def test_value_larger_than_the_mask():
    s = _encode(np.ones((60, 60), bool))   # one run of 3600 ones after an empty run of 0s
    assert check_compressed_rles([s], [60], [60])[1] == [None]
    assert check_compressed_rles([s], [10], [10])[1] == [TOO_LARGE]


def test_empty_inputs():
    areas, problems = check_compressed_rles([], [], [])
    assert areas.size == 0 and problems == []
    areas, problems = check_compressed_rles(["", ""], [0, 2], [3, 2])
    assert problems[0] is None and "cover 0 pixels" in problems[1]
