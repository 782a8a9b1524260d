"""Tracing in the data plane, through the OpenTelemetry API only.

The entrypoint installs the SDK (``adapters/telemetry.py``); the data plane asks for a tracer and, per
request, builds a ``RequestTrace``: children of the adapter's SERVER span for the pipeline stages
(``chat_template``, ``tokenize``, ``select_worker``, ``generate`` per attempt, ``parse``), GenAI
semantic-convention attributes set once per span, and the ``generate`` span's context injected into the
worker request's metadata (W3C ``traceparent``/``tracestate``), so the worker's own span joins the trace.

Costs: with tracing off there is no ``RequestTrace`` and the pipeline only checks for ``None``. A request
that is sampled out makes one non-recording ``generate`` span (its id goes on the wire, sampled flag 0)
and nothing else. A sampled request makes its spans and sets attributes once; nothing runs per token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from dataplane.errors import GatewayError
from dataplane.output import OutputSpec, ResponseAssembler
from dataplane.types import Event, Finished, GenerateRequest, ToolCallDelta, Usage, WorkerMessage

TRACER_NAME = "smg"

# Span names (stages of dataplane/pipeline.py).
CHAT_TEMPLATE = "chat_template"
TOKENIZE = "tokenize"
SELECT_WORKER = "select_worker"
GENERATE = "generate"
PARSE = "parse"
FIRST_TOKEN = "first_token"  # an event on ``generate``

# Attribute names: OpenTelemetry's GenAI and server semantic conventions, then ours (``smg.*``).
GEN_AI_OPERATION = "gen_ai.operation.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_TOP_P = "gen_ai.request.top_p"
GEN_AI_TOP_K = "gen_ai.request.top_k"
GEN_AI_CHOICE_COUNT = "gen_ai.request.choice.count"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_FINISH_REASONS = "gen_ai.response.finish_reasons"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
REQUEST_ID = "smg.request_id"
STREAM = "smg.stream"
ATTEMPT = "smg.attempt"
CACHED_TOKENS = "smg.usage.cached_tokens"
REASONING_TOKENS = "smg.usage.reasoning_tokens"
CANCELLED = "smg.cancelled"
REASONING_PARSER = "smg.parse.reasoning_parser"
TOOL_MODE = "smg.parse.tool_mode"
TOOL_PARSER = "smg.parse.tool_parser"
TOOL_CALLS = "smg.parse.tool_calls"

_NO_SPAN: AbstractContextManager[None] = contextlib.nullcontext()


def tracer(provider: TracerProvider | None = None) -> Tracer:
    """The gateway's tracer: from ``provider``, else from the one the entrypoint installed globally."""
    return trace.get_tracer(TRACER_NAME, tracer_provider=provider)


@contextlib.contextmanager
def proxy_attempt(
    tracer: Tracer | None, model: str, host: str, port: int, attempt: int, headers: Mapping[str, str]
) -> Iterator[tuple[Mapping[str, str], Span | None]]:
    """One attempt of a request forwarded to an HTTP worker: its CLIENT ``generate`` span (a child of the
    current span, ended on exit, failed by an exception; ``CANCELLED`` when the client left) and
    ``headers`` carrying that span's context to the worker. Without a tracer: ``headers`` as they are."""
    if tracer is None:
        yield headers, None
        return
    attributes: dict[str, Any] = {GEN_AI_REQUEST_MODEL: model, SERVER_ADDRESS: host, SERVER_PORT: port}
    if attempt:
        attributes[ATTEMPT] = attempt
    span = tracer.start_span(GENERATE, kind=SpanKind.CLIENT, attributes=attributes)
    carrier = dict(headers)
    propagate.inject(carrier, trace.set_span_in_context(span))
    try:
        yield carrier, span
    except asyncio.CancelledError:
        span.set_attribute(CANCELLED, True)
        raise
    except BaseException as exc:
        error_status(span, exc)
        raise
    finally:
        span.end()


def error_status(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc`` (a gateway error keeps its stable code as ``error.type``)."""
    if isinstance(exc, GatewayError):
        span.set_status(Status(StatusCode.ERROR, exc.message))
        span.set_attribute(ERROR_TYPE, exc.code)
    else:
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.set_attribute(ERROR_TYPE, type(exc).__qualname__)


def stage(tracing: RequestTrace | None, name: str) -> AbstractContextManager[Span | None]:
    """A child span of the request around one stage; a no-op without tracing or when not sampled."""
    if tracing is None or not tracing.sampled:
        return _NO_SPAN
    return _Stage(tracing.tracer.start_span(name, tracing.parent))


class _Stage:
    """Ends its span on exit, failed when the stage raised. Never made current: spans cross ``await``s
    and async generators here, so every child names its parent explicitly instead."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        return self._span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            error_status(self._span, exc)
        self._span.end()


class RequestTrace:
    """One request's spans, children of the span that is current when it is made (the adapter's SERVER
    span; without one, each span starts a trace of its own)."""

    __slots__ = ("_attributes", "_carrier", "model", "parent", "sampled", "tracer")

    def __init__(self, tracer: Tracer, request: GenerateRequest, model: str) -> None:
        self.tracer = tracer
        self.parent: Context = otel_context.get_current()
        self._carrier = request.trace_carrier
        self.model = model
        parent = trace.get_current_span(self.parent).get_span_context()
        # Sampled out (the parent-based sampler follows the SERVER span): only ``generate`` is made.
        self.sampled = parent.trace_flags.sampled or not parent.is_valid
        self._attributes = _request_attributes(request, model) if self.sampled else {}

    def generate(self, host: str, port: int, attempt: int) -> GenerateTrace:
        """The span of one attempt on the worker at ``host:port`` (CLIENT: the gateway calls the engine)."""
        attributes = None
        if self.sampled:  # given at the start: the SDK validates them in one go
            attributes = self._attributes | {SERVER_ADDRESS: host, SERVER_PORT: port}
            if attempt:
                attributes[ATTEMPT] = attempt
        span = self.tracer.start_span(GENERATE, self.parent, kind=SpanKind.CLIENT, attributes=attributes)
        return GenerateTrace(self.tracer, self.parent, span, self._carrier)


def _request_attributes(request: GenerateRequest, model: str) -> dict[str, Any]:
    s = request.sampling
    attributes: dict[str, Any] = {
        GEN_AI_OPERATION: "chat" if request.messages is not None else "text_completion",
        GEN_AI_REQUEST_MODEL: request.model,
        REQUEST_ID: request.request_id,
        STREAM: request.stream,
    }
    if model != request.model:  # asked for by an alias
        attributes[GEN_AI_RESPONSE_MODEL] = model
    if s.max_tokens is not None:
        attributes[GEN_AI_MAX_TOKENS] = s.max_tokens
    if s.temperature is not None:
        attributes[GEN_AI_TEMPERATURE] = s.temperature
    if s.top_p is not None:
        attributes[GEN_AI_TOP_P] = s.top_p
    if s.top_k is not None:
        attributes[GEN_AI_TOP_K] = s.top_k
    if s.n != 1:
        attributes[GEN_AI_CHOICE_COUNT] = s.n
    return attributes


class GenerateTrace:
    """One attempt's ``generate`` span: the metadata that carries it to the worker, the assembler that
    observes the output (when recording), its failure and its end."""

    __slots__ = ("_parent", "_tracer", "metadata", "parse", "span")

    def __init__(
        self, tracer: Tracer, parent: Context, span: Span, client_carrier: Mapping[str, str]
    ) -> None:
        self._tracer = tracer
        self._parent = parent
        self.span = span
        self.parse: Span | None = None
        carrier: dict[str, str] = {}
        propagate.inject(carrier, trace.set_span_in_context(span, parent))
        # No SDK installed (the span is invalid): the client's own context still goes through.
        self.metadata: Mapping[str, str] = carrier or client_carrier

    def assembler(self, spec: OutputSpec, n: int) -> ResponseAssembler:
        if not self.span.is_recording():
            return ResponseAssembler(spec, n)
        return TracedAssembler(spec, n, self)

    def start_parse(self, spec: OutputSpec) -> None:
        parsing = spec.parsing
        if parsing is None:
            return
        attributes: dict[str, Any] = {}
        if parsing.reasoning_parser is not None:
            attributes[REASONING_PARSER] = parsing.reasoning_parser
        if parsing.tool_mode is not None:
            attributes[TOOL_MODE] = parsing.tool_mode
            attributes[TOOL_PARSER] = parsing.tool_parser
        self.parse = self._tracer.start_span(PARSE, self._parent, attributes=attributes)

    def fail(self, exc: BaseException) -> None:
        error_status(self.span, exc)
        if self.parse is not None:
            error_status(self.parse, exc)

    def end(self, outcome: int | None) -> None:
        """End the attempt: ``outcome`` is the status given to the worker's breaker, ``None`` when the
        attempt was left (the client went away) before it had one."""
        if outcome is None:
            self.span.set_attribute(CANCELLED, True)
        if self.parse is not None:
            self.parse.end()
        self.span.end()


class TracedAssembler(ResponseAssembler):
    """A ``ResponseAssembler`` that notes the first token, the finish reasons and the usage on the
    ``generate`` span (and times the parse stage): only for recorded spans, so only sampled requests
    pay for the look at each message's events."""

    def __init__(self, spec: OutputSpec, n: int, generate: GenerateTrace) -> None:
        super().__init__(spec, n)
        self._spec = spec
        self._generate = generate
        self._first = True
        self._reasons: dict[int, str] = {}
        self._tools = spec.parsing is not None and spec.parsing.tool_mode is not None
        self._tool_calls = 0

    def feed(self, message: WorkerMessage) -> list[Event]:
        if self._first:
            self._first = False
            self._generate.span.add_event(FIRST_TOKEN)
            self._generate.start_parse(self._spec)
        events = super().feed(message)
        # A message is about one choice, and a choice's Finished is the last event it makes.
        if events and type(last := events[-1]) is Finished:
            self._reasons[last.index] = last.reason
        if self._tools:
            self._tool_calls += sum(type(e) is ToolCallDelta and e.name is not None for e in events)
        return events

    def finish(self) -> list[Event]:
        tail = super().finish()
        attributes: dict[str, Any] = {
            GEN_AI_FINISH_REASONS: tuple(reason for _, reason in sorted(self._reasons.items())),
        }
        for usage in tail:
            if isinstance(usage, Usage):
                attributes[GEN_AI_INPUT_TOKENS] = usage.prompt_tokens
                attributes[GEN_AI_OUTPUT_TOKENS] = usage.completion_tokens
                if usage.cached_tokens:
                    attributes[CACHED_TOKENS] = usage.cached_tokens
                if usage.reasoning_tokens:
                    attributes[REASONING_TOKENS] = usage.reasoning_tokens
        self._generate.span.set_attributes(attributes)
        if (parse := self._generate.parse) is not None:
            parse.set_attribute(TOOL_CALLS, self._tool_calls)
        return tail
