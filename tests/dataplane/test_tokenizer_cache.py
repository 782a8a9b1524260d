"""The L0/L1 tokenizer caches: cached results equal uncached ones, bounds hold, the loop stays free."""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dataplane.errors import ConfigError
from dataplane.tokenizer import ModelTokenizer
from dataplane.tokenizer_cache import (
    OFFLOAD_CHARS,
    CacheConfig,
    CachedEncoder,
    segments_are_exact,
    special_affixes,
)

QWEN_ADDED = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "<|endoftext|>"]
LLAMA_ADDED = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>"]
FRAGMENTS = [
    "user\n", "assistant", " hello", "Hello", "你好，世界", "🤖🚀", "👨‍👩‍👧", "  ", "\n\n", "ünï", "'s",
    "123", "4567", "<", "|", "im_", "<|", "start_header", " \t", "é", "e\u0301",
]  # fmt: skip


def texts(added: list[str]) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(added + FRAGMENTS), max_size=30).map("".join)


def tokenizers(qwen: ModelTokenizer, llama3: ModelTokenizer) -> dict[str, tuple[Tokenizer, list[str]]]:
    return {"qwen": (qwen.tokenizer, QWEN_ADDED), "llama3": (llama3.tokenizer, LLAMA_ADDED)}


@pytest.mark.parametrize("name", ["qwen", "llama3"])
@pytest.mark.parametrize("specials", [False, True])
def test_cached_results_equal_uncached(
    qwen: ModelTokenizer, llama3: ModelTokenizer, name: str, specials: bool
) -> None:
    tokenizer, added = tokenizers(qwen, llama3)[name]
    # Small bounds so that the sequence also runs through evictions.
    encoder = CachedEncoder(tokenizer, CacheConfig(l0_max_entries=8, l1_max_memory=20_000))
    assert encoder.l0 is not None and encoder.l1 is not None

    @settings(max_examples=150, deadline=None)
    @given(st.lists(texts(added), min_size=1, max_size=8), st.randoms(use_true_random=False))
    def check(batch: list[str], rng: object) -> None:
        for text in batch + batch[::-1]:  # every text again: L0 and L1 hits
            expected = tokenizer.encode(text, add_special_tokens=specials).ids
            assert encoder.encode(text, specials) == expected, text

    check()
    l0, l1 = encoder.stats()
    assert l0.hits and l1.hits and l0.evictions and l1.evictions


async def test_async_encoding_equals_sync_and_offloads_long_text(qwen: ModelTokenizer) -> None:
    encoder = CachedEncoder(qwen.tokenizer)
    short = "<|im_start|>user\nhi<|im_end|>"
    long = short + "word " * OFFLOAD_CHARS + "<|im_end|>"
    for text in (short, long, long):
        assert await encoder.encode_async(text) == qwen.tokenizer.encode(text, add_special_tokens=False).ids


def test_l1_serves_the_next_turn_of_a_conversation(qwen: ModelTokenizer) -> None:
    encoder = CachedEncoder(qwen.tokenizer, CacheConfig(enable_l0=False))
    turn1 = qwen.render_chat(
        [{"role": "system", "content": "Be brief. " * 50}, {"role": "user", "content": "Hi"}]
    )
    encoder.encode(turn1)
    before = encoder.stats()[0]
    turn2 = qwen.render_chat(
        [
            {"role": "system", "content": "Be brief. " * 50},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Tell me about tokenizers."},
        ],
        template_kwargs={"enable_thinking": False},
    )
    assert encoder.encode(turn2) == qwen.tokenizer.encode(turn2, add_special_tokens=False).ids
    after = encoder.stats()[0]
    assert after.layer == "l1"
    # Every earlier segment hit, the long system prompt among them; only the new turn's text missed.
    assert after.hits - before.hits >= 3 and after.hit_chars - before.hit_chars > len("Be brief. " * 50)
    assert after.misses - before.misses <= 4


def test_l0_serves_an_exact_repeat_and_counts(qwen: ModelTokenizer) -> None:
    encoder = CachedEncoder(qwen.tokenizer, CacheConfig(enable_l1=False))
    assert encoder.l1 is None and [s.layer for s in encoder.stats()] == ["l0"]
    ids = encoder.encode("hello world")
    assert encoder.encode("hello world") == ids
    assert encoder.encode("hello world", add_special_tokens=True) == ids  # another key: Qwen adds nothing
    stats = encoder.stats()[0]
    assert (stats.hits, stats.misses, stats.entries, stats.hit_chars) == (1, 2, 2, 11)


def test_disabled_caches_still_encode(qwen: ModelTokenizer) -> None:
    encoder = CachedEncoder(qwen.tokenizer, CacheConfig(enable_l0=False, enable_l1=False))
    assert encoder.stats() == []
    assert encoder.encode("<|im_start|>x") == [151644, 87]


@pytest.mark.parametrize(("l0_entries", "l1_memory"), [(5, 4_000), (10_000, 64_000)])
def test_caches_are_bounded(qwen: ModelTokenizer, l0_entries: int, l1_memory: int) -> None:
    encoder = CachedEncoder(qwen.tokenizer, CacheConfig(l0_max_entries=l0_entries, l1_max_memory=l1_memory))
    for i in range(400):
        encoder.encode(f"<|im_start|>user\nmessage number {i} {'x' * (i % 37)}<|im_end|>")
    l0, l1 = encoder.stats()
    assert l0.entries <= l0_entries and l0.memory_bytes <= l0.max_memory_bytes
    assert l1.memory_bytes <= l1_memory and l1.evictions > 0


def test_an_entry_too_large_for_its_layer_is_not_kept(qwen: ModelTokenizer) -> None:
    encoder = CachedEncoder(qwen.tokenizer, CacheConfig(l0_max_memory=80_000, l1_max_memory=80_000))
    encoder.encode("small<|im_end|>")
    encoder.encode("big " * 5_000)
    l0, l1 = encoder.stats()
    assert (l0.entries, l1.entries) == (1, 1)  # the small one stays, the big one was not cached


def test_memory_estimate_covers_what_python_allocates(qwen: ModelTokenizer) -> None:
    encoder = CachedEncoder(qwen.tokenizer, CacheConfig(enable_l0=False, l1_max_memory=10**9))
    lines = [f"line {i}: {'lorem ipsum dolor ' * (i % 9)}<|im_end|>" for i in range(2_000)]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for line in lines:
        encoder.encode(line)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    estimate = encoder.stats()[0].memory_bytes
    assert used * 0.9 <= estimate <= used * 1.6, (used, estimate)


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="l1_max_memory"):
        CacheConfig(l1_max_memory=0)


def _metaspace_first() -> Tokenizer:
    """A SentencePiece-style tokenizer whose first segment gets a "▁": segments are not exact."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<sep>"])
    tokenizer.train_from_iterator(["hello world", "there world hello"] * 20, trainer)
    return tokenizer


def test_l1_is_off_where_segments_are_not_exact() -> None:
    tokenizer = _metaspace_first()
    assert not segments_are_exact(tokenizer)
    encoder = CachedEncoder(tokenizer)
    assert encoder.l1 is None
    for text in ("hello<sep>world", "hello<sep>world"):
        assert encoder.encode(text) == tokenizer.encode(text, add_special_tokens=False).ids


def test_special_affixes(qwen: ModelTokenizer, llama3: ModelTokenizer) -> None:
    assert special_affixes(qwen.tokenizer) == ((), ())
    assert special_affixes(llama3.tokenizer) == ((128000,), ())


async def _lag_while(work: object) -> float:
    """The longest the event loop went without running a 1 ms ticker while ``work`` ran."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - last)
            last = loop.time()

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.005)
    try:
        if asyncio.iscoroutine(work):
            await work
        else:
            assert callable(work)
            work()
    finally:
        done.set()
        await task
    return worst


async def test_a_100k_token_prompt_does_not_stall_the_loop(qwen: ModelTokenizer) -> None:
    text = "The quick brown fox jumps over the lazy dog; " * 10_000  # 100k tokens
    sync = CachedEncoder(qwen.tokenizer, CacheConfig(enable_l0=False, enable_l1=False))
    started = time.perf_counter()
    blocked = await _lag_while(lambda: sync.encode(text))
    took = time.perf_counter() - started
    encoder = CachedEncoder(qwen.tokenizer, CacheConfig(enable_l0=False, enable_l1=False))
    lag = await _lag_while(encoder.encode_async(text))
    ms = f"100k tokens in {took * 1000:.0f} ms; loop lag inline {blocked * 1000:.0f} ms"
    print(f"{ms}, off the loop {lag * 1000:.1f} ms")
    assert blocked > 0.05  # the measurement sees a stall when there is one
    assert lag < 0.03
