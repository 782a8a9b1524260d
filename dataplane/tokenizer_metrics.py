"""Tokenizer cache metrics under SMG's Prometheus names, read from the caches' plain counters at scrape time
(nothing is counted twice on the hot path). Summed over the loaded tokenizers, by layer (``l0``, ``l1``)::

    smg_tokenizer_cache_lookups_total{layer, result=hit|miss}   counter
    smg_tokenizer_cache_evictions_total{layer}                  counter
    smg_tokenizer_cache_reused_chars_total{layer}               counter (input served from the cache)
    smg_tokenizer_cache_entries{layer}                          gauge
    smg_tokenizer_cache_memory_bytes{layer}                     gauge (estimate; bounded by the flags)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dataplane.tokenizer import ModelTokenizer
from dataplane.tokenizer_cache import LayerStats


class TokenizerCacheCollector(Collector):
    """``tokenizers`` lists the loaded tokenizers at each scrape; one shared by several models counts once."""

    def __init__(self, tokenizers: Callable[[], Iterable[ModelTokenizer]]) -> None:
        self._tokenizers = tokenizers

    def collect(self) -> Iterator[Metric]:
        layers: dict[str, list[LayerStats]] = {}
        seen: set[int] = set()
        for tok in self._tokenizers():
            if id(tok.encoder) not in seen:
                seen.add(id(tok.encoder))
                for stats in tok.encoder.stats():
                    layers.setdefault(stats.layer, []).append(stats)
        lookups = CounterMetricFamily(
            "smg_tokenizer_cache_lookups",
            "Tokenizer cache lookups by layer and result",
            labels=["layer", "result"],
        )
        evictions = CounterMetricFamily(
            "smg_tokenizer_cache_evictions", "Tokenizer cache entries removed for capacity", labels=["layer"]
        )
        reused = CounterMetricFamily(
            "smg_tokenizer_cache_reused_chars",
            "Input characters served by tokenizer cache hits",
            labels=["layer"],
        )
        entries = GaugeMetricFamily(
            "smg_tokenizer_cache_entries", "Tokenizer cache entries", labels=["layer"]
        )
        memory = GaugeMetricFamily(
            "smg_tokenizer_cache_memory_bytes", "Estimated memory the tokenizer cache holds", labels=["layer"]
        )
        for layer, all_stats in layers.items():
            lookups.add_metric([layer, "hit"], sum(s.hits for s in all_stats))
            lookups.add_metric([layer, "miss"], sum(s.misses for s in all_stats))
            evictions.add_metric([layer], sum(s.evictions for s in all_stats))
            reused.add_metric([layer], sum(s.hit_chars for s in all_stats))
            entries.add_metric([layer], sum(s.entries for s in all_stats))
            memory.add_metric([layer], sum(s.memory_bytes for s in all_stats))
        yield from (lookups, evictions, reused, entries, memory)
