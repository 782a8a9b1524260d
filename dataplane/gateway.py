"""The data plane's facade: worker registration, models and tokenizers, ``generate`` and ``collect``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, assert_never

from dataplane.client import SglangClient, WorkerClient
from dataplane.config import GatewayConfig, WorkerUrl
from dataplane.errors import ConfigError, GatewayError, InternalError, InvalidRequest, ModelNotFound
from dataplane.pipeline import execute, prepare, select_worker
from dataplane.routing import RouteRequest, make_policy
from dataplane.tokenizer import ModelTokenizer, load_tokenizer
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
from dataplane.workers import HealthPolicy, Worker, WorkerRegistry, monitor_health

log = logging.getLogger(__name__)
ClientFactory = Callable[[WorkerUrl], WorkerClient]


def grpc_client_factory(url: WorkerUrl) -> WorkerClient:
    if url.mode != "grpc":
        raise ConfigError(f"{url.url}: this client factory serves only grpc:// workers")
    return SglangClient(url.host, url.port)


@dataclass(frozen=True, slots=True)
class Model:
    """A served model. ``proxied`` models live on OpenAI-HTTP workers that tokenize for themselves."""

    id: str
    tokenizer: ModelTokenizer | None
    created: int
    proxied: bool = False


class Gateway:
    """Owns workers and models; turns a ``GenerateRequest`` into a stream of ``Event``s."""

    def __init__(self, config: GatewayConfig, client_factory: ClientFactory = grpc_client_factory) -> None:
        self.config = config
        self.registry = WorkerRegistry()
        self.policy = make_policy(config.policy, config.routing)
        self._client_factory = client_factory
        self._models: dict[str, Model] = {}
        self._aliases: dict[str, str] = {}
        self._tokenizers: dict[str, asyncio.Future[ModelTokenizer]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._health = HealthPolicy(
            interval=config.health_check_interval_secs,
            timeout=config.health_check_timeout_secs,
            failure_threshold=config.health_failure_threshold,
            success_threshold=config.health_success_threshold,
        )

    # --- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register every worker in the background; the gateway serves (and is not ready) meanwhile."""
        for url in self.config.worker_urls:
            worker = Worker(url=url, client=self._client_factory(url))
            self.registry.add(worker)
            self.spawn(self._register(worker))
        if not self.config.disable_health_check:
            self.spawn(monitor_health(self.registry, self._health))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self.registry.all():
            worker.client.close()

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        """Run a background task that the gateway keeps a reference to and cancels on stop."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _register(self, worker: Worker) -> None:
        delay = 0.2
        while True:
            try:
                info = await worker.client.model_info(timeout=self.config.health_check_timeout_secs)
                model = await self._model_for(info, proxied=worker.url.mode == "http")
            except Exception as exc:  # even a bug must not leave the worker unregistered for good
                if isinstance(exc, GatewayError):
                    log.info("worker %s not registered yet: %s", worker.url.url, exc.message)
                else:
                    log.exception("registering worker %s failed", worker.url.url)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            worker.model_id = model.id
            worker.labels = {
                "served_model_name": info.served_model_name,
                "weight_version": info.weight_version,
            }
            self.registry.set_status(worker, "ready")
            log.info("worker %s registered for model %s", worker.url.url, model.id)
            return

    async def _model_for(self, info: WorkerInfo, *, proxied: bool) -> Model:
        model_id = self.config.served_model_name or info.served_model_name or info.model_path
        model_id = model_id or self.config.model_path or ""
        if not model_id:
            raise ConfigError("the worker reports no model name")
        if model_id in self._models:
            if self._models[model_id].proxied != proxied:
                raise ConfigError(f"model {model_id!r} is served by both gRPC and HTTP workers")
            return self._models[model_id]
        tokenizer = None if proxied else await self._tokenizer(info)
        model = self._models.setdefault(model_id, Model(model_id, tokenizer, int(time.time()), proxied))
        for alias in (self.config.model_path, info.model_path):
            if alias:
                self._aliases.setdefault(alias, model_id)
        return model

    async def _tokenizer(self, info: WorkerInfo) -> ModelTokenizer:
        source = self._tokenizer_source(info)
        if source not in self._tokenizers:
            # Loading a large tokenizer.json takes a second of CPU: off the event loop, once per source
            # even when several workers register at the same time.
            self._tokenizers[source] = asyncio.ensure_future(
                asyncio.to_thread(load_tokenizer, source, self.config.chat_template)
            )
        try:
            return await asyncio.shield(self._tokenizers[source])
        except GatewayError:
            self._tokenizers.pop(source, None)  # let the next registration attempt try again
            raise

    def _tokenizer_source(self, info: WorkerInfo) -> str:
        for candidate in (self.config.tokenizer_path, self.config.model_path, info.tokenizer_path):
            if candidate and (Path(candidate) / "tokenizer.json").is_file():
                return candidate
        raise ConfigError(
            f"no local tokenizer for model {info.served_model_name!r}: pass --model-path or --tokenizer-path "
            "with a directory holding tokenizer.json"
        )

    # --- queries ---------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.registry.healthy_count() > 0

    def models(self) -> list[Model]:
        return list(self._models.values())

    def model(self, name: str) -> Model:
        model = self._models.get(name) or self._models.get(self._aliases.get(name, ""))
        if model is None:
            known = ", ".join(sorted(self._models)) or "none registered yet"
            raise ModelNotFound(f"model {name!r} not found (available: {known})", param="model")
        return model

    # --- the data path ---------------------------------------------------------------------------------

    def select(self, route: RouteRequest) -> Worker:
        """A healthy worker for the model, by the configured policy (for proxied HTTP requests)."""
        return select_worker(self.registry, self.policy, route, set())

    def tokenizer(self, name: str) -> ModelTokenizer:
        model = self.model(name)
        if model.tokenizer is None:
            raise InvalidRequest(
                f"model {model.id!r} is served by HTTP workers; the gateway has no tokenizer"
            )
        return model.tokenizer

    def generate(self, request: GenerateRequest) -> AsyncGenerator[Event, None]:
        """Validate, tokenize and route eagerly (errors raise here), then stream the worker's events."""
        model = self.model(request.model)
        prepared = prepare(request, self.tokenizer(model.id))
        return execute(request, prepared, self.registry, self.policy, model.id, self.spawn)

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
        return Completion(started, [choices[i] for i in sorted(choices)], usage)
