"""Reference engine simulator: serves the real SGLang scheduler, vLLM engine or TensorRT-LLM gRPC
service (or OpenAI HTTP) for tests.

It is the other side of the wire, so it imports nothing from ``dataplane``, ``adapters`` or ``parsers``.
"""

from refworker.config import ConfigError, WorkerConfig
from refworker.server import RefWorker

__all__ = ["ConfigError", "RefWorker", "WorkerConfig"]
