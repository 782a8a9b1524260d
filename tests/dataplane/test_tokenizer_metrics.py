"""Tokenizer cache counters reach Prometheus under SMG's names, read from the caches at scrape time."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dataplane.tokenizer import ModelTokenizer
from dataplane.tokenizer_cache import CacheConfig
from dataplane.tokenizer_metrics import TokenizerCacheCollector


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_hits_misses_evictions_entries_and_memory(model_dir: Path) -> None:
    tok = ModelTokenizer.from_dir(model_dir, cache=CacheConfig(l0_max_entries=2))
    registry = CollectorRegistry()
    registry.register(TokenizerCacheCollector(lambda: [tok, tok]))  # one tokenizer of two models counts once
    for text in ("<|im_start|>a<|im_end|>", "<|im_start|>a<|im_end|>", "b", "c"):
        tok.encode(text)
    got = scrape(registry)

    def key(name: str, layer: str, **more: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted({"layer": layer, **more}.items()))

    assert got[key("smg_tokenizer_cache_lookups_total", "l0", result="hit")] == 1
    assert got[key("smg_tokenizer_cache_lookups_total", "l0", result="miss")] == 3
    assert got[key("smg_tokenizer_cache_lookups_total", "l1", result="miss")] == 3  # "a", "b", "c"
    assert got[key("smg_tokenizer_cache_evictions_total", "l0")] == 1
    assert got[key("smg_tokenizer_cache_entries", "l0")] == 2
    assert got[key("smg_tokenizer_cache_reused_chars_total", "l0")] == len("<|im_start|>a<|im_end|>")
    assert 0 < got[key("smg_tokenizer_cache_memory_bytes", "l1")] < 2000


def test_no_tokenizer_yet_exports_empty_families() -> None:
    registry = CollectorRegistry()
    registry.register(TokenizerCacheCollector(list))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert families["smg_tokenizer_cache_lookups"].type == "counter"
    assert families["smg_tokenizer_cache_lookups"].samples == []
