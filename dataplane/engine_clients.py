"""The gRPC client for a worker's engine: SGLang's, vLLM's or TensorRT-LLM's service, named or found out.

A worker added without a runtime (``--backend auto``, the default, or ``POST /workers`` without
``runtime_type``) gets a ``DetectingClient``: its first ``model_info`` asks SGLang's ``GetModelInfo``, on
UNIMPLEMENTED vLLM's, then TensorRT-LLM's, as SMG probes the runtimes in turn; from then on it is that
engine's client. The gateway then puts the detected client itself on the worker (``detected``), so
requests do not pay for the indirection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

from dataplane.client import SglangClient, WorkerClient
from dataplane.config import Runtime
from dataplane.errors import WorkerError
from dataplane.tokenizer_fetch import TokenizerBundle
from dataplane.trtllm_client import TrtllmClient
from dataplane.types import EngineLoad, KvEventBatch, WireRequest, WorkerInfo, WorkerMessage
from dataplane.vllm_client import VllmClient

log = logging.getLogger(__name__)

UNIMPLEMENTED = 501  # the HTTP status a gRPC UNIMPLEMENTED maps to (dataplane/client.py)
EngineClient = SglangClient | VllmClient | TrtllmClient
CANDIDATES: tuple[type[EngineClient], ...] = (SglangClient, VllmClient, TrtllmClient)


def engine_client(host: str, port: int, api_key: str | None, runtime: Runtime) -> WorkerClient:
    match runtime:
        case "sglang":
            return SglangClient(host, port, api_key)
        case "vllm":
            return VllmClient(host, port, api_key)
        case "trtllm":
            return TrtllmClient(host, port, api_key)
        case "auto":
            return DetectingClient(host, port, api_key)


class DetectingClient:
    """A worker's client before anyone knows which engine service it serves."""

    def __init__(self, host: str, port: int, api_key: str | None) -> None:
        self.address = f"grpc://{host}:{port}"
        self._host, self._port, self._api_key = host, port, api_key
        self.detected: EngineClient | None = None
        self._asking = asyncio.Lock()  # registration and a health probe may ask at once: one asks

    async def model_info(self, timeout: float) -> WorkerInfo:
        if self.detected is None:
            async with self._asking:
                if self.detected is None:
                    return await self._detect(timeout)
        return await self.detected.model_info(timeout)

    async def _detect(self, timeout: float) -> WorkerInfo:
        refusals = []
        for kind in CANDIDATES:
            client = kind(self._host, self._port, self._api_key)
            try:
                info = await client.model_info(timeout)
            except WorkerError as exc:
                client.close()
                if exc.status != UNIMPLEMENTED:
                    raise
                refusals.append(exc.message)
                continue
            self.detected = client
            log.info("worker %s serves %s", self.address, kind.__name__.removesuffix("Client"))
            return info
        raise WorkerError(
            f"worker {self.address} serves none of SGLang's, vLLM's and TensorRT-LLM's gRPC services: "
            f"{'; '.join(refusals)}",
            status=UNIMPLEMENTED,
        )

    @property
    def runtime(self) -> str:
        return "auto" if self.detected is None else self.detected.runtime

    def _client(self) -> EngineClient:
        if self.detected is None:
            raise WorkerError(f"worker {self.address}: its engine is not known yet", status=503)
        return self.detected

    async def health(self, timeout: float) -> bool:
        if self.detected is None:
            try:
                await self.model_info(timeout)
            except WorkerError:
                return False
        return await self._client().health(timeout)

    def generate(self, request: WireRequest) -> AsyncGenerator[WorkerMessage, None]:
        return self._client().generate(request)

    async def abort(self, request_id: str, reason: str) -> bool:
        return self.detected is not None and await self.detected.abort(request_id, reason)

    async def get_loads(self, timeout: float) -> EngineLoad | None:
        return await self._client().get_loads(timeout)

    def kv_events(self, start_sequence_number: int) -> AsyncGenerator[KvEventBatch, None]:
        return self._client().kv_events(start_sequence_number)

    async def get_tokenizer(self, timeout: float) -> TokenizerBundle:
        return await self._client().get_tokenizer(timeout)

    def close(self) -> None:
        if self.detected is not None:
            self.detected.close()
