"""The ``smg`` process's logging: text or JSON lines on stderr (and in ``--log-dir``), request ids on them.

Every line logged while a request is handled carries the id its client sees in ``x-request-id``: the HTTP
adapters put it in the ``REQUEST_ID`` context variable, which tasks spawned for the request inherit, and a
filter on the handlers copies it onto each record. ``--log-json`` lines are one object each::

    {"timestamp": "2026-11-27T14:49:04.123Z", "level": "WARN", "logger": "dataplane.pipeline",
     "message": "...", "request_id": "chatcmpl-...", <fields passed as extra=...>}

Prompt and completion texts are never logged unless ``--log-prompts`` asks for them.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import orjson
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from dataplane.errors import ConfigError

REQUEST_ID: ContextVar[str | None] = ContextVar("smg_request_id", default=None)
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
LOG_FILE = "smg.log"
ACCESS_LOGGER = "smg.access"
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TEXT_WITH_ID = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
_LEVEL_NAMES = {logging.WARNING: "WARN", logging.CRITICAL: "ERROR"}  # SMG's level names
# What every record has; anything else on a record came as ``extra=`` and goes into the JSON object.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "taskName"}


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on a record that has none of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _utc(record.created),
            "level": _LEVEL_NAMES.get(record.levelno, record.levelname),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (request_id := getattr(record, "request_id", None)) is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``timestamp LEVEL logger: message``, with ``[request id]`` after the logger while a request runs."""

    def __init__(self) -> None:
        super().__init__(_TEXT)
        self._with_id = logging.Formatter(_TEXT_WITH_ID)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is not None:
            return self._with_id.format(record)
        return super().format(record)


class AccessLogger(AbstractAccessLogger):
    """One INFO line per answered request (aiohttp's access-log hook); free when INFO is off."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        millis = round(time * 1000, 3)
        self.logger.info(
            "%s %s %d %.1f ms",
            request.method,
            request.path,
            response.status,
            millis,
            extra={
                "request_id": response.headers.get("x-request-id") or request.headers.get("x-request-id"),
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration_ms": millis,
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def log_file(log_dir: str) -> Path:
    """``DIR/smg.log``, the directory created when missing; a ``ConfigError`` when it cannot be written."""
    directory = Path(log_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOG_FILE
        path.open("a").close()
    except OSError as exc:
        raise ConfigError(f"--log-dir {log_dir}: cannot write a log file there: {exc}") from exc
    return path


@contextlib.contextmanager
def configured(level: str, *, json: bool = False, log_dir: str | None = None) -> Iterator[None]:
    """Log at ``level`` (debug, info, warn, error) to stderr, and to ``log_dir``/smg.log when given, for as
    long as the command runs."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_dir is not None:
        handlers.append(logging.handlers.TimedRotatingFileHandler(log_file(log_dir), when="midnight"))
    formatter = JsonFormatter() if json else TextFormatter()
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    previous = root.level
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(LEVELS[level])
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous)


def _utc(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"
