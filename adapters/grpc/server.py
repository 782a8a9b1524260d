"""The gRPC ingress's lifecycle: a grpclib server beside the aiohttp one, started and stopped with it."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from grpclib.server import Server

from adapters.context import GATEWAY
from adapters.grpc.tokenizer import TokenizerService
from dataplane.gateway import Gateway

log = logging.getLogger(__name__)


class GrpcIngress:
    """The gateway's gRPC services on ``host:port`` (port 0: any free port, then ``port`` tells)."""

    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server = Server([TokenizerService(gateway)])

    async def start(self) -> None:
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            # As the HTTP listener: several gateway processes may share the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        await self._server.start(sock=sock)
        log.info("gateway gRPC API on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()


GRPC_INGRESS = web.AppKey("grpc_ingress", GrpcIngress)


def grpc_lifecycle(host: str, port: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry serving the gRPC API while the application runs."""

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        ingress = app[GRPC_INGRESS] = GrpcIngress(app[GATEWAY], host, port)
        await ingress.start()
        yield
        await ingress.stop()

    return lifecycle
