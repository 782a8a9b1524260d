"""``smg serve``'s process supervisor: start the engine workers, wait until they serve, run the gateway.

Every worker runs in its own session (hence its own process group) so that shutdown reaches the
engine's own subprocesses too: SIGTERM to each group, a grace period, then SIGKILL to each group.
Whatever way ``run_serve`` ends — a signal, a worker that dies during startup, a startup timeout, a
gateway that cannot bind its port, a bug — it shuts every worker down before returning or raising.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import aiohttp

from adapters import app
from adapters.engines import ServePlan, engine_command, engine_env, worker_url
from dataplane.client import grpc_health_serving
from dataplane.config import GatewayConfig, WorkerUrl
from dataplane.errors import ConfigError

logger = logging.getLogger(__name__)

GatewayRunner = Callable[[GatewayConfig, asyncio.Event], Awaitable[None]]

POLL_INTERVAL = 0.25
SHUTDOWN_GRACE = 30.0
_PROBE_TIMEOUT = 2.0
_TAIL_BYTES = 8192
_TAIL_LINES = 20


class WorkerStartupError(RuntimeError):
    """A worker died or never became ready while ``smg serve`` was starting up."""


@dataclass(slots=True)
class Worker:
    """One running engine process and the last bytes it wrote to stderr."""

    backend: str
    rank: int
    url: str
    proc: asyncio.subprocess.Process
    tail: bytearray = field(default_factory=bytearray)
    drain: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"{self.backend} worker {self.rank} (pid {self.proc.pid}, {self.url})"

    def stderr_tail(self) -> str:
        lines = bytes(self.tail).decode("utf-8", "replace").splitlines()[-_TAIL_LINES:]
        return "\n".join(f"    {line}" for line in lines) or "    (nothing)"


async def run_serve(
    plan: ServePlan,
    stop: asyncio.Event,
    *,
    gateway: GatewayRunner = app.serve,
    shutdown_grace: float = SHUTDOWN_GRACE,
) -> None:
    """Start the workers, wait for them, run ``gateway`` until ``stop`` is set; always stop the workers."""
    workers: list[Worker] = []
    watchers: list[asyncio.Task[None]] = []
    try:
        ports = free_ports(
            plan.worker_host, plan.worker_base_port, plan.data_parallel_size, {plan.gateway.port}
        )
        for rank, port in enumerate(ports):
            workers.append(await _spawn(plan, rank, port))
        if not await _ready_or_stopped(workers, plan, stop):
            logger.info("stopped before the workers were ready")
            return
        config = dataclasses.replace(plan.gateway, worker_urls=tuple(WorkerUrl.parse(w.url) for w in workers))
        watchers = [asyncio.create_task(_watch(worker)) for worker in workers]
        logger.info(
            "all %d worker(s) ready; starting the gateway on %s:%d", len(workers), config.host, config.port
        )
        await gateway(config, stop)
    finally:
        for watcher in watchers:
            watcher.cancel()
        await _to_completion(shutdown(workers, shutdown_grace))


def free_ports(host: str, base: int, count: int, skip: Iterable[int] = ()) -> list[int]:
    """``count`` ports, the first free ones from ``base`` upwards, never one of ``skip``."""
    taken = set(skip)
    ports: list[int] = []
    port = base
    while len(ports) < count:
        if port > 65535:
            raise ConfigError(f"no {count} free ports from {base} on {host}")
        if port not in taken and _port_free(host, port):
            ports.append(port)
        port += 1
    return ports


async def shutdown(workers: Sequence[Worker], grace: float) -> None:
    """SIGTERM each worker's process group, wait up to ``grace`` seconds, then SIGKILL the groups."""
    if not workers:
        return
    for worker in workers:
        _signal_group(worker, signal.SIGTERM)
    exits = asyncio.gather(*(worker.proc.wait() for worker in workers))
    try:
        await asyncio.wait_for(asyncio.shield(exits), grace)
    except TimeoutError:
        stuck = [w.name for w in workers if w.proc.returncode is None]
        logger.warning("%s still running %.0f s after SIGTERM; killing", ", ".join(stuck), grace)
    # Unconditionally: a worker that exited may have left subprocesses behind in its group, and they
    # have had as long as their parent to honour the SIGTERM.
    for worker in workers:
        _signal_group(worker, signal.SIGKILL)
    await exits
    for worker in workers:
        await _drained(worker)
        if worker.drain is not None:
            worker.drain.cancel()  # a subprocess that left the group may still hold the pipe
    logger.info("all workers stopped")


async def _to_completion(cleanup: Awaitable[None]) -> None:
    # Cancelling run_serve must not cancel the cleanup halfway and leave workers behind.
    task = asyncio.ensure_future(cleanup)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _spawn(plan: ServePlan, rank: int, port: int) -> Worker:
    cmd = engine_command(plan.engine, plan.worker_host, port)
    env = engine_env(plan.engine, rank, os.environ)
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    worker = Worker(plan.engine.backend, rank, worker_url(plan.engine.mode, plan.worker_host, port), proc)
    assert proc.stderr is not None  # stderr=PIPE
    worker.drain = asyncio.create_task(_forward_stderr(proc.stderr, worker.tail))
    gpus = env.get("CUDA_VISIBLE_DEVICES")
    logger.info("started %s%s: %s", worker.name, f" on GPUs {gpus}" if gpus else "", " ".join(cmd))
    return worker


async def _forward_stderr(stream: asyncio.StreamReader, tail: bytearray) -> None:
    # The engine's log goes on to our stderr as it comes, and its last bytes are kept for the error
    # message if it dies. A pipe must be drained continuously or a chatty engine blocks on write.
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while chunk := await stream.read(65536):
        tail += chunk
        del tail[:-_TAIL_BYTES]
        sys.stderr.write(decoder.decode(chunk))
        sys.stderr.flush()


async def _ready_or_stopped(workers: Sequence[Worker], plan: ServePlan, stop: asyncio.Event) -> bool:
    """True once every worker is ready; False if ``stop`` is set first; raises if startup fails."""
    ready = asyncio.create_task(_wait_ready(workers, plan))
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (ready, stopped):
            task.cancel()
        await asyncio.gather(ready, stopped, return_exceptions=True)
    if ready.cancelled():
        return False
    ready.result()
    return True


async def _wait_ready(workers: Sequence[Worker], plan: ServePlan) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + plan.startup_timeout
    pending = list(workers)
    async with aiohttp.ClientSession() as http:
        while True:
            for worker in pending:
                if worker.proc.returncode is not None:
                    raise await _startup_death(worker)
            wait_secs = max(0.1, min(_PROBE_TIMEOUT, deadline - loop.time()))
            ready = await asyncio.gather(*(_probe(http, w, wait_secs) for w in pending))
            pending = [worker for worker, ok in zip(pending, ready, strict=True) if not ok]
            if not pending:
                return
            if loop.time() >= deadline:
                names = ", ".join(worker.name for worker in pending)
                raise WorkerStartupError(f"{names} not ready within {plan.startup_timeout:g} s")
            await asyncio.sleep(POLL_INTERVAL)


async def _probe(http: aiohttp.ClientSession, worker: Worker, wait_secs: float) -> bool:
    url = WorkerUrl.parse(worker.url)
    try:
        if url.mode == "grpc":
            return await grpc_health_serving(url.host, url.port, wait_secs)
        async with http.get(f"{worker.url}/health", timeout=aiohttp.ClientTimeout(total=wait_secs)) as reply:
            return reply.status == 200
    except Exception as exc:  # whatever a half-started engine answers, it is not ready yet
        logger.debug("%s not ready: %r", worker.name, exc)
        return False


async def _startup_death(worker: Worker) -> WorkerStartupError:
    await _drained(worker)
    return WorkerStartupError(
        f"{worker.name} exited with {_exit_status(worker.proc.returncode)} during startup; "
        f"last lines of its stderr:\n{worker.stderr_tail()}"
    )


async def _watch(worker: Worker) -> None:
    # A worker lost after startup does not stop the gateway: its health checks take the worker out of
    # rotation, and the other ranks keep serving. Say so loudly, once.
    returncode = await worker.proc.wait()
    await _drained(worker)
    logger.error(
        "%s exited with %s after startup; the gateway keeps serving with the remaining workers. "
        "Last lines of its stderr:\n%s",
        worker.name,
        _exit_status(returncode),
        worker.stderr_tail(),
    )


async def _drained(worker: Worker) -> None:
    # The engine's own subprocesses may hold the pipe open after it exits; do not wait for them long.
    if worker.drain is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(worker.drain), 1.0)


def _signal_group(worker: Worker, sig: signal.Signals) -> None:
    # The worker is its group's leader (start_new_session); the group outlives a leader that has
    # exited for as long as any member is alive.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(worker.proc.pid, sig)


def _exit_status(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
