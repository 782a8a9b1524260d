"""Tokenizer cache metrics as OpenTelemetry instruments, named after SMG's Prometheus ones.

Observed when a reader collects (nothing is counted twice on the hot path: the caches keep plain
counters). With no SDK configured by the entrypoint the API's no-op provider drops them.

    smg_tokenizer_cache_lookups{tokenizer, layer, result=hit|miss}   counter
    smg_tokenizer_cache_evictions{tokenizer, layer}                   counter
    smg_tokenizer_cache_reused_chars{tokenizer, layer}                counter (input served from the cache)
    smg_tokenizer_cache_entries{tokenizer, layer}                     gauge
    smg_tokenizer_cache_memory_bytes{tokenizer, layer}                gauge (estimate; bounded by the flags)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from dataplane.tokenizer import ModelTokenizer
from dataplane.tokenizer_cache import LayerStats


def observe_tokenizer_caches(meter: Meter, tokenizers: Callable[[], Iterable[ModelTokenizer]]) -> None:
    """Register the instruments; ``tokenizers`` lists the loaded tokenizers at each collection."""

    def layers() -> Iterator[tuple[dict[str, str], LayerStats]]:
        seen: set[int] = set()
        for tok in tokenizers():
            if id(tok.encoder) in seen:  # one tokenizer may serve several models
                continue
            seen.add(id(tok.encoder))
            for stats in tok.encoder.stats():
                yield {"tokenizer": tok.source, "layer": stats.layer}, stats

    def lookups(_: CallbackOptions) -> Iterable[Observation]:
        for labels, s in layers():
            yield Observation(s.hits, labels | {"result": "hit"})
            yield Observation(s.misses, labels | {"result": "miss"})

    def each(value: Callable[[LayerStats], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        return lambda _: [Observation(value(s), labels) for labels, s in layers()]

    meter.create_observable_counter(
        "smg_tokenizer_cache_lookups", [lookups], description="Tokenizer cache lookups by layer and result"
    )
    meter.create_observable_counter(
        "smg_tokenizer_cache_evictions",
        [each(lambda s: s.evictions)],
        description="Tokenizer cache entries removed for capacity",
    )
    meter.create_observable_counter(
        "smg_tokenizer_cache_reused_chars",
        [each(lambda s: s.hit_chars)],
        description="Input characters served by tokenizer cache hits",
    )
    meter.create_observable_gauge(
        "smg_tokenizer_cache_entries", [each(lambda s: s.entries)], description="Tokenizer cache entries"
    )
    meter.create_observable_gauge(
        "smg_tokenizer_cache_memory_bytes",
        [each(lambda s: s.memory_bytes)],
        unit="By",
        description="Estimated memory the tokenizer cache holds",
    )
