"""Tokenizer cache counters reach OpenTelemetry instruments (read here by the SDK's in-memory reader)."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from dataplane.tokenizer import ModelTokenizer
from dataplane.tokenizer_cache import CacheConfig
from dataplane.tokenizer_metrics import observe_tokenizer_caches


def points(reader: InMemoryMetricReader) -> dict[tuple[str, tuple[tuple[str, str], ...]], int]:
    data = reader.get_metrics_data()
    assert data is not None
    found = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    labels = tuple(sorted((k, str(v)) for k, v in (point.attributes or {}).items()))
                    found[metric.name, labels] = int(point.value)
    return found


def test_hits_misses_evictions_entries_and_memory(model_dir: Path) -> None:
    tok = ModelTokenizer.from_dir(model_dir, cache=CacheConfig(l0_max_entries=2))
    reader = InMemoryMetricReader()
    observe_tokenizer_caches(MeterProvider(metric_readers=[reader]).get_meter("test"), lambda: [tok, tok])
    for text in ("<|im_start|>a<|im_end|>", "<|im_start|>a<|im_end|>", "b", "c"):
        tok.encode(text)
    got = points(reader)

    def key(name: str, layer: str, **more: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted({"layer": layer, "tokenizer": str(model_dir), **more}.items()))

    assert got[key("smg_tokenizer_cache_lookups", "l0", result="hit")] == 1
    assert got[key("smg_tokenizer_cache_lookups", "l0", result="miss")] == 3
    assert got[key("smg_tokenizer_cache_lookups", "l1", result="miss")] == 3  # "a", "b", "c"
    assert got[key("smg_tokenizer_cache_evictions", "l0")] == 1
    assert got[key("smg_tokenizer_cache_entries", "l0")] == 2
    assert got[key("smg_tokenizer_cache_reused_chars", "l0")] == len("<|im_start|>a<|im_end|>")
    assert 0 < got[key("smg_tokenizer_cache_memory_bytes", "l1")] < 2000
