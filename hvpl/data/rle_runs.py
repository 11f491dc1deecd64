"""Run lengths of pycocotools' compressed RLE strings, read without decoding any mask, many strings at once.

Format (pycocotools ``rleToString`` / ``rleFrString``): a mask of H x W pixels is the run lengths of its
column-major flattening, alternating 0s and 1s and starting with 0s. Run m > 2 is stored as run m minus run
m - 2. Each stored value is written as 5-bit groups, least significant first, each group as the character
48 + group with 0x20 set on every group but the last; 0x10 of the last group is the sign.

The evaluator checks every string of a file at once (a string whose runs do not cover its mask exactly makes
pycocotools' merge loop forever, or its decode write past the mask): all strings are joined and read with a
few vectorised passes; the only per-string work is on the strings' offsets.
"""
from __future__ import annotations

import re

import numpy as np

_OFFSET, _MORE, _SIGN, _GROUP_BITS = 48, 0x20, 0x10, 5
_LAST_GROUP_BELOW = _OFFSET + _MORE   # characters below this carry no continuation bit: a run ends there
_MAX_GROUPS = 12                      # 60 bits; more is no mask
_ALPHABET = bytes(range(_OFFSET, _OFFSET + 2 * _MORE))   # '0' .. 'o'
_NOT_IN_ALPHABET = re.compile(r"[^\x30-\x6f]")
_NEGATIVE_FROM = _OFFSET + _SIGN   # one-group values: '0' .. '?' are 0 .. 15, '@' .. 'O' are -16 .. -1

CORRUPT = "RLE 'counts' is a truncated or corrupt compressed RLE string"
TOO_LARGE = "RLE 'counts' store a run longer than the mask has pixels (a mask encoded at another size?)"


def _bad_characters(strings: list) -> list:
    """Per string None or why it is not a complete string of pycocotools' alphabet (slow path, rare)."""
    out = []
    for s in strings:
        hit = _NOT_IN_ALPHABET.search(s)
        if hit:
            out.append(f"RLE 'counts' is not a compressed RLE string (character {hit.group()!r} at {hit.start()})")
        elif s and ord(s[-1]) >= _LAST_GROUP_BELOW:
            out.append(CORRUPT)
        else:
            out.append(None)
    return out


def _one_group_values(chars: np.ndarray) -> np.ndarray:
    """(K,) uint8 characters read as one-group values (K,) int64 (in int8 first: these passes are the costly
    ones, over every run of every string)."""
    x = (chars - _OFFSET).view(np.int8)
    x -= (chars >= _NEGATIVE_FROM).view(np.int8) << _GROUP_BITS
    return x.astype(np.int64)


def stored_runs(strings: list, max_run=None):
    """The stored values (before the m - 2 differences are undone) of N strings, all at once.

    Returns ``(stored (R,) int64, first (N,), count (N,), bad)``: string i's values are
    ``stored[first[i]:first[i] + count[i]]``; ``bad[i]`` is None or why the string is refused (characters
    outside the alphabet, a string ending inside a value, a value of more than 12 groups or, with ``max_run``
    (N,), larger than its mask's pixel count; its values are then left out or zeroed).
    """
    n = len(strings)
    text = "".join(strings)
    raw = text.encode("ascii") if text.isascii() else b"\x00"   # a byte outside the alphabet: the slow path
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=n)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    chars = np.frombuffer(raw, dtype=np.uint8)
    if raw.translate(None, _ALPHABET) or (chars[offsets[1:][lengths > 0] - 1] >= _LAST_GROUP_BELOW).any():
        bad = _bad_characters(strings)
        keep = [i for i in range(n) if bad[i] is None]
        kept = stored_runs([strings[i] for i in keep], None if max_run is None else np.asarray(max_run)[keep])
        first, count = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        first[keep], count[keep] = kept[1], kept[2]
        for j, i in enumerate(keep):
            bad[i] = kept[3][j]
        return kept[0], first, count, bad
    bad: list = [None] * n
    more = np.flatnonzero(chars >= _LAST_GROUP_BELOW)   # every group of a multi-group value but its last
    count = lengths - np.diff(np.searchsorted(more, offsets))
    first = np.cumsum(count) - count
    if more.size:
        last = np.ones(chars.size, dtype=bool)
        last[more] = False
        stored = _one_group_values(chars[last])
    else:
        return _one_group_values(chars), first, count, bad
    # multi-group values: a block of consecutive continued groups and the group after it
    block = np.concatenate(([True], np.diff(more) != 1))
    starts, ends = more[block], more[np.append(block[1:], True)] + 1
    groups = ends - starts + 1
    values = np.zeros(starts.size, dtype=np.int64)
    for k in range(min(int(groups.max()), _MAX_GROUPS)):
        sel = np.flatnonzero(groups > k)
        values[sel] |= ((chars[starts[sel] + k].astype(np.int64) - _OFFSET) & (_MORE - 1)) << (_GROUP_BITS * k)
    negative = (chars[ends] - _OFFSET) & _SIGN != 0
    values[negative] -= np.int64(1) << (_GROUP_BITS * np.minimum(groups[negative], _MAX_GROUPS))
    owner = np.searchsorted(offsets, ends, side="right") - 1
    too_long = groups > _MAX_GROUPS
    too_large = np.abs(values) > np.asarray(max_run, dtype=np.int64)[owner] if max_run is not None else too_long & False
    values[too_long | too_large] = 0
    stored[ends - np.searchsorted(more, ends)] = values
    for i in np.unique(owner[too_large]).tolist():
        bad[i] = TOO_LARGE
    for i in np.unique(owner[too_long]).tolist():
        bad[i] = CORRUPT
    return stored, first, count, bad


def _chain_segments(first: np.ndarray, count: np.ndarray):
    """Where the runs of each string sit in ``stored[0::2]`` and ``stored[1::2]``.

    Run m of string i is ``stored[first[i] + m]``. The runs that share one running sum, a "chain", are: run 0
    alone (0s), the odd runs 1, 3, ... (1s), the even runs 2, 4, ... (0s); each chain is a contiguous range of
    one parity view. Returns, per parity, (segment starts (S,), owner string (S,), is-a-chain-of-1s (S,)),
    ordered by start: the segments tile that view.
    """
    kinds = (  # (global index of the chain's first run, its length, its runs are 1s)
        (first, np.minimum(count, 1), False),
        (first + 1, count // 2, True),
        (first + 2, np.maximum(count - 1, 0) // 2, False),
    )
    out = []
    strings = np.arange(len(first))
    for parity in (0, 1):
        starts, owners, ones = [], [], []
        for start, length, is_ones in kinds:
            sel = (length > 0) & (start % 2 == parity)
            starts.append(start[sel] // 2)
            owners.append(strings[sel])
            ones.append(np.full(int(sel.sum()), is_ones))
        starts, owners, ones = np.concatenate(starts), np.concatenate(owners), np.concatenate(ones)
        order = np.argsort(starts, kind="stable")
        out.append((starts[order], owners[order], ones[order]))
    return out


def check_compressed_rles(strings: list, heights, widths) -> tuple[np.ndarray, list]:
    """Check N compressed RLE strings against their masks' sizes (N,), (N,), without decoding any mask.

    Returns the foreground areas (N,) int64 and, per string, None or why it is refused: not a compressed RLE
    string, a negative run, or runs that do not cover the mask exactly.
    """
    heights, widths = np.asarray(heights, dtype=np.int64), np.asarray(widths, dtype=np.int64)
    pixels = heights * widths
    n = len(strings)
    stored, first, count, problems = stored_runs(strings, pixels)
    totals, areas = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    negative, too_large = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for parity, (starts, owners, ones) in enumerate(_chain_segments(first, count)):
        if starts.size == 0:
            continue
        # a chain's runs are its running sums: cumulative sums of the whole view minus the sum before the chain.
        # |stored| <= pixels keeps the cumulative sums far from overflow; runs in [0, pixels] keep the chain sums
        # exact.
        sums = np.cumsum(stored[parity::2])
        before = np.where(starts > 0, sums[starts - 1], 0)
        lengths = np.diff(np.append(starts, sums.size))
        negative[owners[np.minimum.reduceat(sums, starts) < before]] = True
        too_large[owners[np.maximum.reduceat(sums, starts) - before > pixels[owners]]] = True
        chain_sums = np.add.reduceat(sums, starts) - lengths * before
        np.add.at(totals, owners, chain_sums)
        np.add.at(areas, owners[ones], chain_sums[ones])
    for i in np.flatnonzero(negative | too_large | (totals != pixels)).tolist():
        if problems[i] is None:
            problems[i] = ("RLE 'counts' decodes to a negative run length" if negative[i] else TOO_LARGE
                           if too_large[i] else f"RLE 'counts' cover {totals[i]} pixels, the mask has "
                           f"{heights[i]}x{widths[i]} (a mask encoded at another size?)")
    return areas, problems
