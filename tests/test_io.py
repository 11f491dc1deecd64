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


def test_stale_temporaries_of_gone_processes_are_removed_live_ones_kept(tmp_path):
    """What a killed writer left (this host, process gone; or an older hvpl that recorded no owner) goes when the
    same output is written again; a live writer's or another host's temporaries stay."""
    import socket
    import subprocess
    import sys

    host = socket.gethostname()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {"dead": f".out.json.{host}-{gone.stdout.strip()}.abcd1234.tmp", "legacy": ".out.json.abcd1234.tmp",
                 "live": f".out.json.{host}-{live.pid}.abcd1234.tmp", "remote": ".out.json.elsewhere-1.abcd1234.tmp",
                 "dead_stage": f".out.json.stage-{host}-{gone.stdout.strip()}",
                 "other_output": ".other.json.abcd1234.tmp"}
        for key, name in names.items():
            (tmp_path / name).mkdir() if "stage" in key else (tmp_path / name).write_text("half")
        atomic_write_json(tmp_path / "out.json", {"x": 1})
        kept = sorted(p.name for p in tmp_path.iterdir())
    finally:
        live.kill()
        live.wait()
    assert kept == sorted(["out.json", names["live"], names["remote"], names["other_output"]])


def test_atomic_files_write_all_or_none_and_name_the_failed_output(tmp_path, monkeypatch):
    from fault_sim import full_disk

    from hvpl.utils.io import atomic_files

    (tmp_path / "a.txt").write_text("old a")
    full_disk(monkeypatch, tmp_path, 10)
    with pytest.raises(HVPLError, match=r"b.txt: no space left on device$"):
        with atomic_files([tmp_path / "a.txt", tmp_path / "b.txt"]) as (a, b):
            a.write_text("new a")          # fits
            b.write_text("new b, longer than what is left")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old a"
