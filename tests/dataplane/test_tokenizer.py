from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.errors import ConfigError, InvalidRequest
from dataplane.tokenizer import ModelTokenizer, PieceCache

ADDED = ["<|im_start|>", "<|im_end|>", "<think>", "</think>", "<tool_call>", "<|endoftext|>"]
FRAGMENTS = [
    "user\n",
    "assistant",
    " hello",
    "你好，世界",
    "🤖🚀",
    "👨‍👩‍👧",
    "  ",
    "\n\n",
    "ünï",
    "'s",
    "123",
    "<",
    "|",
    "im_",
]
texts = st.lists(st.sampled_from(ADDED + FRAGMENTS), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(texts)
def test_piece_cache_tokenizes_exactly_like_the_tokenizer(qwen: ModelTokenizer, text: str) -> None:
    assert qwen.pieces is not None
    assert qwen.encode(text) == qwen.tokenizer.encode(text, add_special_tokens=False).ids


def test_piece_cache_is_bounded(qwen: ModelTokenizer) -> None:
    cache = PieceCache(qwen.tokenizer, max_entries=4, max_chars=1000)
    for i in range(50):
        text = f"<|im_start|>user\nmessage number {i}<|im_end|>"
        assert cache.encode(text) == qwen.tokenizer.encode(text, add_special_tokens=False).ids
    assert len(cache._pieces) <= 4 and cache._chars <= 1000


def test_chat_template_renders_with_generation_prompt_and_kwargs(qwen: ModelTokenizer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = qwen.render_chat(messages, template_kwargs={"enable_thinking": False})
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_template_errors_are_the_clients(qwen: ModelTokenizer) -> None:
    with pytest.raises(InvalidRequest, match="chat template"):
        qwen.render_chat([{"role": "user"}])  # the template reads message.content


def test_eos_ids_come_from_generation_config(qwen: ModelTokenizer) -> None:
    assert qwen.eos_token_ids == {151645, 151643}


def test_eos_falls_back_to_the_tokenizer_config(model_dir: Path, tmp_path: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    assert ModelTokenizer.from_dir(tmp_path).eos_token_ids == {151645}


def test_token_bytes_are_exact_for_partial_characters(qwen: ModelTokenizer) -> None:
    ids = qwen.encode("👨‍👩‍👧 ok")
    assert b"".join(qwen.token_bytes(i) for i in ids) == "👨‍👩‍👧 ok".encode()
    assert any("\ufffd" in qwen.decode([i]) for i in ids)  # some token holds part of a character


def test_a_directory_without_tokenizer_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tokenizer\.json"):
        ModelTokenizer.from_dir(tmp_path)


def test_chat_template_override(model_dir: Path, tmp_path: Path) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}")
    tok = ModelTokenizer.from_dir(model_dir, chat_template=template)
    assert tok.render_chat([{"role": "user", "content": "x"}], add_generation_prompt=False) == "[user] x"
