from __future__ import annotations

import pytest

from dataplane.errors import WorkerStreamError
from dataplane.output import OutputSpec, ResponseAssembler
from dataplane.tokenizer import ModelTokenizer
from dataplane.types import Chunk, Complete, Event, Finished, LogprobBlock, TextDelta, Usage
from tests.fakes.worker import complete

EOS = 151645
TEXT = "Hello! 你好，世界 🤖 done."


def spec(
    qwen: ModelTokenizer,
    *,
    streaming: bool = True,
    stops: tuple[str, ...] = (),
    stop_ids: frozenset[int] = frozenset({EOS}),
    logprobs: bool = False,
) -> OutputSpec:
    return OutputSpec(
        tokenizer=qwen,
        stop_token_ids=stop_ids,
        stops=stops,
        include_stop=False,
        skip_special_tokens=True,
        prompt_ids=[1, 2, 3],
        logprobs=logprobs,
        streaming=streaming,
    )


def chunk(ids: list[int], index: int = 0) -> Chunk:
    return Chunk(index=index, token_ids=ids, prompt_tokens=3, completion_tokens=0, cached_tokens=0)


def text_of(events: list[Event], index: int = 0) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta) and e.index == index)


def finishes(events: list[Event]) -> list[Finished]:
    return [e for e in events if isinstance(e, Finished)]


def run(assembler: ResponseAssembler, messages: list[Chunk | Complete]) -> list[Event]:
    events: list[Event] = []
    for m in messages:
        events += assembler.feed(m)
    return events + assembler.finish()


def test_streamed_tokens_one_at_a_time_rebuild_the_text(qwen: ModelTokenizer) -> None:
    ids = qwen.encode(TEXT)
    events = run(
        ResponseAssembler(spec(qwen), 1),
        [*(chunk([i]) for i in ids), complete([EOS], reason="stop", matched=EOS)],
    )
    assert text_of(events) == TEXT
    assert not any("\ufffd" in e.text for e in events if isinstance(e, TextDelta))
    assert finishes(events) == [Finished(0, "stop", EOS)]


def test_eos_inside_a_chunk_ends_the_choice_and_is_not_shown(qwen: ModelTokenizer) -> None:
    ids = qwen.encode("Hi there")
    events = run(ResponseAssembler(spec(qwen), 1), [chunk([*ids, EOS]), complete([EOS], matched=EOS)])
    assert text_of(events) == "Hi there"
    assert finishes(events) == [Finished(0, "stop", EOS)]


def test_stop_string_across_chunks_cuts_text_and_settles(qwen: ModelTokenizer) -> None:
    ids = qwen.encode("one two STOP three")
    assembler = ResponseAssembler(spec(qwen, stops=("STOP",)), 1)
    events: list[Event] = []
    for i in ids:
        events += assembler.feed(chunk([i]))
    assert assembler.cut_short
    assert text_of(events) == "one two "
    assert finishes(events) == [Finished(0, "stop", "STOP")]


def test_non_streaming_complete_carries_everything(qwen: ModelTokenizer) -> None:
    ids = qwen.encode(TEXT)
    events = run(ResponseAssembler(spec(qwen, streaming=False), 1), [complete([*ids], reason="length")])
    assert text_of(events) == TEXT
    assert finishes(events) == [Finished(0, "length", None)]
    assert events[-1] == Usage(3, len(ids), 0, 0)


def test_n_choices_interleave_and_usage_sums(qwen: ModelTokenizer) -> None:
    a, b = qwen.encode("first answer"), qwen.encode("第二个")
    assembler = ResponseAssembler(spec(qwen), 2)
    events = run(
        assembler,
        [chunk(a[:1], 0), chunk(b, 1), chunk(a[1:], 0), complete(b, index=1), complete(a[1:], index=0)],
    )
    assert text_of(events, 0) == "first answer"
    assert text_of(events, 1) == "第二个"
    assert sorted(f.index for f in finishes(events)) == [0, 1]


def test_stream_ending_without_complete_is_a_worker_error(qwen: ModelTokenizer) -> None:
    assembler = ResponseAssembler(spec(qwen), 1)
    assembler.feed(chunk(qwen.encode("partial")))
    with pytest.raises(WorkerStreamError, match="ended before"):
        assembler.finish()


@pytest.mark.parametrize("message", [chunk([1], index=2), chunk([10**9])])
def test_nonsense_from_the_worker_is_a_worker_error(qwen: ModelTokenizer, message: Chunk) -> None:
    with pytest.raises(WorkerStreamError):
        ResponseAssembler(spec(qwen), 1).feed(message)


def test_logprobs_are_attached_to_the_text_they_belong_to(qwen: ModelTokenizer) -> None:
    ids = qwen.encode("Hello world")
    block = LogprobBlock(token_ids=ids, logprobs=[-0.5] * len(ids), top=[([i], [-0.5]) for i in ids])
    msg = Chunk(index=0, token_ids=ids, prompt_tokens=3, completion_tokens=2, cached_tokens=0, logprobs=block)
    deltas = [
        e for e in ResponseAssembler(spec(qwen, logprobs=True), 1).feed(msg) if isinstance(e, TextDelta)
    ]
    lps = [lp for d in deltas for lp in d.logprobs]
    assert "".join(lp.token for lp in lps) == "Hello world"
    assert all(lp.logprob == -0.5 and lp.top[0].token_id == lp.token_id for lp in lps)
