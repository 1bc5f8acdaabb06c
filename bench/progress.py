"""A progress bar over the report's cases: tqdm's, or where tqdm is not installed (the GPU
machine has none) one line per case, so a run always shows where it is."""

from __future__ import annotations

import sys
import time


class _Lines:
    """The part of tqdm's interface the report uses, printing a line per case."""

    def __init__(self, total: int):
        self.total, self.done, self.start, self.description = total, 0, time.perf_counter(), ""

    def set_description(self, text: str) -> None:
        self.description = text
        print(f"[{self.done + 1}/{self.total}, {time.perf_counter() - self.start:.0f} s] {text}",
              file=sys.stderr, flush=True)

    def update(self, count: int = 1) -> None:
        self.done += count

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def bar(total: int):
    """A progress bar of `total` cases on stderr."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Lines(total)
    return tqdm(total=total, file=sys.stderr, unit="case", dynamic_ncols=True)
