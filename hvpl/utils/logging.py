"""Progress output: a bar on a TTY, periodic plain lines otherwise."""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", every_s: float = 10.0) -> Iterator[T]:
    """Wrap an iterable with a tqdm bar on a TTY, or print a line at most every ``every_s`` seconds."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, dynamic_ncols=True)
        return
    start = last = time.time()
    count = 0
    for item in iterable:
        yield item
        count += 1
        now = time.time()
        if now - last >= every_s or (total is not None and count == total):
            last = now
            of = f"/{total}" if total is not None else ""
            print(f"[{desc}] {count}{of} ({now - start:.0f}s)", file=sys.stderr, flush=True)


def log(msg: str) -> None:
    print(f"[hvpl] {msg}", file=sys.stderr, flush=True)
