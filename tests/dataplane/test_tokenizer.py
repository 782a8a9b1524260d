from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.errors import ConfigError, InvalidRequest
from dataplane.tokenizer import ModelTokenizer
from tests.fakes.models import LLAMA3_BOS, LLAMA3_EOS

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
def test_cached_encoding_is_exactly_the_tokenizers(qwen: ModelTokenizer, text: str) -> None:
    assert qwen.encoder.l0 is not None and qwen.encoder.l1 is not None  # both caches on by default
    assert qwen.encode(text) == qwen.tokenizer.encode(text, add_special_tokens=False).ids


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


def test_llama3_eos_ids_come_from_generation_config_and_template_from_the_directory(
    llama3: ModelTokenizer,
) -> None:
    assert llama3.eos_token_ids == LLAMA3_EOS
    text = llama3.render_chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "}]
    )
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    ids = llama3.encode(text)
    assert ids[0] == LLAMA3_BOS and ids.count(LLAMA3_BOS) == 1
    assert llama3.encode("Hi", add_special_tokens=True) == [LLAMA3_BOS, *llama3.encode("Hi")]


def test_two_models_tokenize_differently(qwen: ModelTokenizer, llama3: ModelTokenizer) -> None:
    assert qwen.encode("Hello world") != llama3.encode("Hello world")
    assert llama3.decode(llama3.encode("Hello world")) == "Hello world"


@pytest.mark.parametrize("bad", [-1, 151669, 10**9])
def test_ids_outside_the_vocabulary_are_refused(qwen: ModelTokenizer, bad: int) -> None:
    qwen.check_ids([0, 151668], param="tokens")
    with pytest.raises(InvalidRequest, match=f"token id {bad} ") as info:
        qwen.check_ids([1, bad], param="tokens")
    assert info.value.param == "tokens"


async def test_async_decode_and_render_match_the_sync_ones(qwen: ModelTokenizer) -> None:
    ids = qwen.encode("hello " * 20_000)  # long enough to go off the loop
    assert await qwen.decode_async(ids) == qwen.decode(ids)
    with pytest.raises(InvalidRequest):
        await qwen.decode_async([*ids, -5])
    messages = [{"role": "user", "content": "x" * 10_000}]
    assert await qwen.render_chat_async(messages) == qwen.render_chat(messages)


def test_a_tokenizer_never_truncates_or_pads(model_dir: Path, tmp_path: Path) -> None:
    import json

    config = json.loads((model_dir / "tokenizer.json").read_text())
    config["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    (tmp_path / "tokenizer.json").write_text(json.dumps(config))
    tok = ModelTokenizer.from_dir(tmp_path)
    assert len(tok.encode("one two three four five six")) == 6
