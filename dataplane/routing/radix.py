"""The approximate prefix tree behind ``cache_aware``: which workers probably hold which prompt prefixes.

A compressed radix tree over a sequence of symbols: characters of the prompt text (HTTP workers) or
pages of ``block_size`` token ids (gRPC workers; only page-aligned prefixes can be cached by an engine).
Every node lists its tenants (workers) with the time each last routed through it. A tenant on a node is
on all of its ancestors, so the tenants of the deepest matched node are the workers with the longest
match, and eviction only ever removes a tenant from a node where none of the children has it.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Hashable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Match", "RadixTree", "pages"]

Key = Sequence[Hashable]


def pages(token_ids: Sequence[int], block_size: int) -> tuple[tuple[int, ...], ...]:
    """The full pages of ``token_ids``; a trailing partial page is never cached by an engine."""
    return tuple(
        tuple(token_ids[i : i + block_size]) for i in range(0, len(token_ids) - block_size + 1, block_size)
    )


class _Node:
    __slots__ = ("children", "label", "parent", "tenants")

    def __init__(self, label: Key, parent: _Node | None) -> None:
        self.label = label
        self.parent = parent
        self.children: dict[Hashable, _Node] = {}
        self.tenants: dict[str, float] = {}  # tenant -> last time a request was routed through here


@dataclass(slots=True)
class Match:
    """Where a key's descent stopped. Valid until the tree next changes: insert or ignore it at once."""

    key: Key
    length: int  # symbols of ``key`` matched
    path: list[_Node]  # nodes whose whole edge matched, root excluded
    partial: _Node | None  # the node whose edge the match stopped inside
    offset: int  # symbols matched along ``partial``'s edge
    weight: int  # units (tokens or characters) per symbol

    @property
    def matched(self) -> int:
        """Units matched: tokens for a page tree, characters for a text tree."""
        return self.length * self.weight

    def tenants(self, longer_than: float = 0) -> dict[str, int]:
        """Tenants holding more than ``longer_than`` units of the key, with the units each holds.

        Walks up from the deepest match and stops at the first node too shallow, so the cost does not
        grow with tenants that match too little to matter.
        """
        found: dict[str, int] = {}
        depth = self.length
        nodes = [(self.partial, self.offset)] if self.partial is not None else []
        nodes += [(node, len(node.label)) for node in reversed(self.path)]
        for node, span in nodes:
            if depth * self.weight <= longer_than:
                break
            for tenant in node.tenants:
                found.setdefault(tenant, depth * self.weight)
            depth -= span
        return found


class RadixTree:
    """Match a key, then insert it under the chosen tenant starting where the match stopped."""

    def __init__(self, weight: int = 1) -> None:
        self._root = _Node((), None)
        self._weight = weight
        self._sizes: dict[str, int] = {}

    def match(self, key: Key) -> Match:
        node, i, path = self._root, 0, list[_Node]()
        while i < len(key):
            child = node.children.get(key[i])
            if child is None:
                break
            n = _common_prefix(child.label, key, i)
            i += n
            if n < len(child.label):
                return Match(key, i, path, child, n, self._weight)
            path.append(child)
            node = child
        return Match(key, i, path, None, 0, self._weight)

    def insert(self, match: Match, tenant: str, now: float) -> None:
        """Record that ``tenant`` now holds ``match.key``."""
        node = self._root
        for node in match.path:
            self._hold(node, tenant, now)
        if match.partial is not None:
            node = self._split(match.partial, match.offset)
            self._hold(node, tenant, now)
        if match.length < len(match.key):
            leaf = _Node(match.key[match.length :], node)
            node.children[match.key[match.length]] = leaf
            self._hold(leaf, tenant, now)

    def size(self, tenant: str) -> int:
        """Units held by ``tenant``."""
        return self._sizes.get(tenant, 0)

    def tenants(self) -> set[str]:
        return set(self._sizes)

    def evict(self, max_size: int) -> None:
        """Drop each over-size tenant's least recently used leaves until it holds at most ``max_size``."""
        over = {t for t, s in self._sizes.items() if s > max_size}
        if not over:
            return
        heap: list[tuple[float, int, str, _Node]] = []
        for node in self._preorder():
            for tenant in over.intersection(node.tenants):
                if _is_leaf_of(node, tenant):
                    heap.append((node.tenants[tenant], len(heap), tenant, node))
        heapq.heapify(heap)
        order = len(heap)
        while heap:
            _, _, tenant, node = heapq.heappop(heap)
            if self.size(tenant) <= max_size:
                continue
            parent = self._drop(node, tenant)
            if parent is not self._root and tenant in parent.tenants and _is_leaf_of(parent, tenant):
                order += 1
                heapq.heappush(heap, (parent.tenants[tenant], order, tenant, parent))

    def retain(self, live: Collection[str]) -> None:
        """Forget every tenant not in ``live`` (workers that are gone)."""
        dead = self._sizes.keys() - set(live)
        if not dead:
            return
        for node in reversed(list(self._preorder())):
            for tenant in dead.intersection(node.tenants):
                self._drop(node, tenant)

    def audit(self) -> tuple[int, dict[str, int]]:
        """Recount from the nodes: (node count, units per tenant). For tests and diagnostics."""
        count, sizes = 0, dict.fromkeys(self._sizes, 0)
        for node in self._preorder():
            count += 1
            for tenant in node.tenants:
                sizes[tenant] = sizes.get(tenant, 0) + len(node.label) * self._weight
        return count, sizes

    def _hold(self, node: _Node, tenant: str, now: float) -> None:
        if tenant not in node.tenants:
            self._sizes[tenant] = self._sizes.get(tenant, 0) + len(node.label) * self._weight
        node.tenants[tenant] = now

    def _drop(self, node: _Node, tenant: str) -> _Node:
        """Remove ``tenant`` from ``node``, where no child holds it; return the parent."""
        del node.tenants[tenant]
        left = self._sizes[tenant] - len(node.label) * self._weight
        if left > 0:
            self._sizes[tenant] = left
        else:
            del self._sizes[tenant]
        parent = node.parent
        assert parent is not None
        if not node.tenants and not node.children:
            del parent.children[node.label[0]]
        return parent

    def _split(self, node: _Node, at: int) -> _Node:
        """Cut ``node``'s edge after ``at`` symbols; the new upper node is returned."""
        parent = node.parent
        assert parent is not None
        upper = _Node(node.label[:at], parent)
        upper.tenants = dict(node.tenants)
        parent.children[upper.label[0]] = upper
        node.label = node.label[at:]
        node.parent = upper
        upper.children[node.label[0]] = node
        return upper

    def _preorder(self) -> Iterator[_Node]:
        stack = list(self._root.children.values())
        while stack:
            node = stack.pop()
            yield node
            stack.extend(node.children.values())


def _is_leaf_of(node: _Node, tenant: str) -> bool:
    return not any(tenant in child.tenants for child in node.children.values())


def _common_prefix(label: Key, key: Key, start: int) -> int:
    """Length of the common prefix of ``label`` and ``key[start:]``, by C-speed slice comparisons."""
    n = min(len(label), len(key) - start)
    if key[start : start + n] == label[:n]:
        return n
    lo, hi = 0, n - 1  # the answer is below n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if key[start : start + mid] == label[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
