"""Chunking of append-only lists, so appending an item stores about one item.

A list is cut at item boundaries into sealed chunks of at least ``target`` bytes; the items
after the last cut are the open tail. A cut depends only on the items since the previous
cut, so a list that grows at its end keeps every earlier chunk byte for byte: their digests
are already stored and cost no write. Only the tail and newly sealed chunks are new.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds at import; annotations are strings anyway
if TYPE_CHECKING:
    from collections.abc import Sequence


def seal_ranges(item_sizes: Sequence[int], target: int) -> tuple[list[tuple[int, int]], int]:
    """Return the sealed chunks as (start, end) index ranges, and where the open tail starts."""
    ranges = []
    start, size = 0, 0
    for index, item_size in enumerate(item_sizes):
        size += item_size + 1
        if size >= target:
            ranges.append((start, index + 1))
            start, size = index + 1, 0
    return ranges, start


def join_items(item_bytes: Sequence[bytes]) -> bytes:
    """Canonical JSON of a list, from the canonical JSON of its items."""
    return b"[" + b",".join(item_bytes) + b"]"
