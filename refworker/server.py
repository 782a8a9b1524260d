"""``RefWorker``: one reference worker (gRPC or HTTP) in the current event loop."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from smg_grpc_proto.generated import sglang_scheduler_pb2_grpc, trtllm_service_pb2_grpc, vllm_engine_pb2_grpc

from refworker import control
from refworker.config import ConfigError, WorkerConfig
from refworker.engine import Engine
from refworker.grpc_common import CommonServicer
from refworker.grpc_service import SchedulerService
from refworker.http_service import HttpWorker
from refworker.model import ModelFiles
from refworker.trtllm_service import TrtllmService
from refworker.vllm_service import VllmService

SGLANG_SERVICE = "sglang.grpc.scheduler.SglangScheduler"
VLLM_SERVICE = "vllm.grpc.engine.VllmEngine"
TRTLLM_SERVICE = "trtllm.TrtllmService"
STOP_GRACE_S = 1.0
# Long prompts: gRPC's 4 MiB default would reject a 1M-token request.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_log = logging.getLogger(__name__)


class RefWorker:
    """Serve ``config`` until ``stop()``; ``engine.record`` is what tests assert on."""

    def __init__(self, config: WorkerConfig, model: ModelFiles | None = None) -> None:
        self.config = config
        model = model or ModelFiles.load(config.resolved_model_path(), config.eos_token_ids)
        self.engine = Engine(config, model)
        self.port: int | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health: health_aio.HealthServicer | None = None
        self._service: CommonServicer | None = None
        self._http: HttpWorker | None = None

    async def start(self) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        if self.config.mode == "http":
            self._http = HttpWorker(self.engine)
            self.port = await self._http.start(self.config.host, self.config.port)
            return self.port
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ]
        )
        engine = self.config.engine
        if engine == "vllm":
            self._service = VllmService(self.engine)
            vllm_engine_pb2_grpc.add_VllmEngineServicer_to_server(self._service, server)
            service_name, label = VLLM_SERVICE, "vLLM"
        elif engine == "trtllm":
            self._service = TrtllmService(self.engine)
            trtllm_service_pb2_grpc.add_TrtllmServiceServicer_to_server(self._service, server)
            service_name, label = TRTLLM_SERVICE, "TensorRT-LLM"
        else:
            self._service = SchedulerService(self.engine)
            sglang_scheduler_pb2_grpc.add_SglangSchedulerServicer_to_server(self._service, server)
            service_name, label = SGLANG_SERVICE, "SGLang"
        if engine != "sglang":  # SGLang's GetServerInfo carries the record; the others' have no place for it
            server.add_generic_rpc_handlers((control.record_handler(self.engine),))
        self._health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        port: int = server.add_insecure_port(f"{_grpc_host(self.config.host)}:{self.config.port}")
        if port == 0:
            raise ConfigError(f"cannot bind {self.config.host}:{self.config.port}")
        await server.start()
        serving = health_pb2.HealthCheckResponse.SERVING
        for name in ("", service_name):
            await self._health.set(name, serving)
        self._grpc = server
        self.port = port
        _log.info(
            "serving %s gRPC on %s:%d (model %s)", label, self.config.host, port, self.engine.model.path
        )
        return port

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Report NOT_SERVING, then give running streams ``grace`` seconds before cancelling them."""
        if self._http is not None:
            await self._http.stop()
            self._http = None
        if self._grpc is not None:
            if self._service is not None:
                self._service.shutting_down = True
            if self._health is not None:
                await self._health.enter_graceful_shutdown()
            await self._grpc.stop(grace)
            self._grpc = None
        await self.engine.close()


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
