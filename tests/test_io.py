"""Tests for hvpl.utils.io: atomic writes and JSON reading."""
import json
import os

import pytest

from hvpl.utils.errors import HVPLError
from hvpl.utils.io import atomic_path, atomic_write_json, read_json


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_of_a_plain_open(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    mode = (tmp_path / "a.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "sub" / "out.json"
    atomic_write_json(target, {"old": True})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"old": True}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_read_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{\"a\": ")
    with pytest.raises(HVPLError, match="bad.json: not valid JSON"):
        read_json(bad)
    with pytest.raises(HVPLError, match="missing.json: file not found"):
        read_json(tmp_path / "missing.json")


@pytest.mark.parametrize("content", [b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b'{"a": "\xe9t\xe9"}'])
def test_read_json_of_a_binary_or_non_utf8_file_names_the_file(tmp_path, content):
    """A JPEG or Latin-1 text passed as JSON: an HVPLError, not a UnicodeDecodeError traceback."""
    bad = tmp_path / "train.json"
    bad.write_bytes(content)
    with pytest.raises(HVPLError, match=r"train.json: not valid JSON \(not UTF-8 text: byte 0x"):
        read_json(bad)
