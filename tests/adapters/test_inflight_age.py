"""``smg_http_inflight_request_age_count``: the requests in flight by age, in SMG's non-cumulative
``(gt, le]`` ranges, read at scrape time."""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from adapters.context import REQUEST_ID_HEADERS
from adapters.metrics import HttpMetrics, InflightAgeCollector
from tests.scrape import Scrape

AGE = "smg_http_inflight_request_age_count"


def scrape(registry: CollectorRegistry) -> Scrape:
    return Scrape(generate_latest(registry).decode())


def test_ages_fall_in_their_ranges_upper_bound_included() -> None:
    now = time.perf_counter()
    ages = [0.2, 29.9, 30.0, 45, 179, 4000, 100_000]
    registry = CollectorRegistry()
    registry.register(InflightAgeCollector({i: now - age for i, age in enumerate(ages)}))
    got = scrape(registry)
    assert got.families["smg_http_inflight_request_age_count"].type == "gauge"
    counts = {(s.labels["gt"], s.labels["le"]): s.value for s in got.samples if s.name == AGE}
    bounds = ["0", "30", "60", "180", "300", "600", "1200", "3600", "7200", "14400", "28800", "86400", "+Inf"]
    assert list(counts) == list(itertools.pairwise(bounds))
    assert counts[("0", "30")] == 3  # 0.2, 29.9 and 30 (whole seconds, as SMG: 30 is in (0, 30])
    assert counts[("30", "60")] == 1
    assert counts[("60", "180")] == 1
    assert counts[("3600", "7200")] == 1
    assert counts[("86400", "+Inf")] == 1
    assert sum(counts.values()) == len(ages)


async def test_a_request_counts_while_it_is_in_flight_and_not_after() -> None:
    registry = CollectorRegistry()
    metrics = HttpMetrics(registry, (0.1, 1.0))
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        entered.set()
        await release.wait()
        return web.json_response({})

    app = web.Application(middlewares=[metrics.middleware()])
    app[REQUEST_ID_HEADERS] = ("x-request-id",)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slow"
    try:
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(session.get(url))
            async with asyncio.timeout(10):
                await entered.wait()
            during = scrape(registry)
            release.set()
            async with await request as reply:
                assert reply.status == 200
        after = scrape(registry)
    finally:
        await runner.cleanup()
    assert during.value(AGE, gt="0", le="30") == 1 and during.value(AGE) == 1
    assert after.value(AGE) == 0
