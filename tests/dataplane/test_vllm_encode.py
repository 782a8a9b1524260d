"""How a request travels in vLLM's ``GenerateRequest``: its defaults are not SGLang's."""

from __future__ import annotations

import pytest

from dataplane.errors import InvalidRequest
from dataplane.types import Constraint, SamplingParams, WireRequest
from dataplane.vllm_client import _encode


def wire(sampling: SamplingParams, **fields: object) -> WireRequest:
    return WireRequest(
        request_id="chatcmpl-1",
        input_ids=[1, 2, 3],
        original_text="hi",
        sampling=sampling,
        stop_token_ids=(151645,),
        stream=True,
        **fields,  # type: ignore[arg-type]
    )


def test_unset_knobs_leave_the_engine_its_defaults() -> None:
    message = _encode(wire(SamplingParams()))
    params = message.sampling_params
    assert (message.request_id, list(message.tokenized.input_ids), message.tokenized.original_text) == (
        "chatcmpl-1",
        [1, 2, 3],
        "hi",
    )
    assert message.stream
    assert not params.HasField("temperature") and not params.HasField("max_tokens")
    assert not params.HasField("seed") and not params.HasField("logprobs")
    assert (params.top_p, params.top_k, params.repetition_penalty, params.n) == (1.0, 0, 1.0, 1)
    assert list(params.stop_token_ids) == [151645]
    assert params.skip_special_tokens and params.spaces_between_special_tokens
    assert not params.stop  # stop strings are matched by the gateway
    assert params.WhichOneof("constraint") is None


def test_given_knobs_are_sent() -> None:
    sampling = SamplingParams(
        max_tokens=12,
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        frequency_penalty=0.25,
        presence_penalty=0.5,
        repetition_penalty=1.1,
        min_tokens=2,
        seed=7,
        n=2,
        stop=("END",),
        ignore_eos=True,
        logprobs=True,
        top_logprobs=3,
        logit_bias={"42": -100.0},
    )
    params = _encode(wire(sampling)).sampling_params
    assert (params.max_tokens, params.temperature, params.top_k, params.min_tokens, params.n) == (
        12,
        0.5,
        40,
        2,
        2,
    )
    assert abs(params.top_p - 0.9) < 1e-6 and abs(params.min_p - 0.05) < 1e-6
    assert (params.frequency_penalty, params.presence_penalty) == (0.25, 0.5)
    assert abs(params.repetition_penalty - 1.1) < 1e-6
    assert (params.seed, params.ignore_eos, params.logprobs) == (7, True, 3)
    assert dict(params.logit_bias) == {42: -100.0}
    assert not params.stop


def test_logprobs_without_alternatives_ask_for_the_chosen_tokens_only() -> None:
    params = _encode(wire(SamplingParams(logprobs=True))).sampling_params
    assert params.HasField("logprobs") and params.logprobs == 0


def test_sglangs_disabled_top_k_and_a_large_seed_fit_vllms_fields() -> None:
    params = _encode(wire(SamplingParams(top_k=-1, seed=2**40))).sampling_params
    assert params.top_k == 0  # vLLM: 0 is "off"
    assert params.seed == 2**31 - 1  # int32, clamped as SMG does


def test_a_logit_bias_token_beyond_int32_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match="logit_bias"):
        _encode(wire(SamplingParams(logit_bias={str(2**31): 1.0})))


def test_constraints_use_vllms_field_names() -> None:
    for kind, field in (
        ("json_schema", "json_schema"),
        ("regex", "regex"),
        ("ebnf", "grammar"),
        ("structural_tag", "structural_tag"),
    ):
        params = _encode(wire(SamplingParams(), constraint=Constraint(kind, "x"))).sampling_params  # type: ignore[arg-type]
        assert params.WhichOneof("constraint") == field
        assert getattr(params, field) == "x"
