"""Ended spans to an exporter in batches, from a thread of its own: the SDK's ``BatchSpanProcessor``, at a
lower price on the event loop.

The SDK's processor runs ~40 Python opcodes for every span that ends (``emit``: shutdown, fork and
queue-full checks, waking its thread when a batch is ready) — with six spans per request a tenth of what
tracing cost the event loop (bench/tracing_opcodes.py). Here a span that ends costs one C call,
``deque.append``, which the lean tracer (``adapters/tracer.py``) calls directly. Nothing wakes the export
thread: it looks at the queue every ``POLL_SECONDS`` and exports when a batch is full or the oldest span
has waited the schedule delay, which is what the SDK's processor does.

Settings and their meanings are the SDK's: ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_QUEUE_SIZE``,
``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` (``OTEL_BSP_EXPORT_TIMEOUT`` is unused, as by the SDK: the exporters
have their own timeouts). When the queue is full the oldest spans are dropped, as by the SDK, and the
export thread says so in the log. Left out: the SDK processor's own metrics
(``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``) and re-starting the thread in a forked child (the gateway
never forks).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
FULL_QUEUE_WARNING_SECONDS = 60.0  # at most one warning per minute about dropped spans
# The SDK's defaults.
SCHEDULE_DELAY_MS = 5000
MAX_QUEUE_SIZE = 2048
MAX_EXPORT_BATCH_SIZE = 512


class SpanBatcher(SpanProcessor):
    """Spans queued as they end, exported in batches of ``max_export_batch_size`` by a daemon thread.

    ``None`` for a setting: its ``OTEL_BSP_*`` variable in ``environ``, else the SDK's default."""

    def __init__(
        self,
        exporter: SpanExporter,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
        schedule_delay_millis: float | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        environ = environ or {}
        queue_size = max_queue_size or _setting(environ, "OTEL_BSP_MAX_QUEUE_SIZE", MAX_QUEUE_SIZE)
        batch_size = max_export_batch_size or _setting(
            environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", MAX_EXPORT_BATCH_SIZE
        )
        if schedule_delay_millis is None:
            schedule_delay_millis = _setting(environ, "OTEL_BSP_SCHEDULE_DELAY", SCHEDULE_DELAY_MS)
        self.exporter = exporter
        self.batch_size = min(batch_size, queue_size)  # as the SDK, which refuses a larger batch
        self.schedule_delay = schedule_delay_millis / 1000
        self._queue: collections.deque[ReadableSpan] = collections.deque(maxlen=queue_size)
        # What the tracer calls when a span ends: thread-safe, and no Python frame.
        self.enqueue: Callable[[ReadableSpan], None] = self._queue.append
        self._export_lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="smg-span-export", daemon=True)
        self._thread.start()

    def on_end(self, span: ReadableSpan) -> None:
        if not self._stopped:
            self.enqueue(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self._stopped:
            return False
        self._export(everything=True)
        return True

    def shutdown(self) -> None:
        """Export what is queued and shut the exporter down (spans that end after this are not exported)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._thread.join()
        self.exporter.shutdown()

    def _run(self) -> None:
        oldest_since: float | None = None  # when the queue was first seen non-empty since the last export
        warned_at = -FULL_QUEUE_WARNING_SECONDS
        while not self._stopping.wait(POLL_SECONDS):
            queued = len(self._queue)
            if not queued:
                continue
            now = time.monotonic()
            if queued == self._queue.maxlen and now - warned_at >= FULL_QUEUE_WARNING_SECONDS:
                warned_at = now
                log.warning(
                    "the span export queue is full (%d spans): the oldest spans are being dropped "
                    "(OTEL_BSP_MAX_QUEUE_SIZE raises the limit)",
                    queued,
                )
            oldest_since = oldest_since or now
            due = now - oldest_since >= self.schedule_delay
            if due or queued >= self.batch_size:
                self._export(everything=due)
                oldest_since = None
        self._export(everything=True)

    def _export(self, everything: bool) -> None:
        """What is queued now, oldest spans first, in batches: all of it, or (not ``everything``) the full
        batches. Spans that end meanwhile wait for the next export: a flush under load ends."""
        popleft = self._queue.popleft
        with self._export_lock:  # only exports take spans out: what is queued can only grow meanwhile
            queued = len(self._queue)
            if not everything:
                queued -= queued % self.batch_size
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))  # the exporter's own calls
            try:
                while queued > 0:
                    count = min(queued, self.batch_size)
                    queued -= count
                    batch = [popleft() for _ in range(count)]
                    try:
                        self.exporter.export(batch)
                    except Exception:
                        log.exception("exporting %d spans failed", count)
            finally:
                detach(token)


def _setting(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("%s=%r is not a positive whole number; using %d", name, raw, default)
        return default
    return value
