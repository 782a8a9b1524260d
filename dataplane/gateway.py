"""The data plane's facade: worker registration, models and tokenizers, ``generate`` and ``collect``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, assert_never

from opentelemetry.trace import Tracer, TracerProvider

from dataplane import tokenizer_fetch
from dataplane.circuit import BreakerConfig, CircuitBreaker
from dataplane.client import ShipsTokenizer, WorkerClient
from dataplane.config import GatewayConfig, PolicyName, WorkerSpec, WorkerType
from dataplane.engine_clients import DetectingClient, engine_client
from dataplane.errors import ConfigError, GatewayError, InternalError, InvalidRequest, ModelNotFound
from dataplane.health import HealthPolicy, monitor_health
from dataplane.metrics import UNKNOWN_MODEL, GatewayMetrics, RequestMeter
from dataplane.monitors import KvFeed, maintain, poll_loads
from dataplane.parsing import ParserNames, parser_names
from dataplane.pd import execute_pd, select_role
from dataplane.pipeline import Prepared, execute, is_long, prepare, render_and_tokenize, select_worker
from dataplane.retry import RetryPolicy
from dataplane.routing import Policy, RouteRequest, make_policy
from dataplane.sticky import StickyKeys
from dataplane.telemetry import RequestTrace, tracer
from dataplane.tokenizer import ModelTokenizer, load_tokenizer
from dataplane.tokenizer_cache import CacheConfig
from dataplane.tokenizer_registry import TokenizerRegistry
from dataplane.types import (
    Choice,
    Completion,
    Event,
    Finished,
    GenerateRequest,
    ReasoningDelta,
    Started,
    TextDelta,
    ToolCallDelta,
    Usage,
    WorkerInfo,
)
from dataplane.workers import DuplicateWorker, Worker, WorkerRegistry

log = logging.getLogger(__name__)
ClientFactory = Callable[[WorkerSpec], WorkerClient]


def grpc_client_factory(spec: WorkerSpec) -> WorkerClient:
    if spec.url.mode != "grpc":
        raise ConfigError(f"{spec.url.url}: this client factory serves only grpc:// workers")
    return engine_client(spec.url.host, spec.url.port, spec.api_key, spec.runtime)


@dataclass(frozen=True, slots=True)
class Model:
    """A served model. ``proxied`` models live on OpenAI-HTTP workers that tokenize for themselves."""

    id: str
    tokenizer: ModelTokenizer | None
    created: int
    proxied: bool = False


def build_policy(config: GatewayConfig) -> Policy:
    """The configured routing policy; a name the routing package has not built is a start-up error."""
    try:
        policy = make_policy(config.policy, config.routing)
        if config.routing_key_override and config.policy != "manual":
            policy = StickyKeys(policy, make_policy("manual", config.routing))
    except (NotImplementedError, ValueError) as exc:
        raise ConfigError(f"policy {config.policy} is not supported yet: {exc}") from exc
    return policy


def _pending(worker: Worker) -> bool:
    return worker.status == "pending"


class Gateway:
    """Owns workers and models; turns a ``GenerateRequest`` into a stream of ``Event``s."""

    def __init__(
        self,
        config: GatewayConfig,
        client_factory: ClientFactory = grpc_client_factory,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.config = config
        # None: tracing is off, and the data path only checks that. ``tracer_provider``: instead of the
        # global one the entrypoint installs.
        self.tracer: Tracer | None = tracer(tracer_provider) if config.tracing.enabled else None
        self.registry = WorkerRegistry()
        self.policy = build_policy(config)
        # PD: the policy that picks each role's worker (--prefill-policy/--decode-policy, else --policy).
        self.role_policies: dict[WorkerType, Policy] = {
            "prefill": self._role_policy(config.prefill_policy),
            "decode": self._role_policy(config.decode_policy),
        }
        self.retry = RetryPolicy(
            max_attempts=1 if config.disable_retries else config.retry_max_retries,
            initial_backoff_ms=config.retry_initial_backoff_ms,
            max_backoff_ms=config.retry_max_backoff_ms,
            multiplier=config.retry_backoff_multiplier,
            jitter_factor=config.retry_jitter_factor,
        )
        self._breaker = BreakerConfig(
            failure_threshold=config.cb_failure_threshold,
            success_threshold=config.cb_success_threshold,
            timeout_secs=config.cb_timeout_duration_secs,
            enabled=not config.disable_circuit_breaker,
        )
        self._client_factory = client_factory
        self._models: dict[str, Model] = {}
        self._aliases: dict[str, str] = {}
        self._tokenizers: dict[str, asyncio.Future[ModelTokenizer]] = {}
        # Tasks first: the registry spawns its loads.
        self._tasks: set[asyncio.Task[Any]] = set()
        self.registered_tokenizers = TokenizerRegistry(self._load_registered, self.spawn)
        self.metrics = GatewayMetrics(config.policy, config.prometheus_duration_buckets)
        self.metrics.watch(self.registry, self.tokenizers)
        self.first_ready = asyncio.Event()  # set when the first worker is registered
        self._worker_tasks: dict[str, list[asyncio.Task[Any]]] = {}
        self._health = HealthPolicy(
            interval=config.health_check_interval_secs,
            timeout=config.health_check_timeout_secs,
            failure_threshold=config.health_failure_threshold,
            success_threshold=config.health_success_threshold,
        )

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register every worker in the background; the gateway serves (and is not ready) meanwhile."""
        for spec in self.config.worker_specs():
            self.add_worker(spec, configured=True)
        if not self.config.disable_health_check:
            probed = self.metrics.health_checked
            self.spawn(monitor_health(self.registry, self._health, self._on_failed, probed))
        if self.policy.needs_loads:
            interval = self.config.load_monitor_interval
            self.spawn(poll_loads(self.registry, interval, self.config.health_check_timeout_secs))
        self.spawn(maintain(self.policy, self.config.routing.eviction_interval_secs))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.registry.all():
            worker.client.close()

    def spawn(self, coro: Coroutine[Any, Any, object]) -> asyncio.Task[Any]:
        """Run a background task that the gateway keeps a reference to and cancels on stop."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- workers ---------------------------------------------------------------------------------------

    def add_worker(self, spec: WorkerSpec, *, configured: bool = False) -> Worker:
        """Add a worker (``pending``) and register it in the background. ``configured``: one of the
        command line's workers, to which ``--served-model-name`` and ``--model-path`` apply.
        Raises ``DuplicateWorker`` for an address already registered."""
        if self.registry.get(spec.url.worker_id) is not None:
            raise DuplicateWorker(f"worker {spec.url.url} is already registered (id {spec.url.worker_id})")
        worker = Worker(
            url=spec.url,
            client=self._client_factory(spec),
            worker_type=spec.worker_type,
            bootstrap_port=spec.bootstrap_port,
            labels=dict(spec.labels),
            breaker=CircuitBreaker(self._breaker, observer=self.metrics.breaker(spec.url.url)),
        )
        self.registry.add(worker)
        self._worker_tasks[worker.id] = [self.spawn(self._register(worker, spec.labels, configured))]
        return worker

    def drain(self, worker: Worker) -> None:
        """Take the worker out of routing now; remove it once its in-flight requests are done."""
        if worker.status != "draining":
            self.registry.set_status(worker, "draining")
            self.spawn(self._retire(worker))

    async def _retire(self, worker: Worker) -> None:
        for task in self._worker_tasks.pop(worker.id, ()):
            task.cancel()
        await self.registry.wait_idle(worker)
        self.registry.remove(worker)
        if self.policy.kv_events is not None:
            self.policy.kv_events.forget(worker.url.url)
        await asyncio.sleep(0)  # let the aborts spawned by the last requests leave first
        worker.client.close()
        log.info("worker %s removed", worker.url.url)

    def _on_failed(self, worker: Worker) -> None:
        if self.config.remove_unhealthy_workers:
            self.drain(worker)

    async def _register(self, worker: Worker, labels: Mapping[str, str], configured: bool) -> None:
        delay = 0.2
        while _pending(worker):
            try:
                info = await worker.client.model_info(timeout=self.config.health_check_timeout_secs)
                model = await self._model_for(
                    info, worker, proxied=worker.url.mode == "http", configured=configured
                )
            except Exception as exc:  # even a bug must not leave the worker unregistered for good
                if isinstance(exc, GatewayError):
                    log.info("worker %s not registered yet: %s", worker.url.url, exc.message)
                else:
                    log.exception("registering worker %s failed", worker.url.url)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if not _pending(worker):
                return  # failed or removed meanwhile
            if isinstance(worker.client, DetectingClient) and worker.client.detected is not None:
                worker.client = worker.client.detected  # the engine's own client from now on
            worker.model_id = model.id
            worker.labels = {
                "served_model_name": info.served_model_name,
                "weight_version": info.weight_version,
                **labels,
            }
            worker.consecutive_failures = worker.consecutive_successes = 0
            self.registry.set_status(worker, "ready")
            self.first_ready.set()
            log.info("worker %s registered for model %s", worker.url.url, model.id)
            if self.policy.kv_events is not None and worker.url.mode == "grpc":
                feed = KvFeed(worker, self.policy.kv_events)
                self._worker_tasks.setdefault(worker.id, []).append(self.spawn(feed.run()))

    async def _model_for(self, info: WorkerInfo, worker: Worker, *, proxied: bool, configured: bool) -> Model:
        # The command line names its own workers' model; a worker added later names its own.
        model_id = (self.config.served_model_name if configured else None) or info.served_model_name
        model_id = model_id or info.model_path or (self.config.model_path if configured else None) or ""
        if not model_id:
            raise ConfigError("the worker reports no model name")
        if model_id in self._models:
            if self._models[model_id].proxied != proxied:
                raise ConfigError(f"model {model_id!r} is served by both gRPC and HTTP workers")
            return self._models[model_id]
        tokenizer = None if proxied else await self._tokenizer(info, configured, worker)
        model = self._models.setdefault(model_id, Model(model_id, tokenizer, int(time.time()), proxied))
        for alias in (self.config.model_path, info.model_path):
            if alias:
                self._aliases.setdefault(alias, model_id)
        return model

    async def _tokenizer(self, info: WorkerInfo, configured: bool, worker: Worker) -> ModelTokenizer:
        source = self._tokenizer_source(info, configured)
        key = source or f"worker:{info.served_model_name or info.model_path}"
        if key not in self._tokenizers:
            # Loading a large tokenizer.json takes a second of CPU: off the event loop, once per source
            # even when several workers register at the same time.
            load = self._load_tokenizer(source) if source else self._fetch_tokenizer(info, worker)
            self._tokenizers[key] = asyncio.ensure_future(load)
        try:
            return await asyncio.shield(self._tokenizers[key])
        except GatewayError:
            self._tokenizers.pop(key, None)  # let the next registration attempt try again
            raise

    def _tokenizer_source(self, info: WorkerInfo, configured: bool) -> str | None:
        """A local directory with the model's tokenizer.json; ``None``: ask the worker for it."""
        ours: tuple[str | None, ...] = (
            (self.config.tokenizer_path, self.config.model_path) if configured else ()
        )
        for candidate in (*ours, info.tokenizer_path, info.model_path):
            if candidate and (Path(candidate) / "tokenizer.json").is_file():
                return candidate
        return None

    async def _load_tokenizer(self, directory: str) -> ModelTokenizer:
        return await self._load_with_template(directory, self.config.chat_template)

    async def _load_registered(self, directory: str, chat_template: str | None) -> ModelTokenizer:
        """A tokenizer registered at run time: its own template, or its directory's."""
        return await self._load_with_template(directory, chat_template)

    async def _load_with_template(self, directory: str, chat_template: str | None) -> ModelTokenizer:
        c = self.config
        cache = CacheConfig(
            enable_l0=c.tokenizer_cache_enable_l0,
            l0_max_entries=c.tokenizer_cache_l0_max_entries,
            l0_max_memory=c.tokenizer_cache_l0_max_memory,
            enable_l1=c.tokenizer_cache_enable_l1,
            l1_max_memory=c.tokenizer_cache_l1_max_memory,
        )
        return await asyncio.to_thread(load_tokenizer, directory, chat_template, cache)

    async def _fetch_tokenizer(self, info: WorkerInfo, worker: Worker) -> ModelTokenizer:
        """No local tokenizer: the worker's own, over ``GetTokenizer`` (verified, unpacked to the cache)."""
        if not isinstance(worker.client, ShipsTokenizer):
            raise ConfigError(
                f"no local tokenizer for model {info.served_model_name!r} and worker {worker.url.url} "
                "cannot send its own: pass --model-path or --tokenizer-path with a directory holding "
                "tokenizer.json"
            )
        bundle = await worker.client.get_tokenizer(timeout=max(60.0, self.config.health_check_timeout_secs))
        directory = await asyncio.to_thread(tokenizer_fetch.install, bundle)
        log.info("tokenizer of %s fetched from %s into %s", info.served_model_name, worker.url.url, directory)
        return await self._load_tokenizer(str(directory))

    # --- queries ---------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """At least one healthy worker; with PD, a healthy prefill and a healthy decode worker."""
        if not self.config.pd_disaggregation:
            return self.registry.ready_count() > 0
        return {"prefill", "decode"} <= {w.worker_type for w in self.registry.all() if w.healthy}

    def models(self) -> list[Model]:
        """The models that have at least one worker."""
        return [m for m in self._models.values() if self.registry.serves(m.id)]

    def tokenizers(self) -> list[ModelTokenizer]:
        """Every loaded tokenizer: the models' (models of HTTP workers have none) and the registered."""
        models = [m.tokenizer for m in self._models.values() if m.tokenizer is not None]
        return models + self.registered_tokenizers.loaded()

    def has_model(self, name: str) -> bool:
        """Whether ``name`` names a model the gateway knows (or an alias of one), served now or not."""
        return name in self._models or name in self._aliases

    def model(self, name: str) -> Model:
        model = self._models.get(name) or self._models.get(self._aliases.get(name, ""))
        if model is None or not self.registry.serves(model.id):
            known = ", ".join(sorted(self._models)) or "none registered yet"
            raise ModelNotFound(f"model {name!r} not found (available: {known})", param="model")
        return model

    # --- the data path ---------------------------------------------------------------------------------

    def select_role(self, route: RouteRequest, kind: WorkerType) -> Worker:
        """A routable prefill or decode worker for the model (PD), by that role's policy."""
        return select_role(self.registry, self.role_policies[kind], route, kind)

    def _role_policy(self, name: PolicyName | None) -> Policy:
        if name is None:
            return self.policy
        return build_policy(dataclasses.replace(self.config, policy=name, routing_key_override=False))

    def select(self, route: RouteRequest, exclude: Collection[Worker] = ()) -> Worker:
        """A routable worker for the model by the configured policy, avoiding ``exclude`` while another
        is routable (for proxied HTTP requests)."""
        return select_worker(self.registry, self.policy, route, exclude)

    def tokenizer(self, name: str) -> ModelTokenizer:
        """The tokenizer of model ``name``, else the one registered as ``name`` (``POST /v1/tokenizers``)."""
        try:
            model = self.model(name)
        except ModelNotFound:
            if (registered := self.registered_tokenizers.find(name)) is not None:
                return registered
            raise
        if model.tokenizer is None:
            raise InvalidRequest(
                f"model {model.id!r} is served by HTTP workers; the gateway has no tokenizer"
            )
        return model.tokenizer

    def generate(self, request: GenerateRequest, endpoint: str | None = None) -> AsyncGenerator[Event, None]:
        """Validate, tokenize and route eagerly (errors raise here), then stream the worker's events.
        ``endpoint``: the API in the metrics (default: chat for messages, else completions)."""
        endpoint = endpoint or ("chat" if request.messages is not None else "completions")
        try:
            model = self.model(request.model)
        except ModelNotFound as exc:
            self.metrics.request(UNKNOWN_MODEL, endpoint, request.stream).failed(exc)
            raise
        meter = self.metrics.request(model.id, endpoint, request.stream)
        try:
            parsers = parser_names(model.id, self.config.tool_call_parser, self.config.reasoning_parser)
            tok = self.tokenizer(model.id)
            tracing = None if self.tracer is None else RequestTrace(self.tracer, request, model.id)
            if is_long(request):
                return self._generate_long(request, tok, parsers, model.id, tracing, meter)
            prepared = prepare(request, tok, parsers, tracing=tracing)
        except GatewayError as exc:
            meter.failed(exc)
            raise
        if self.config.log_prompts:
            log.info("prompt: %r", prepared.text)
        return self._execute(request, prepared, model.id, tracing, meter)

    def _execute(
        self,
        request: GenerateRequest,
        prepared: Prepared,
        model_id: str,
        tracing: RequestTrace | None,
        meter: RequestMeter,
    ) -> AsyncGenerator[Event, None]:
        if self.config.pd_disaggregation:
            return execute_pd(
                request, prepared, self.registry, self.role_policies, model_id, self.spawn, tracing, meter
            )
        return execute(
            request, prepared, self.registry, self.policy, self.retry, model_id, self.spawn, tracing, meter
        )

    async def _generate_long(
        self,
        request: GenerateRequest,
        tok: ModelTokenizer,
        parsers: ParserNames,
        model_id: str,
        tracing: RequestTrace | None,
        meter: RequestMeter,
    ) -> AsyncGenerator[Event, None]:
        """``generate`` for a long prompt, rendered and tokenized off the event loop: a 100k-token prompt
        must not stall every other request. Errors still come before the first event."""
        try:
            prepared = prepare(request, tok, parsers, await render_and_tokenize(request, tok, tracing))
        except GatewayError as exc:
            meter.failed(exc)
            raise
        if self.config.log_prompts:
            log.info("prompt: %r", prepared.text)
        stream = self._execute(request, prepared, model_id, tracing, meter)
        async with contextlib.aclosing(stream):
            async for event in stream:
                yield event

    async def collect(self, request: GenerateRequest) -> Completion:
        """The non-streaming view of one request."""
        return await self.collect_stream(self.generate(request), n=request.sampling.n)

    async def collect_stream(self, stream: AsyncGenerator[Event, None], *, n: int) -> Completion:
        """Fold an event stream into a ``Completion``: non-streaming is a fold over the same events."""
        started: Started | None = None
        usage = Usage(0, 0)
        choices = {i: Choice(i) for i in range(n)}
        async with contextlib.aclosing(stream):
            async for event in stream:
                match event:
                    case Started():
                        started = event
                    case TextDelta(index=i):
                        choices[i].text += event.text
                        choices[i].logprobs.extend(event.logprobs)
                    case ReasoningDelta(index=i):
                        choices[i].reasoning += event.text
                    case ToolCallDelta(index=i):
                        choices[i].add_tool_call_delta(event)
                    case Finished(index=i):
                        choices[i].finish_reason = event.reason
                        choices[i].matched_stop = event.matched_stop
                    case Usage():
                        usage = event
                    case _:
                        assert_never(event)
        if started is None:
            raise InternalError("the event stream ended before it started")
        if self.config.log_prompts:  # streamed completions are not logged: that would cost per token
            log.info("completion: %r", [choices[i].text for i in sorted(choices)])
        return Completion(started, [choices[i] for i in sorted(choices)], usage)
