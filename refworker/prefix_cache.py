"""A bounded prefix (radix) cache simulation: which leading prompt blocks an engine would reuse."""

from __future__ import annotations

from collections import OrderedDict

BLOCK_SIZE = 16


class PrefixCache:
    """Chained block hashes in an LRU; a block hits only if every block before it hit too."""

    def __init__(self, max_blocks: int = 200_000, block_size: int = BLOCK_SIZE) -> None:
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self._max_blocks = max_blocks
        self._block_size = block_size

    def __len__(self) -> int:
        return len(self._blocks)

    def lookup_and_insert(self, ids: list[int]) -> int:
        """Cached token count for ``ids``; then its full blocks become cached (as after a prefill)."""
        blocks = self._blocks
        size = self._block_size
        parent = 0
        cached = 0
        missed = False
        for start in range(0, len(ids) - size + 1, size):
            parent = hash((parent, *ids[start : start + size]))
            if parent in blocks:
                blocks.move_to_end(parent)
                if not missed:
                    cached += size
            else:
                missed = True
                blocks[parent] = None
        while len(blocks) > self._max_blocks:
            blocks.popitem(last=False)
        return cached

    def clear(self) -> None:
        self._blocks.clear()
