"""Tokenizer caches, named and switched as SMG's flags name them, and encoding that keeps the loop free.

::

    encode(text) ──► L0: the exact (text, add_special_tokens) seen before? ──► its ids
                      │ miss
                      ▼
                     split at the added tokens (<|im_start|>, <|eot_id|>, <think>, …)
                     L1: each segment between them seen before? ──► its ids
                      │ the missing segments, in one encode_batch call (off the event loop when long)
                      ▼
                     concatenate (+ the post-processor's special tokens) ──► L0 insert ──► ids

``tokenizers`` itself splits the input at its added tokens before anything else and tokenizes each
segment on its own, so the concatenation is exactly ``encode(text)``; L1 is only built for tokenizers
where that holds (checked at load). SMG's L1 keys the ids of every prefix that ends at a special-token
boundary; keying the segments holds the same information without copying the earlier turns into every
entry (a prefix's ids are its segments' ids in order), so the next turn of a conversation hits every
earlier segment, a shared system prompt or tool list hits across conversations, and memory grows with
the distinct text rather than with turns × text.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from tokenizers import Tokenizer

from dataplane.errors import ConfigError

Layer = Literal["l0", "l1"]
Ids = tuple[int, ...]
K = TypeVar("K", bound=Hashable)

# Uncached text longer than this is tokenized on a worker thread (``encode_batch`` releases the GIL):
# about 1.5 ms of BPE on one core, the longest the event loop is left busy by one request.
OFFLOAD_CHARS = 4096
# Token ids decoded on a worker thread beyond this many (decoding runs at ~5 M tokens/s).
OFFLOAD_IDS = 16384
# Per-entry bookkeeping of an ``OrderedDict`` slot and its linked-list node, measured on CPython 3.11.
_ENTRY_OVERHEAD = 104
# A token id above 256 is an int object of its own: 28 bytes, 32 as allocated.
_BYTES_PER_ID = 8 + 32


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """SMG's ``--tokenizer-cache-*`` settings. Both layers are on by default here (SMG's CLI has them
    off): they never change a result, and the memory they may take is bounded."""

    enable_l0: bool = True
    l0_max_entries: int = 10_000
    l0_max_memory: int = 256 * 1024 * 1024
    enable_l1: bool = True
    l1_max_memory: int = 50 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("l0_max_entries", "l0_max_memory", "l1_max_memory"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tokenizer_cache_{name} must be at least 1")


DEFAULT_CACHE = CacheConfig()


@dataclass(frozen=True, slots=True)
class LayerStats:
    """One cache layer's counters. L1 counts one lookup per segment between added tokens."""

    layer: Layer
    hits: int
    misses: int
    evictions: int
    entries: int
    memory_bytes: int
    max_memory_bytes: int
    hit_chars: int  # input characters served from the cache


class LruCache(Generic[K]):
    """Least-recently-used ids by key, bounded by entries and by an estimate of the bytes they hold.

    Thread-safe: the event loop and the tokenizing threads may both use it.
    """

    def __init__(
        self, layer: Layer, *, max_memory: int, max_entries: int | None, size: Callable[[K, Ids], int]
    ) -> None:
        self.layer: Layer = layer
        self._data: OrderedDict[K, Ids] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size
        self._max_memory = max_memory
        self._max_entries = max_entries
        self._memory = 0
        self.hits = self.misses = self.evictions = self.hit_chars = 0

    def get_many(self, keys: Sequence[K], chars: Sequence[int]) -> list[Ids | None]:
        """One lookup per key under one lock; ``chars``: the characters each key stands for."""
        found: list[Ids | None] = []
        data = self._data
        with self._lock:
            for key, n in zip(keys, chars, strict=True):
                ids = data.get(key)
                if ids is None:
                    self.misses += 1
                else:
                    data.move_to_end(key)
                    self.hits += 1
                    self.hit_chars += n
                found.append(ids)
        return found

    def get(self, key: K, chars: int) -> Ids | None:
        return self.get_many((key,), (chars,))[0]

    def put_many(self, items: Sequence[tuple[K, Ids]]) -> None:
        data = self._data
        with self._lock:
            for key, ids in items:
                size = self._size(key, ids)
                if size > self._max_memory // 8 or key in data:
                    continue  # one huge input would flush everything else
                data[key] = ids
                self._memory += size
            while self._memory > self._max_memory or (
                self._max_entries is not None and len(data) > self._max_entries
            ):
                old_key, old_ids = data.popitem(last=False)
                self._memory -= self._size(old_key, old_ids)
                self.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._memory = 0

    def stats(self) -> LayerStats:
        with self._lock:
            return LayerStats(
                self.layer,
                self.hits,
                self.misses,
                self.evictions,
                len(self._data),
                self._memory,
                self._max_memory,
                self.hit_chars,
            )


def _l0_size(key: tuple[str, bool], ids: Ids) -> int:
    return _ENTRY_OVERHEAD + 56 + sys.getsizeof(key[0]) + _BYTES_PER_ID * len(ids)


def _l1_size(key: str, ids: Ids) -> int:
    return _ENTRY_OVERHEAD + sys.getsizeof(key) + _BYTES_PER_ID * len(ids)


def segments_are_exact(tokenizer: Tokenizer) -> bool:
    """Whether encoding the text between added tokens segment by segment equals encoding it whole.

    ``tokenizers`` cuts un-normalized added tokens out first; normalized or stripping ones, or a
    pre-tokenizer that treats the input's first segment differently (Metaspace's ``first`` scheme) break
    the equality, so the flags are checked and then probes are compared.
    """
    added = list(tokenizer.get_added_tokens_decoder().values())
    if any(t.normalized or t.lstrip or t.rstrip or t.single_word for t in added):
        return False
    if not added:
        return True
    token = added[0].content
    probes = ("hello world", " hi\n\nthere ", "x", "12 345", "über 你好")
    for a in probes:
        for b in probes:
            text = f"{a}{token}{b}{token}"
            whole = tokenizer.encode(text, add_special_tokens=False).ids
            parts = [
                *tokenizer.encode(a, add_special_tokens=False).ids,
                *tokenizer.encode(token, add_special_tokens=False).ids,
                *tokenizer.encode(b, add_special_tokens=False).ids,
                *tokenizer.encode(token, add_special_tokens=False).ids,
            ]
            if whole != parts:
                return False
    return True


def special_affixes(tokenizer: Tokenizer) -> tuple[Ids, Ids] | None:
    """The ids the post-processor adds before and after one sequence (Llama's BOS), when they are the
    same for every input; ``None`` when they are not (then inputs with specials bypass L1)."""
    found: set[tuple[Ids, Ids]] = set()
    for probe in ("a", "hello world", " 12\n", "你好"):
        plain = tokenizer.encode(probe, add_special_tokens=False).ids
        full = tokenizer.encode(probe, add_special_tokens=True).ids
        at = next((i for i in range(len(full) - len(plain) + 1) if full[i : i + len(plain)] == plain), None)
        if at is None or not plain:
            return None
        found.add((tuple(full[:at]), tuple(full[at + len(plain) :])))
    return found.pop() if len(found) == 1 else None


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def executor() -> ThreadPoolExecutor:
    """The threads long tokenizations run on (not the loop's default pool, which loads tokenizers)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=min(4, os.cpu_count() or 1), thread_name_prefix="smg-tokenize"
            )
        return _executor


class CachedEncoder:
    """``tokenizer.encode(text, add_special_tokens).ids`` through the L0 and L1 caches.

    The tokenizer must neither truncate nor pad (``ModelTokenizer.from_dir`` turns both off): a cut
    prompt would be wrong, and padding would change what ``encode_batch`` returns.
    """

    def __init__(self, tokenizer: Tokenizer, config: CacheConfig = DEFAULT_CACHE) -> None:
        if tokenizer.truncation is not None or tokenizer.padding is not None:
            raise ConfigError("the tokenizer truncates or pads; turn both off before caching it")
        self._tokenizer = tokenizer
        self.config = config
        self.l0: LruCache[tuple[str, bool]] | None = (
            LruCache("l0", max_memory=config.l0_max_memory, max_entries=config.l0_max_entries, size=_l0_size)
            if config.enable_l0
            else None
        )
        self.l1: LruCache[str] | None = None
        self._split: re.Pattern[str] | None = None
        self._added: dict[str, Ids] = {}
        self._affixes: tuple[Ids, Ids] | None = None
        if config.enable_l1 and segments_are_exact(tokenizer):
            self.l1 = LruCache("l1", max_memory=config.l1_max_memory, max_entries=None, size=_l1_size)
            decoder = tokenizer.get_added_tokens_decoder()
            self._added = {t.content: (i,) for i, t in decoder.items()}
            alternatives = "|".join(re.escape(t) for t in sorted(self._added, key=len, reverse=True))
            self._split = re.compile(f"({alternatives})") if alternatives else None
            self._affixes = special_affixes(tokenizer)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """The ids of ``text``, tokenizing on the calling thread."""
        plan = self._plan(text, add_special_tokens)
        if isinstance(plan, list):
            return plan
        return plan.finish(self._encode_batch(plan.texts, plan.specials))

    async def encode_async(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """The ids of ``text``; uncached text longer than ``OFFLOAD_CHARS`` is tokenized on a worker
        thread so that the event loop keeps serving other requests meanwhile."""
        plan = self._plan(text, add_special_tokens)
        if isinstance(plan, list):
            return plan
        if plan.chars <= OFFLOAD_CHARS:
            return plan.finish(self._encode_batch(plan.texts, plan.specials))
        loop = asyncio.get_running_loop()
        found = await loop.run_in_executor(executor(), self._encode_batch, plan.texts, plan.specials)
        return plan.finish(found)

    def stats(self) -> list[LayerStats]:
        return [layer.stats() for layer in (self.l0, self.l1) if layer is not None]

    def clear(self) -> None:
        for layer in (self.l0, self.l1):
            if layer is not None:
                layer.clear()

    # --- implementation ---------------------------------------------------------------------------------

    def _plan(self, text: str, specials: bool) -> list[int] | _Plan:
        """The ids when the caches hold them all, else what is left to tokenize and how to finish."""
        l0_key = (text, specials)
        if self.l0 is not None and (hit := self.l0.get(l0_key, len(text))) is not None:
            return list(hit)
        if self.l1 is None or (specials and self._affixes is None):
            return _Plan([text], specials, lambda found: list(found[0]), self.l0, l0_key)
        parts = self._split.split(text) if self._split is not None else [text]
        # Even indices: the text between added tokens (maybe empty); odd indices: the added tokens.
        pieces = [p for p in parts[::2] if p]
        cached = self.l1.get_many(pieces, [len(p) for p in pieces])
        known = {p: ids for p, ids in zip(pieces, cached, strict=True) if ids is not None}
        missing = list(dict.fromkeys(p for p in pieces if p not in known))
        l1, added = self.l1, self._added
        prefix, suffix = self._affixes if specials and self._affixes is not None else ((), ())

        def assemble(found: list[Ids]) -> list[int]:
            new = list(zip(missing, found, strict=True))
            l1.put_many(new)
            known.update(new)
            ids = list(prefix)
            for i, part in enumerate(parts):
                if i % 2:
                    ids.extend(added[part])
                elif part:
                    ids.extend(known[part])
            ids.extend(suffix)
            return ids

        plan = _Plan(missing, False, assemble, self.l0, l0_key)
        return plan.finish([]) if not missing else plan

    def _encode_batch(self, texts: list[str], specials: bool) -> list[Ids]:
        if len(texts) == 1 and len(texts[0]) <= OFFLOAD_CHARS:
            return [tuple(self._tokenizer.encode(texts[0], add_special_tokens=specials).ids)]
        # encode_batch_fast releases the GIL (plain encode does not) and spreads the texts over cores.
        return [tuple(e.ids) for e in self._tokenizer.encode_batch_fast(texts, add_special_tokens=specials)]


@dataclass(slots=True)
class _Plan:
    """Texts still to tokenize for one input, and how to turn their ids into the input's ids."""

    texts: list[str]
    specials: bool
    assemble: Callable[[list[Ids]], list[int]]
    l0: LruCache[tuple[str, bool]] | None
    l0_key: tuple[str, bool]

    @property
    def chars(self) -> int:
        return sum(map(len, self.texts))

    def finish(self, found: list[Ids]) -> list[int]:
        ids = self.assemble(found)
        if self.l0 is not None:
            self.l0.put_many([(self.l0_key, tuple(ids))])
        return ids
