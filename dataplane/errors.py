"""The gateway's error tree. Every expected failure is one of these, with a stable ``code``.

::

    GatewayError
    ├── ConfigError                 bad configuration at start-up (never reaches a client)
    ├── InvalidRequest              400  invalid_request_error: the request itself is wrong
    │   └── UnsupportedParameter    400  a parameter we do not support (never silently ignored)
    ├── ModelNotFound               404  model_not_found
    ├── NotFound                    404  not_found: a stored response, conversation or item
    ├── NoHealthyWorker             503  no_available_workers
    ├── HistoryUnavailable          503  history_unavailable: the history backend cannot be reached
    ├── WorkerError                 status mapped from the worker's gRPC status / HTTP status
    │   └── WorkerStreamError       the worker failed after the stream began
    └── InternalError               500  a bug or an unexpected state
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every expected gateway failure."""

    code: str = "internal_error"
    status: int = 500

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ConfigError(GatewayError):
    code = "invalid_config"


class InvalidRequest(GatewayError):
    code = "invalid_request_error"
    status = 400


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class ModelNotFound(GatewayError):
    code = "model_not_found"
    status = 404


class NotFound(GatewayError):
    code = "not_found"
    status = 404


class HistoryUnavailable(GatewayError):
    code = "history_unavailable"
    status = 503


class NoHealthyWorker(GatewayError):
    code = "no_available_workers"
    status = 503


class WorkerError(GatewayError):
    """A worker refused or failed a request; ``status`` is the HTTP equivalent of its gRPC status."""

    code = "worker_error"

    def __init__(self, message: str, *, status: int, grpc_status: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.grpc_status = grpc_status


class WorkerStreamError(WorkerError):
    code = "worker_stream_failed"


class InternalError(GatewayError):
    code = "internal_error"
