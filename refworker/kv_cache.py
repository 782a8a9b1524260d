"""The simulated prefix cache: full token blocks under chained hashes, reference counts, LRU eviction.

A block's hash covers its tokens and its parent's hash, so a block can only be reused after every block
before it. Blocks that no running request uses sit in an LRU; a chain is always touched deepest block
first, which keeps every parent at least as recent as its children, so eviction takes leaves first and a
live block's parent is always live. Every change is reported to a ``KvSink`` (the KV event log).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Protocol

# The parent hash of a chain's first block.
ROOT = 0


class KvSink(Protocol):
    def stored(self, parent: int | None, blocks: list[tuple[int, bytes]]) -> None: ...
    def removed(self, hashes: list[int]) -> None: ...
    def cleared(self) -> None: ...


class _Block:
    __slots__ = ("parent", "refs", "tokens")

    def __init__(self, parent: int | None, tokens: bytes, refs: int) -> None:
        self.parent = parent
        self.tokens = tokens  # array("I") bytes: a tenth of a tuple of ints
        self.refs = refs


def block_tokens(tokens: bytes) -> list[int]:
    return array("I", tokens).tolist()


class KvCache:
    """``capacity_tokens`` of full blocks of ``block_size`` tokens."""

    def __init__(self, capacity_tokens: int, block_size: int, sink: KvSink) -> None:
        self.block_size = block_size
        self.capacity_blocks = capacity_tokens // block_size
        self._sink = sink
        self._blocks: dict[int, _Block] = {}  # insertion order: parents before children
        self._lru: OrderedDict[int, None] = OrderedDict()  # unreferenced blocks, oldest first
        self.pinned_blocks = 0

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def evictable_blocks(self) -> int:
        return len(self._lru)

    def hashes(self, ids: Sequence[int], start: int = 0, parent: int = ROOT) -> list[int]:
        """Chained hashes of the full blocks of ``ids`` from block ``start`` (whose parent is ``parent``)."""
        size = self.block_size
        out = []
        for begin in range(start * size, len(ids) - size + 1, size):
            parent = hash((parent, *ids[begin : begin + size]))
            out.append(parent)
        return out

    def match(self, hashes: Sequence[int]) -> int:
        """How many leading ``hashes`` are cached."""
        blocks = self._blocks
        for count, block_hash in enumerate(hashes):
            if block_hash not in blocks:
                return count
        return len(hashes)

    def acquire(self, hashes: Sequence[int]) -> None:
        """A running request uses these (cached) blocks: they cannot be evicted until released."""
        for block_hash in hashes:
            block = self._blocks[block_hash]
            if not block.refs:
                del self._lru[block_hash]
                self.pinned_blocks += 1
            block.refs += 1

    def release(self, hashes: Sequence[int]) -> None:
        for block_hash in reversed(hashes):
            block = self._blocks[block_hash]
            block.refs -= 1
            if not block.refs:
                self._lru[block_hash] = None
                self.pinned_blocks -= 1

    def store(self, ids: Sequence[int], hashes: Sequence[int], start: int, pin: bool) -> int:
        """Cache blocks ``start..`` of ``ids`` (``hashes`` are theirs from block 0); returns how many are new.

        With ``pin`` every one of them (new or found) is acquired. Blocks already cached form a prefix of
        the run (a cached block's parent is cached), so the new ones are one chain: one stored event.
        """
        blocks = self._blocks
        size = self.block_size
        parent = hashes[start - 1] if start else None
        new: list[tuple[int, bytes]] = []
        for index in range(start, len(hashes)):
            block_hash = hashes[index]
            block = blocks.get(block_hash)
            if block is None:
                tokens = array("I", ids[index * size : (index + 1) * size]).tobytes()
                blocks[block_hash] = _Block(parent, tokens, 0)
                new.append((block_hash, tokens))
            parent = block_hash
        lru = self._lru
        if pin:
            self.acquire(hashes[start : len(hashes) - len(new)])
            for block_hash, _ in new:
                blocks[block_hash].refs = 1
            self.pinned_blocks += len(new)
        else:
            for index in range(len(hashes) - 1, start - 1, -1):
                block_hash = hashes[index]
                if not blocks[block_hash].refs:
                    lru[block_hash] = None
                    lru.move_to_end(block_hash)
        if new:
            self._sink.stored(parent_of(hashes, len(hashes) - len(new)), new)
        return len(new)

    def touch(self, hashes: Sequence[int]) -> None:
        """Mark unreferenced cached blocks as just used (deepest first, so parents stay newer)."""
        lru = self._lru
        for block_hash in reversed(hashes):
            if block_hash in lru:
                lru.move_to_end(block_hash)

    def evict(self, count: int) -> int:
        """Drop up to ``count`` least recently used unreferenced blocks; returns how many went."""
        lru = self._lru
        blocks = self._blocks
        gone: list[int] = []
        while len(gone) < count and lru:
            block_hash, _ = lru.popitem(last=False)
            del blocks[block_hash]
            gone.append(block_hash)
        if gone:
            self._sink.removed(gone)
        return len(gone)

    def lookup_and_insert(self, ids: Sequence[int]) -> int:
        """Default mode: cached tokens of ``ids``, which are then cached whole at once (no running state)."""
        hashes = self.hashes(ids)
        found = self.match(hashes)
        self.touch(hashes[:found])
        self.store(ids, hashes, found, pin=False)
        if (excess := len(self._blocks) - self.capacity_blocks) > 0:
            self.evict(excess)
        return found * self.block_size

    def clear(self) -> None:
        """Drop every block (only when no request runs: pinned blocks would dangle)."""
        self._blocks.clear()
        self._lru.clear()
        self.pinned_blocks = 0
        self._sink.cleared()

    def live_blocks(self) -> Iterator[tuple[int, int | None, bytes]]:
        """``(hash, parent hash, tokens)`` of every cached block, parents before children."""
        for block_hash, block in self._blocks.items():
            yield block_hash, block.parent, block.tokens


def parent_of(hashes: Sequence[int], index: int) -> int | None:
    return hashes[index - 1] if index else None
