"""The parse stage: worker token ids → reasoning, content and tool-call events; streaming (any chunking)
equals non-streaming; finish reasons; call ids; what ``plan`` picks for a request."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest

from dataplane.errors import InvalidRequest
from dataplane.output import OutputSpec, ResponseAssembler
from dataplane.parsing import ParserNames, ParseSpec, parser_names, plan, starts_in_reasoning
from dataplane.tokenizer import ModelTokenizer
from dataplane.types import (
    Choice,
    Chunk,
    Constraint,
    Event,
    Finished,
    GenerateRequest,
    LogprobBlock,
    ReasoningDelta,
    SamplingParams,
    TextDelta,
    ToolCallDelta,
    ToolChoice,
)
from tests.fakes.worker import complete

EOS = 151645
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
TOOLS = (WEATHER, TIME)
CALL_ID = re.compile(r"call_[0-9a-f]{24}")


def qwen_call(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


REASONED_CALLS = (
    "<think>\nThe user wants weather 和时间.\n</think>\n\nLet me check 🌦.\n"
    + qwen_call("get_weather", '{"city": "Paris", "days": 3}')
    + "\n"
    + qwen_call("get_time", '{"tz": "Europe/Paris"}')
)
QWEN = ParseSpec(reasoning_parser="qwen3", tool_mode="parser", tool_parser="qwen", tools=TOOLS)


def spec(qwen: ModelTokenizer, parsing: ParseSpec | None, *, streaming: bool = True) -> OutputSpec:
    return OutputSpec(
        tokenizer=qwen,
        stop_token_ids=frozenset({EOS}),
        stops=(),
        include_stop=False,
        skip_special_tokens=True,
        prompt_ids=[1, 2, 3],
        logprobs=False,
        streaming=streaming,
        parsing=parsing,
    )


def chunk(ids: list[int]) -> Chunk:
    return Chunk(index=0, token_ids=ids, prompt_tokens=3, completion_tokens=0, cached_tokens=0)


def split(ids: list[int], rng: random.Random) -> list[list[int]]:
    out, i = [], 0
    while i < len(ids):
        n = rng.randint(1, 6)
        out.append(ids[i : i + n])
        i += n
    return out


def streamed(assembler: ResponseAssembler, pieces: list[list[int]], reason: str = "stop") -> list[Event]:
    events: list[Event] = []
    for piece in pieces:
        events += assembler.feed(chunk(piece))
    events += assembler.feed(complete([EOS], reason=reason, matched=EOS if reason == "stop" else None))
    return events + assembler.finish()


def whole(qwen: ModelTokenizer, parsing: ParseSpec, ids: list[int], reason: str = "stop") -> list[Event]:
    """Non-streaming: one Complete carries every id."""
    assembler = ResponseAssembler(spec(qwen, parsing, streaming=False), 1)
    events = assembler.feed(complete([*ids, EOS] if reason == "stop" else ids, reason=reason))
    return events + assembler.finish()


def fold(events: list[Event]) -> Choice:
    choice = Choice(0)
    for e in events:
        if isinstance(e, TextDelta):
            choice.text += e.text
        elif isinstance(e, ReasoningDelta):
            choice.reasoning += e.text
        elif isinstance(e, ToolCallDelta):
            choice.add_tool_call_delta(e)
        elif isinstance(e, Finished):
            choice.finish_reason = e.reason
    return choice


def calls(choice: Choice) -> list[tuple[str, str]]:
    return [(c.name, c.arguments) for c in choice.tool_calls]


def test_reasoning_text_and_parallel_calls(qwen: ModelTokenizer) -> None:
    ids = qwen.encode(REASONED_CALLS)
    events = streamed(ResponseAssembler(spec(qwen, QWEN), 1), [[i] for i in ids])
    done = fold(events)
    assert done.reasoning == "\nThe user wants weather 和时间.\n"
    assert done.text.strip() == "Let me check 🌦."
    assert calls(done) == [
        ("get_weather", '{"city": "Paris", "days": 3}'),
        ("get_time", '{"tz": "Europe/Paris"}'),
    ]
    assert done.finish_reason == "tool_calls"
    # OpenAI's delta form: a call's first delta has its index, id and name; later ones only arguments,
    # several of them (streamed as they arrive, not at the end).
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    firsts = [d for d in deltas if d.name is not None]
    assert [(d.tool_index, d.name) for d in firsts] == [(0, "get_weather"), (1, "get_time")]
    assert all(CALL_ID.fullmatch(d.id or "") for d in firsts)
    assert firsts[0].id != firsts[1].id
    assert all(d.id is None for d in deltas if d.name is None)
    assert len([d for d in deltas if d.tool_index == 0 and d.arguments_delta]) > 1
    # Reasoning comes first, and every call's deltas come after its first one.
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ReasoningDelta") < kinds.index("TextDelta") < kinds.index("ToolCallDelta")


@pytest.mark.parametrize("seed", range(25))
def test_streaming_equals_non_streaming_for_any_chunking(qwen: ModelTokenizer, seed: int) -> None:
    ids = qwen.encode(REASONED_CALLS)
    rng = random.Random(seed)
    one = fold(streamed(ResponseAssembler(spec(qwen, QWEN), 1), split(ids, rng)))
    other = fold(whole(qwen, QWEN, ids))
    assert (one.text, one.reasoning, calls(one), one.finish_reason) == (
        other.text,
        other.reasoning,
        calls(other),
        other.finish_reason,
    )


def test_call_ids_are_unique_per_request(qwen: ModelTokenizer) -> None:
    ids = qwen.encode(REASONED_CALLS)
    seen = [c.id for _ in range(20) for c in fold(whole(qwen, QWEN, ids)).tool_calls]
    assert len(set(seen)) == len(seen) == 40


def test_a_choice_cut_by_length_keeps_length(qwen: ModelTokenizer) -> None:
    ids = qwen.encode(qwen_call("get_weather", '{"city": "Paris"}'))[:-3]
    done = fold(whole(qwen, QWEN, ids, reason="length"))
    assert done.finish_reason == "length"


def test_no_call_no_tool_calls_reason(qwen: ModelTokenizer) -> None:
    text = "No tool needed: it is sunny."
    done = fold(whole(qwen, QWEN, qwen.encode(text)))
    assert (done.text, done.tool_calls, done.finish_reason) == (text, [], "stop")


def test_parallel_tool_calls_false_keeps_the_first_call(qwen: ModelTokenizer) -> None:
    single = replace(QWEN, parallel_tool_calls=False)
    done = fold(whole(qwen, single, qwen.encode(REASONED_CALLS)))
    assert calls(done) == [("get_weather", '{"city": "Paris", "days": 3}')]


def test_named_function_streams_its_arguments(qwen: ModelTokenizer) -> None:
    named = ParseSpec(tool_mode="function", function="get_weather", tools=(WEATHER,))
    arguments = '{"city": "Paris", "note": "über 🌧"}'
    events = streamed(ResponseAssembler(spec(qwen, named), 1), [[i] for i in qwen.encode(arguments)])
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert deltas[0].name == "get_weather" and deltas[0].arguments_delta == ""
    assert CALL_ID.fullmatch(deltas[0].id or "")
    assert len(deltas) > 3
    done = fold(events)
    assert (done.text, calls(done), done.finish_reason) == ("", [("get_weather", arguments)], "tool_calls")


def test_required_reads_the_json_array(qwen: ModelTokenizer) -> None:
    required = ParseSpec(tool_mode="json", tools=TOOLS)
    text = '[{"name":"get_time","parameters":{"tz":"UTC"}},{"name":"get_weather","parameters":{}}]'
    done = fold(
        streamed(ResponseAssembler(spec(qwen, required), 1), split(qwen.encode(text), random.Random(1)))
    )
    assert calls(done) == [("get_time", '{"tz":"UTC"}'), ("get_weather", "{}")]
    assert done.text == ""
    assert done.finish_reason == "tool_calls"


@pytest.mark.parametrize("starts", [True, None])
def test_reasoning_the_template_opened(qwen: ModelTokenizer, starts: bool | None) -> None:
    # The template ended the prompt with "<think>\n": the output starts inside reasoning, unmarked.
    reasoning = ParseSpec(reasoning_parser="qwen3", starts_in_reasoning=starts)
    done = fold(whole(qwen, reasoning, qwen.encode("hmm, 想想\n</think>\n\nHi!")))
    if starts:
        assert (done.reasoning, done.text) == ("hmm, 想想\n", "\n\nHi!")
    else:  # not told: the unopened block is content (the end marker is kept as text)
        assert done.reasoning == "" and "</think>" in done.text


def test_logprobs_survive_parsing(qwen: ModelTokenizer) -> None:
    ids = qwen.encode("<think>a</think>Hello")
    block = LogprobBlock(token_ids=ids, logprobs=[-0.25] * len(ids), top=[])
    out = replace(spec(qwen, ParseSpec(reasoning_parser="qwen3")), logprobs=True)
    events = ResponseAssembler(out, 1).feed(
        Chunk(
            index=0,
            token_ids=ids,
            prompt_tokens=3,
            completion_tokens=len(ids),
            cached_tokens=0,
            logprobs=block,
        )
    )
    assert sum(len(e.logprobs) for e in events if isinstance(e, TextDelta)) == len(ids)


# ---- what plan() decides --------------------------------------------------------------------------


def request(**fields: object) -> GenerateRequest:
    base = GenerateRequest("r", "m", SamplingParams(), messages=({"role": "user", "content": "hi"},))
    return replace(base, **fields)  # type: ignore[arg-type]


QWEN_NAMES = ParserNames(tool="qwen", reasoning="qwen3")


def test_plan_auto_uses_the_model_parsers() -> None:
    parsing, constraint = plan(request(tools=TOOLS), "prompt", QWEN_NAMES)
    assert constraint is None
    assert parsing is not None
    assert (parsing.tool_mode, parsing.tool_parser, parsing.reasoning_parser) == ("parser", "qwen", "qwen3")


def test_plan_required_and_named_constrain_the_worker() -> None:
    parsing, constraint = plan(request(tools=TOOLS, tool_choice=ToolChoice("required")), "", QWEN_NAMES)
    assert parsing is not None and parsing.tool_mode == "json"
    assert constraint is not None and constraint.kind == "json_schema" and '"minItems":1' in constraint.value
    named = request(tools=(WEATHER,), tool_choice=ToolChoice("function", "get_weather"))
    parsing, constraint = plan(named, "", QWEN_NAMES)
    assert parsing is not None and (parsing.tool_mode, parsing.function) == ("function", "get_weather")
    assert constraint == Constraint("json_schema", '{"type":"object"}')


def test_plan_a_client_constraint_wins_over_tool_choice() -> None:
    mine = Constraint("regex", "[a-z]+")
    parsing, constraint = plan(
        request(tools=TOOLS, tool_choice=ToolChoice("required"), constraint=mine), "", QWEN_NAMES
    )
    assert constraint is mine
    assert parsing is not None and parsing.tool_mode == "parser"


def test_plan_nothing_to_parse_bypasses_the_stage() -> None:
    assert plan(request(), "", ParserNames()) == (None, None)
    assert plan(request(tools=TOOLS), "", ParserNames()) == (None, None)  # passthrough parsers
    assert plan(request(separate_reasoning=False), "", ParserNames(reasoning="qwen3")) == (None, None)
    completion = replace(request(), messages=None, prompt="hi", constraint=Constraint("regex", "a"))
    assert plan(completion, "", QWEN_NAMES) == (None, Constraint("regex", "a"))


def test_plan_names_a_bad_tool_schema() -> None:
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "frob"}}}
    with pytest.raises(InvalidRequest) as caught:
        plan(request(tools=(bad,), tool_choice=ToolChoice("required")), "", QWEN_NAMES)
    assert caught.value.param == "tools" and "'f'" in caught.value.message


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("<|im_start|>assistant\n<think>\n", True),  # the template opened the block
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),  # thinking switched off
        ("<|im_start|>assistant\n", None),  # the model opens its own
        ("<think>old</think> answer<|im_end|>\n<|im_start|>assistant\n", None),  # an earlier turn's
        ("what is <think>?<|im_end|>\n<|im_start|>assistant\n", None),  # a marker the user typed
        ("<|im_start|>assistant\n<think>\nI think", None),  # not the template's: text follows
    ],
)
def test_starts_in_reasoning_reads_the_prompt(prompt: str, expected: bool | None) -> None:
    assert starts_in_reasoning(prompt, "qwen3") is expected
    assert starts_in_reasoning(prompt, "passthrough") is None


@pytest.mark.parametrize(
    ("continued", "expected"),
    [("<think>\nFirst, the", True), ("<think>a</think>The answer", False), ("The answer", None)],
)
def test_starts_in_reasoning_continues_the_final_message(continued: str, expected: bool | None) -> None:
    prompt = "<|im_start|>assistant\n" + continued
    assert starts_in_reasoning(prompt, "qwen3", continued) is expected
    messages = ({"role": "user", "content": "hi"}, {"role": "assistant", "content": continued})
    parsing, _ = plan(
        request(messages=messages, continue_final_message=True), prompt, ParserNames(reasoning="qwen3")
    )
    assert parsing is not None and parsing.starts_in_reasoning is expected


def test_parser_names_by_model_and_by_flag() -> None:
    assert parser_names("Qwen/Qwen3-0.6B") == ParserNames("qwen", "qwen3")
    assert parser_names("deepseek-ai/DeepSeek-R1") == ParserNames("pythonic", "deepseek_r1")
    assert parser_names("some/unknown-model") == ParserNames("passthrough", "passthrough")
    assert parser_names("Qwen/Qwen3-0.6B", "json", "passthrough") == ParserNames("json", "passthrough")
