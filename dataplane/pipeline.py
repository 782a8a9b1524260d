"""The request pipeline as plain stages: prepare → select → build → execute (→ output.py).

Retries (whole attempts, on another worker when there is one) happen only before the first worker
message: once anything was produced, it is the client's.
A stream that is left before its worker finished is aborted on the worker (abort-on-drop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dataplane.errors import GatewayError, InvalidRequest, NoHealthyWorker, WorkerError
from dataplane.metrics import RequestMeter
from dataplane.output import OutputSpec, ResponseAssembler
from dataplane.parsing import ParserNames, plan
from dataplane.retry import RETRYABLE_STATUSES, RetryPolicy
from dataplane.routing import Policy, RouteRequest
from dataplane.telemetry import CHAT_TEMPLATE, SELECT_WORKER, TOKENIZE, RequestTrace, stage
from dataplane.tokenizer import ModelTokenizer
from dataplane.tokenizer_cache import OFFLOAD_CHARS
from dataplane.types import Constraint, Event, GenerateRequest, Started, WireRequest
from dataplane.workers import Worker, WorkerRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request after templating and tokenization."""

    text: str
    input_ids: list[int]
    wire_stop_token_ids: tuple[int, ...]
    output: OutputSpec
    constraint: Constraint | None = None


def prepare(
    request: GenerateRequest,
    tok: ModelTokenizer,
    parsers: ParserNames | None = None,
    rendered: tuple[str, list[int]] | None = None,
    tracing: RequestTrace | None = None,
) -> Prepared:
    """Render the chat template (or take the prompt), tokenize, work out stop handling, parsing and the
    constraint (``parsers``: the model's; none when not given). ``rendered``: the prompt's text and ids
    when ``render_and_tokenize`` already made them."""
    s = request.sampling
    text, ids = rendered if rendered is not None else _render_and_tokenize(request, tok, tracing)
    if not ids:
        raise InvalidRequest("the prompt is empty", param="prompt")
    limit = tok.max_context_length
    if limit is not None and len(ids) + (s.max_tokens or 0) > limit:
        raise InvalidRequest(
            f"prompt ({len(ids)} tokens) plus max_tokens ({s.max_tokens or 0}) exceeds the model's context "
            f"length of {limit} tokens",
            param="messages" if request.messages is not None else "prompt",
        )
    # Tokenizer-less engines reject stop strings: a stop that is one token also goes as a stop token id;
    # every stop string is matched here, on the decoded text.
    single_token_stops = [ids_[0] for stop in s.stop if len(ids_ := tok.encode(stop)) == 1]
    wire_stops = tuple(dict.fromkeys((*s.stop_token_ids, *single_token_stops)))
    local_stop_ids = frozenset(s.stop_token_ids) | (frozenset() if s.ignore_eos else tok.eos_token_ids)
    parsing, constraint = plan(request, text, parsers or ParserNames())
    spec = OutputSpec(
        tokenizer=tok,
        stop_token_ids=local_stop_ids,
        stops=s.stop,
        include_stop=s.no_stop_trim,
        # A tool-call parser may need markers that are special tokens (SMG: not under a tool schema).
        skip_special_tokens=s.skip_special_tokens and (parsing is None or parsing.tool_mode != "parser"),
        prompt_ids=ids,
        logprobs=s.logprobs,
        streaming=request.stream,
        parsing=parsing,
    )
    return Prepared(text, ids, wire_stops, spec, constraint)


def _render_and_tokenize(
    request: GenerateRequest, tok: ModelTokenizer, tracing: RequestTrace | None = None
) -> tuple[str, list[int]]:
    if request.messages is not None:
        with stage(tracing, CHAT_TEMPLATE):
            text = tok.render_chat(
                request.messages,
                tools=request.tools,
                add_generation_prompt=request.add_generation_prompt,
                continue_final_message=request.continue_final_message,
                template_kwargs=dict(request.chat_template_kwargs),
            )
        with stage(tracing, TOKENIZE):
            return text, tok.encode(text)
    if request.prompt_ids is not None:
        ids = list(request.prompt_ids)
        _check_ids(ids, tok.vocab_size)
        return "", ids
    text = request.prompt or ""
    with stage(tracing, TOKENIZE):
        return text, tok.encode(text)


def is_long(request: GenerateRequest) -> bool:
    """A prompt long enough that rendering and tokenizing it belong off the event loop."""
    if request.messages is not None:
        return sum(len(str(m.get("content") or "")) for m in request.messages) > OFFLOAD_CHARS
    return len(request.prompt or "") > OFFLOAD_CHARS


async def render_and_tokenize(
    request: GenerateRequest, tok: ModelTokenizer, tracing: RequestTrace | None = None
) -> tuple[str, list[int]]:
    """``prepare``'s first step with long text rendered and tokenized on worker threads."""
    if request.messages is None:
        if request.prompt_ids is not None:
            return _render_and_tokenize(request, tok)
        text = request.prompt or ""
        with stage(tracing, TOKENIZE):
            return text, await tok.encode_async(text)
    with stage(tracing, CHAT_TEMPLATE):
        text = await tok.render_chat_async(
            request.messages,
            tools=request.tools,
            add_generation_prompt=request.add_generation_prompt,
            continue_final_message=request.continue_final_message,
            template_kwargs=dict(request.chat_template_kwargs),
        )
    with stage(tracing, TOKENIZE):
        return text, await tok.encode_async(text)


def _check_ids(ids: Sequence[int], vocab_size: int) -> None:
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise InvalidRequest(f"token id {bad} is outside the vocabulary (size {vocab_size})", param="prompt")


def select_worker(
    registry: WorkerRegistry, policy: Policy, route: RouteRequest, exclude: Collection[Worker] = ()
) -> Worker:
    """A routable worker for the request by ``policy``, avoiding ``exclude`` (the workers a retried
    request already failed on) while any other is routable; a pinned request keeps its index."""
    candidates: Sequence[Worker] = registry.routable(route.model_id)
    if not candidates:
        raise NoHealthyWorker(f"no healthy worker is available for model {route.model_id!r}")
    if exclude and route.target_worker is None:
        untried = [w for w in candidates if w not in exclude]
        candidates = untried or candidates
    worker = policy.select(route, candidates)
    if worker is None:
        raise NoHealthyWorker(f"the requested target worker is not available for model {route.model_id!r}")
    return worker


def build_wire_request(
    request: GenerateRequest, prepared: Prepared, attempt: int, metadata: Mapping[str, str] | None = None
) -> WireRequest:
    """``metadata``: what goes to the worker as gRPC metadata instead of the client's trace headers."""
    thinking = request.chat_template_kwargs.get(
        "enable_thinking", request.chat_template_kwargs.get("thinking")
    )
    return WireRequest(
        request_id=request.request_id if attempt == 0 else f"{request.request_id}-retry{attempt}",
        input_ids=prepared.input_ids,
        original_text=prepared.text,
        sampling=request.sampling,
        stop_token_ids=prepared.wire_stop_token_ids,
        stream=request.stream,
        require_reasoning=bool(thinking),
        metadata=request.trace_carrier if metadata is None else metadata,
        constraint=prepared.constraint,
    )


async def execute(
    request: GenerateRequest,
    prepared: Prepared,
    registry: WorkerRegistry,
    policy: Policy,
    retry: RetryPolicy,
    model_id: str,
    spawn: Callable[[Coroutine[Any, Any, object]], object],
    tracing: RequestTrace | None = None,
    meter: RequestMeter | None = None,
) -> AsyncGenerator[Event, None]:
    """Run the request on a worker; before the first event, a retryable failure re-runs it on another.

    Every attempt holds a lease on its worker for as long as it runs and gives the worker's circuit
    breaker its outcome (none when the client left: that is not the worker's doing).
    """
    tried: list[Worker] = []
    created = int(time.time())
    route = RouteRequest(
        model_id,
        text=prepared.text,
        token_ids=prepared.input_ids,
        routing_key=request.routing_key,
        target_worker=request.target_worker,
    )
    attempt = 0
    failure: WorkerError | None = None
    while True:
        try:
            with stage(tracing, SELECT_WORKER):
                worker = select_worker(registry, policy, route, tried)
        except NoHealthyWorker as exc:
            if meter is not None:
                meter.failed(failure or exc)
                if failure is not None:
                    meter.exhausted()
            if failure is None:
                raise
            raise failure from None  # the retries ran out of workers: the last worker's own error
        tried.append(worker)
        if meter is not None:
            meter.selected(worker)
        url = worker.url
        traced = None if tracing is None else tracing.generate(url.host, url.port, attempt)
        wire = build_wire_request(request, prepared, attempt, None if traced is None else traced.metadata)
        if traced is None:
            assembler = ResponseAssembler(prepared.output, request.sampling.n)
        else:
            assembler = traced.assembler(prepared.output, request.sampling.n)
        started = False
        finished = False
        outcome: int | None = None
        with registry.lease(worker):
            stream = worker.client.generate(wire)
            try:
                async for message in stream:
                    if not started:
                        started = True
                        if meter is not None:
                            meter.first_token()
                        yield Started(wire.request_id, model_id, created, worker.url.url)
                    for event in assembler.feed(message):
                        yield event
                    if assembler.cut_short:
                        break  # the worker is aborted below
                else:
                    finished = True
                # Raises if the worker ended without finishing: before anything began, that is retryable.
                tail = assembler.finish()
                outcome = 200
            except WorkerError as exc:
                outcome = exc.status
                if traced is not None:
                    traced.fail(exc)
                if meter is not None:
                    meter.worker_failed(worker, exc)
                if started or not retry.should_retry(exc.status, attempt):
                    if meter is not None:
                        meter.failed(exc)
                        if not started and exc.status in RETRYABLE_STATUSES:
                            meter.exhausted()
                    raise
                failure = exc
            except GatewayError as exc:
                if meter is not None:
                    meter.failed(exc)
                raise
            finally:
                await stream.aclose()
                if not finished:
                    spawn(worker.client.abort(wire.request_id, "Stream dropped"))
                if outcome is not None:
                    registry.record_outcome(worker, outcome)
                if traced is not None:
                    traced.end(outcome)
        if failure is not None and outcome != 200:
            log.warning("retrying %s after: %s", wire.request_id, failure.message)
            backoff = retry.backoff(attempt)
            if meter is not None:
                meter.retried(attempt, backoff)
            await asyncio.sleep(backoff)
            attempt += 1
            continue
        if meter is not None:
            meter.succeeded(tail)
        if not started:
            yield Started(wire.request_id, model_id, created, worker.url.url)
        for event in tail:
            yield event
        return
