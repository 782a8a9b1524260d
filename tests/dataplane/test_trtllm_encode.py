"""How a request travels in TensorRT-LLM's ``GenerateRequest``."""

from __future__ import annotations

import pytest
from smg_grpc_proto.generated import trtllm_service_pb2 as pb

from dataplane.errors import UnsupportedParameter
from dataplane.trtllm_client import DEFAULT_MAX_TOKENS, _encode
from dataplane.types import Constraint, SamplingParams, WireRequest


def wire(sampling: SamplingParams, **fields: object) -> WireRequest:
    return WireRequest(
        request_id="chatcmpl-1",
        input_ids=[1, 2, 3],
        original_text="hi",
        sampling=sampling,
        stop_token_ids=(151645,),
        **({"stream": False} | fields),  # type: ignore[arg-type]
    )


def test_unset_knobs_leave_the_engine_its_defaults_but_max_tokens_is_required() -> None:
    message = _encode(wire(SamplingParams()))
    config = message.sampling_config
    assert (message.request_id, list(message.tokenized.input_token_ids)) == ("chatcmpl-1", [1, 2, 3])
    assert message.max_tokens == DEFAULT_MAX_TOKENS and not message.streaming
    assert (config.beam_width, config.num_return_sequences) == (1, 1)
    for field in ("temperature", "top_p", "top_k", "min_p", "seed", "min_tokens", "repetition_penalty"):
        assert not config.HasField(field), field
    assert message.output_config.exclude_input_from_output
    assert not message.output_config.HasField("logprobs")
    assert list(message.stop_token_ids) == [151645] and not message.stop
    assert not message.HasField("guided_decoding")


def test_given_knobs_are_sent() -> None:
    sampling = SamplingParams(
        max_tokens=12,
        temperature=0.5,
        top_p=0.75,
        top_k=40,
        min_p=0.25,
        frequency_penalty=0.5,
        presence_penalty=0.25,
        repetition_penalty=1.5,
        min_tokens=2,
        seed=-1,
        n=3,
        ignore_eos=True,
        logprobs=True,
        top_logprobs=2,
    )
    message = _encode(wire(sampling, stream=True))
    config = message.sampling_config
    assert (message.max_tokens, message.streaming, message.ignore_eos) == (12, True, True)
    assert (config.temperature, config.top_p, config.top_k, config.min_p) == (0.5, 0.75, 40, 0.25)
    assert (config.frequency_penalty, config.presence_penalty, config.repetition_penalty) == (0.5, 0.25, 1.5)
    assert (config.min_tokens, config.num_return_sequences, config.seed) == (2, 3, 2**64 - 1)
    assert message.output_config.logprobs == 2


def test_logit_bias_is_refused_rather_than_dropped() -> None:
    with pytest.raises(UnsupportedParameter, match="logit_bias"):
        _encode(wire(SamplingParams(logit_bias={"42": 1.0})))


@pytest.mark.parametrize(
    ("kind", "guide_type"),
    [
        ("json_schema", pb.GuidedDecodingParams.GUIDE_TYPE_JSON_SCHEMA),
        ("regex", pb.GuidedDecodingParams.GUIDE_TYPE_REGEX),
        ("ebnf", pb.GuidedDecodingParams.GUIDE_TYPE_EBNF_GRAMMAR),
        ("structural_tag", pb.GuidedDecodingParams.GUIDE_TYPE_STRUCTURAL_TAG),
    ],
)
def test_constraints_are_guided_decoding(kind: str, guide_type: int) -> None:
    message = _encode(wire(SamplingParams(), constraint=Constraint(kind, "x")))  # type: ignore[arg-type]
    assert (message.guided_decoding.guide_type, message.guided_decoding.guide) == (guide_type, "x")
