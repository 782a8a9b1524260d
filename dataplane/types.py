"""API-neutral values that flow through the data plane: one request in, a stream of events out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

FinishReason = Literal["stop", "length", "abort", "tool_calls"]
JsonObject: TypeAlias = Mapping[str, Any]
ToolChoiceMode = Literal["auto", "none", "required", "function"]
ConstraintKind = Literal["json_schema", "regex", "ebnf", "structural_tag"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Sampling knobs as the client gave them; ``None`` means "model default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float | None = None
    min_tokens: int = 0
    seed: int | None = None
    n: int = 1
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    no_stop_trim: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    logit_bias: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """Whether the model may (``auto``), may not (``none``) or must (``required``) call a tool;
    ``function``: it must call the one named."""

    mode: ToolChoiceMode = "auto"
    function: str | None = None


@dataclass(frozen=True, slots=True)
class Constraint:
    """A structured-output constraint the worker enforces while sampling (one per request at most)."""

    kind: ConstraintKind
    value: str  # a JSON schema's text, a regex, an EBNF grammar or a structural tag's JSON


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """One generation request, whichever API it came from.

    Exactly one of ``messages`` (chat; rendered with the model's chat template), ``prompt`` (text) or
    ``prompt_ids`` (pre-tokenized) is set.
    """

    request_id: str
    model: str
    sampling: SamplingParams
    messages: tuple[JsonObject, ...] | None = None
    prompt: str | None = None
    prompt_ids: tuple[int, ...] | None = None
    tools: tuple[JsonObject, ...] = ()  # as the chat template gets them
    tool_choice: ToolChoice = ToolChoice()
    parallel_tool_calls: bool = True
    constraint: Constraint | None = None  # the client's (response_format, regex, ebnf); tools add theirs
    separate_reasoning: bool = True  # reasoning_content apart from content, when the model has a parser
    chat_template_kwargs: JsonObject = field(default_factory=dict)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    stream: bool = False
    trace_carrier: Mapping[str, str] = field(default_factory=dict)
    routing_key: str | None = None  # X-SMG-Routing-Key
    target_worker: str | None = None  # X-SMG-Target-Worker


@dataclass(frozen=True, slots=True)
class TopLogprob:
    token: str
    token_id: int
    raw: bytes  # the token's exact bytes; ``token`` is their lenient UTF-8 decoding
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    token_id: int
    logprob: float
    top: tuple[TopLogprob, ...] = ()
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class Started:
    """The worker accepted the request; nothing after this can be retried."""

    request_id: str
    model: str
    created: int
    worker: str


@dataclass(slots=True)  # not frozen: one per worker message, and frozen inits cost 3x
class TextDelta:
    index: int
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(slots=True)  # not frozen: one per worker message, and frozen inits cost 3x
class ReasoningDelta:
    index: int
    text: str


@dataclass(slots=True)  # not frozen: one per worker message, and frozen inits cost 3x
class ToolCallDelta:
    index: int
    tool_index: int
    id: str | None
    name: str | None
    arguments_delta: str


@dataclass(frozen=True, slots=True)
class Finished:
    index: int
    reason: FinishReason
    matched_stop: int | str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


Event: TypeAlias = Started | TextDelta | ReasoningDelta | ToolCallDelta | Finished | Usage


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str = ""


@dataclass(slots=True)
class Choice:
    """A finished choice, folded from its events."""

    index: int
    text: str = ""
    reasoning: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    matched_stop: int | str | None = None

    def add_tool_call_delta(self, delta: ToolCallDelta) -> None:
        if delta.tool_index == len(self.tool_calls):
            self.tool_calls.append(ToolCall(delta.id or "", delta.name or ""))
        self.tool_calls[delta.tool_index].arguments += delta.arguments_delta


@dataclass(slots=True)
class Completion:
    """A whole response folded from an event stream (the non-streaming view)."""

    started: Started
    choices: list[Choice]
    usage: Usage


# --- What the data plane asks of a worker, and what comes back (engine-neutral) ---------------------


@dataclass(frozen=True, slots=True)
class Bootstrap:
    """Where a PD decode worker meets its prefill worker for one request (SGLang's bootstrap room)."""

    host: str
    port: int
    room: int


@dataclass(frozen=True, slots=True)
class WireRequest:
    """A tokenized request ready for a worker; built by the pipeline, encoded by the client."""

    request_id: str
    input_ids: list[int]
    original_text: str
    sampling: SamplingParams
    stop_token_ids: tuple[int, ...]
    stream: bool
    require_reasoning: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    constraint: Constraint | None = None
    bootstrap: Bootstrap | None = None  # PD disaggregation: sent identically to the prefill and the decode
    kv_transfer_params: str | None = None  # vLLM PD: the connector's JSON (to the prefill, then the decode)


@dataclass(frozen=True, slots=True)
class LogprobBlock:
    """Parallel arrays as engines send them: per position the chosen token and its top alternatives."""

    token_ids: list[int]
    logprobs: list[float]
    top: list[tuple[list[int], list[float]]]


@dataclass(slots=True)  # not frozen: one per worker message, and frozen inits cost 3x
class Chunk:
    """Newly generated token ids (a delta) for one choice index."""

    index: int
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    logprobs: LogprobBlock | None = None


@dataclass(frozen=True, slots=True)
class Complete:
    """End of one choice index. ``output_ids`` are cumulative when not streaming."""

    index: int
    output_ids: list[int]
    finish_reason: str
    matched_stop: int | str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int = 0
    logprobs: LogprobBlock | None = None
    kv_transfer_params: str | None = None  # vLLM PD: where a prefill worker left the KV cache (JSON)


WorkerMessage: TypeAlias = Chunk | Complete


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What a worker says about itself at registration."""

    served_model_name: str
    model_path: str
    tokenizer_path: str
    max_context_length: int
    eos_token_ids: tuple[int, ...]
    weight_version: str


# --- What workers report about their load and their KV cache (engine-neutral) -------------------------


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """A worker's own load figures (``GetLoads``, or the record on a KV event batch), summed over DP ranks."""

    running_requests: int
    waiting_requests: int
    token_usage: float  # KV-cache utilization in [0, 1]
    gen_throughput: float = 0.0  # tokens/s, 0 when unknown
    waiting_uncached_tokens: int | None = None  # queued prompt tokens not served from cache
    received_at: float = 0.0  # time.monotonic() when the gateway received it


@dataclass(frozen=True, slots=True)
class KvBlock:
    """One stored KV block: the engine's hash for it and the token ids it holds."""

    block_hash: int
    token_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class KvStored:
    blocks: tuple[KvBlock, ...]
    parent_block_hash: int | None  # the engine hash of the block before the first one; None at the root


@dataclass(frozen=True, slots=True)
class KvRemoved:
    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class KvCleared:
    pass


KvEvent: TypeAlias = KvStored | KvRemoved | KvCleared


@dataclass(frozen=True, slots=True)
class KvEventBatch:
    """One batch of a worker's ``SubscribeKvEvents`` stream (local device-tier blocks only)."""

    sequence_number: int
    events: tuple[KvEvent, ...]
    dp_rank: int | None = None
    load: EngineLoad | None = None
    load_only: bool = False  # a load heartbeat repeating the last sequence number: no events to apply
    snapshot: bool = False  # one chunk of a state snapshot: a resync of the worker's whole state
