"""The CPU output cache, under the user's control.

Large CPU outputs (16 MiB and more: the gradients of big tensors) come from blocks mapped with
transparent huge pages, and a block freed by its tensor is kept for the next output of its size:
a training loop then pays no page faults for them. The cache holds at most FASTLOSS_OUTPUT_CACHE_MB
(default 1024; read when fastloss is imported; 0 turns the cache off) of free blocks.
"""

from __future__ import annotations

from typing import NamedTuple

from . import _backend

__all__ = ["CacheInfo", "cache_info", "empty_cache"]


class CacheInfo(NamedTuple):
    """The CPU output cache's free blocks: how many, their bytes, and the most it keeps."""

    blocks: int
    bytes: int
    limit: int


def cache_info() -> CacheInfo:
    """The free blocks the CPU output cache holds now (blocks in use by tensors are not counted)
    and its limit in bytes. Without the compiled extension there is no cache: all zeros."""
    ext = _backend.extension()
    if ext is None:
        return CacheInfo(0, 0, 0)
    return CacheInfo(*ext.output_cache_info())


def empty_cache() -> int:
    """Return the CPU output cache's free blocks to the operating system; returns the bytes
    released. Safe while tensors from the cache are alive: their blocks are not free, and when
    those tensors are freed their blocks are kept or released under the limit, as usual."""
    ext = _backend.extension()
    return 0 if ext is None else int(ext.output_cache_release())
