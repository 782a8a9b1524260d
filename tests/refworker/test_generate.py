"""Generate over the wire: scripts, stream shapes, chunking, n, stops and logprobs."""

from __future__ import annotations

from typing import Any

import pytest
from tokenizers import Tokenizer

from refworker.scripts import FIXED_TEXT, THINK_TEXT, tool_text
from tests.refworker.calls import EOS, collect, completes, make_request, prompt, streamed_ids
from tests.refworker.conftest import StartWorker

PROMPT = [9707, 11, 1879, 0]  # "Hello, world!"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("fixed", FIXED_TEXT),
        ("think", THINK_TEXT),
        ("tool", tool_text("get_weather")),
        ("echo", "Hello, world!"),
    ],
)
async def test_scripts_decode_to_their_text(
    start_worker: StartWorker, tokenizer: Tokenizer, script: str, expected: str
) -> None:
    _, stub = await start_worker(script=script)
    messages = await collect(stub, make_request(PROMPT))
    ids = streamed_ids(messages)
    assert ids[-1] == EOS
    assert tokenizer.decode(ids[:-1], skip_special_tokens=False) == expected
    done = completes(messages)[0]
    assert (done.finish_reason, done.matched_token_id, done.completion_tokens) == ("stop", EOS, len(ids))


async def test_filler_produces_exactly_n_tokens(start_worker: StartWorker) -> None:
    _, stub = await start_worker(script="filler", filler_tokens=37)
    messages = await collect(stub, make_request(PROMPT, max_new_tokens=1000))
    ids = streamed_ids(messages)
    assert len(ids) == 38 and ids[-1] == EOS and EOS not in ids[:-1]


async def test_stream_shape_is_chunks_then_one_complete(stub: Any) -> None:
    messages = await collect(stub, make_request(PROMPT))
    kinds = [m.WhichOneof("response") for m in messages]
    assert kinds == ["chunk"] * (len(kinds) - 1) + ["complete"]
    assert all(m.request_id == "req-1" for m in messages)
    chunks = [m.chunk for m in messages[:-1]]
    assert [len(c.token_ids) for c in chunks] == [1] * len(chunks)
    assert [c.completion_tokens for c in chunks] == list(range(1, len(chunks) + 1))
    assert all(c.prompt_tokens == len(PROMPT) for c in chunks)
    done = messages[-1].complete
    assert list(done.output_ids) == list(chunks[-1].token_ids)  # the last delta only
    assert done.completion_tokens == len(chunks) and done.prompt_tokens == len(PROMPT)


async def test_non_stream_is_one_cumulative_complete(stub: Any, tokenizer: Tokenizer) -> None:
    messages = await collect(stub, make_request(PROMPT, stream=False))
    assert [m.WhichOneof("response") for m in messages] == ["complete"]
    done = messages[0].complete
    assert tokenizer.decode(list(done.output_ids)[:-1]) == FIXED_TEXT
    assert done.completion_tokens == len(done.output_ids) and done.finish_reason == "stop"


async def test_k_token_chunks(start_worker: StartWorker, tokenizer: Tokenizer) -> None:
    _, stub = await start_worker(tokens_per_chunk=4)
    messages = await collect(stub, make_request(PROMPT))
    sizes = [len(m.chunk.token_ids) for m in messages if m.HasField("chunk")]
    total = len(prompt(tokenizer, FIXED_TEXT)) + 1
    assert sizes == [4] * (total // 4) + ([total % 4] if total % 4 else [])
    assert tokenizer.decode(streamed_ids(messages)[:-1]) == FIXED_TEXT


async def test_random_chunking_is_seeded_per_request(start_worker: StartWorker, tokenizer: Tokenizer) -> None:
    _, stub = await start_worker(tokens_per_chunk=5, random_chunking=True)
    first = await collect(stub, make_request(PROMPT, rid="same"))
    again = await collect(stub, make_request(PROMPT, rid="same"))
    sizes = [len(m.chunk.token_ids) for m in first if m.HasField("chunk")]
    assert sizes == [len(m.chunk.token_ids) for m in again if m.HasField("chunk")]
    assert all(1 <= s <= 5 for s in sizes) and len(set(sizes)) > 1
    assert tokenizer.decode(streamed_ids(first)[:-1]) == FIXED_TEXT


async def test_n_copies_interleave_round_robin(stub: Any, tokenizer: Tokenizer) -> None:
    messages = await collect(stub, make_request(PROMPT, n=3))
    chunk_indices = [m.chunk.index for m in messages if m.HasField("chunk")]
    assert chunk_indices[:6] == [0, 1, 2, 0, 1, 2]
    done = completes(messages)
    assert sorted(done) == [0, 1, 2]
    for index in range(3):
        assert tokenizer.decode(streamed_ids(messages, index)[:-1]) == FIXED_TEXT
        assert done[index].index == index and done[index].finish_reason == "stop"
    assert sum(m.HasField("complete") for m in messages) == 3


async def test_n_zero_means_one(stub: Any) -> None:
    messages = await collect(stub, make_request(PROMPT, n=0, stream=False))
    assert len(messages) == 1 and messages[0].complete.index == 0


async def test_non_stream_n_gives_one_complete_per_index(stub: Any) -> None:
    messages = await collect(stub, make_request(PROMPT, n=2, stream=False))
    assert sorted(m.complete.index for m in messages) == [0, 1]


async def test_max_new_tokens_finishes_with_length(stub: Any) -> None:
    messages = await collect(stub, make_request(PROMPT, max_new_tokens=5))
    assert len(streamed_ids(messages)) == 5
    done = completes(messages)[0]
    assert done.finish_reason == "length" and not done.HasField("matched_token_id")
    assert done.completion_tokens == 5


async def test_zero_max_new_tokens_sends_only_a_complete(stub: Any) -> None:
    messages = await collect(stub, make_request(PROMPT, max_new_tokens=0))
    assert [m.WhichOneof("response") for m in messages] == ["complete"]
    assert messages[0].complete.finish_reason == "length" and messages[0].complete.completion_tokens == 0


async def test_stop_token_id_ends_the_choice_including_the_token(stub: Any, tokenizer: Tokenizer) -> None:
    [world] = prompt(tokenizer, "世界")
    messages = await collect(stub, make_request(PROMPT, stop_token_ids=[world]))
    ids = streamed_ids(messages)
    assert ids[-1] == world and tokenizer.decode(ids) == "Hello! 你好，世界"
    done = completes(messages)[0]
    assert (done.finish_reason, done.matched_token_id) == ("stop", world)


async def test_ignore_eos_runs_to_max_new_tokens(stub: Any) -> None:
    messages = await collect(stub, make_request(PROMPT, ignore_eos=True, max_new_tokens=100, stream=False))
    done = messages[0].complete
    assert len(done.output_ids) == 100 and EOS not in done.output_ids and done.finish_reason == "length"


async def test_default_max_new_tokens_applies_when_unset(start_worker: StartWorker) -> None:
    _, stub = await start_worker(default_max_new_tokens=7)
    messages = await collect(stub, make_request(PROMPT, ignore_eos=True, stream=False))
    assert len(messages[0].complete.output_ids) == 7


async def test_string_stops_are_rejected(stub: Any) -> None:
    import grpc

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub, make_request(PROMPT, stop=["\n"]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_empty_prompt_is_rejected(stub: Any) -> None:
    import grpc

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(stub, make_request([]))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_logprobs_are_deltas_when_streaming(stub: Any) -> None:
    request = make_request(PROMPT, max_new_tokens=4)
    request.return_logprob = True
    request.top_logprobs_num = 3
    messages = await collect(stub, request)
    chunks = [m.chunk for m in messages if m.HasField("chunk")]
    assert [list(c.output_logprobs.token_ids) for c in chunks] == [list(c.token_ids) for c in chunks]
    values = [c.output_logprobs.token_logprobs[0] for c in chunks]
    assert values == pytest.approx([-0.001, -0.011, -0.021, -0.031])
    top = chunks[1].output_logprobs.top_logprobs[0]
    assert len(top.values) == 3 and top.token_ids[0] == chunks[1].token_ids[0]
    assert top.values[0] == max(top.values)


async def test_logprobs_are_cumulative_when_not_streaming(stub: Any) -> None:
    request = make_request(PROMPT, max_new_tokens=4, stream=False)
    request.return_logprob = True
    request.logprob_start_len = 0
    done = (await collect(stub, request))[0].complete
    assert list(done.output_logprobs.token_ids) == list(done.output_ids)
    assert len(done.output_logprobs.token_logprobs) == 4
    first = done.input_logprobs.token_logprobs[0]
    assert not first.HasField("value") and done.input_logprobs.token_logprobs[1].HasField("value")
    assert list(done.input_logprobs.token_ids) == PROMPT
