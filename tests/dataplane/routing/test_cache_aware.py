"""cache_aware: SMG §3.1 plus the pitfalls — imbalance, hot prefixes, full-prompt keys, bounded trees."""

from __future__ import annotations

import random
from collections import Counter

from dataplane.config import PolicyConfig
from dataplane.routing import CacheAware, RouteRequest, make_policy
from dataplane.routing.candidates import worker_id
from dataplane.routing.radix import pages
from dataplane.types import KvBlock, KvEventBatch, KvStored
from tests.dataplane.routing.fleet import MODEL, Leases, engine, fleet, route

RNG = random.Random(2024)


def ids(n: int, rng: random.Random = RNG) -> list[int]:
    return [rng.randrange(1000, 50000) for _ in range(n)]


def req(token_ids: list[int]) -> RouteRequest:
    return RouteRequest(MODEL, token_ids=token_ids)


def holders(policy: CacheAware, token_ids: list[int]) -> dict[str, int]:
    tree = policy.tree(MODEL, tokens=True)
    assert tree is not None
    return tree.match(pages(token_ids, 16)).tenants()


def test_make_policy_builds_it_with_its_kv_index() -> None:
    policy = make_policy("cache_aware")
    assert isinstance(policy, CacheAware) and policy.needs_loads and policy.kv_events is policy.index


def test_a_cached_prompt_goes_back_to_its_worker_in_a_balanced_fleet() -> None:
    ws, policy = fleet(4), CacheAware()
    prompt = ids(200)
    first = route(policy, ws, req(prompt))
    first.load = 3  # a small gap is worth the cache hit
    assert route(policy, ws, req([*prompt, *ids(40)])) is first


def test_a_miss_goes_to_the_least_loaded_worker() -> None:
    ws, policy = fleet(3), CacheAware()
    ws[0].load, ws[1].load, ws[2].load = 2, 0, 1
    assert route(policy, ws, req(ids(100))) is ws[1]


def test_a_match_below_the_threshold_is_a_miss() -> None:
    ws, policy = fleet(2), CacheAware()
    shared = ids(64)
    owner = route(policy, ws, req([*shared, *ids(200)]))
    assert route(policy, ws, req([*shared, *ids(200)])) is not owner  # 64/264 < 0.3


def test_under_count_imbalance_the_least_loaded_worker_wins_and_learns_the_prompt() -> None:
    ws, policy = fleet(2), CacheAware()
    prompt = ids(160)
    owner = route(policy, ws, req(prompt))
    other = ws[1] if owner is ws[0] else ws[0]
    owner.load, other.load = 100, 10  # spread 90 > 64 and 100 > 1.5 × 10
    assert route(policy, ws, req(prompt)) is other
    assert set(holders(policy, prompt)) == {worker_id(owner), worker_id(other)}


def test_kv_overload_and_kv_spread_force_the_least_loaded_worker() -> None:
    prompt = ids(160)
    for config, usages in [
        (PolicyConfig(overload_token_usage_threshold=0.8), (0.9, 0.85)),
        (PolicyConfig(balance_token_usage_threshold=0.3), (0.5, 0.1)),
    ]:
        ws, policy = fleet(2), CacheAware(config)
        assert route(policy, ws, req(prompt)) is ws[0]
        ws[0].engine_load, ws[1].engine_load = engine(usages[0]), engine(usages[1])
        ws[1].load = 1
        assert route(policy, ws, req(prompt)) is ws[0]  # least loaded by requests in flight, as SMG
        ws[0].load = 2
        assert route(policy, ws, req(prompt)) is ws[1]


def test_a_holder_that_is_not_a_candidate_is_skipped() -> None:
    ws, policy = fleet(3), CacheAware()
    prompt = ids(160)
    owner = route(policy, ws, req(prompt))
    rest = [w for w in ws if w is not owner]
    rest[0].load = 1
    assert route(policy, rest, req(prompt)) is rest[1]


def test_text_requests_use_a_character_tree() -> None:
    ws, policy = fleet(4), CacheAware()
    text = "".join(RNG.choices("abcdefgh ", k=500))
    first = route(policy, ws, RouteRequest(MODEL, text=text))
    assert route(policy, ws, RouteRequest(MODEL, text=text + " and more")) is first
    assert policy.tree(MODEL, tokens=False) is not None and policy.tree(MODEL, tokens=True) is None


def test_trees_are_per_model() -> None:
    ws, policy = fleet(2), CacheAware()
    prompt = ids(160)
    assert route(policy, ws, req(prompt)) is ws[0]
    assert route(policy, ws, RouteRequest("other", token_ids=prompt)) is ws[1]  # a miss: tie on picks


def test_conversations_sharing_a_system_prompt_split_and_each_follow_up_returns() -> None:
    ws, policy = fleet(4), CacheAware()
    system = ids(100)
    turns = [[*system, *ids(300)] for _ in range(4)]
    owners = [route(policy, ws, req(t)) for t in turns]
    assert len(set(owners)) == 4  # 100/400 of a shared system prompt is not a reason to pile up
    for turn, owner in zip(turns, owners, strict=True):
        follow_up = [*turn, *ids(50), *ids(80)]
        assert route(policy, ws, req(follow_up)) is owner


def test_a_hot_prefix_with_growing_load_spreads_over_the_fleet() -> None:
    ws, policy = fleet(4), CacheAware()
    hot = ids(288)
    for _ in range(400):
        route(policy, ws, req([*hot, *ids(32)])).load += 1  # leases never end: load only grows
    loads = [w.load for w in ws]
    assert max(loads) - min(loads) < 64  # before SMG's imbalance check would trip
    assert len(holders(policy, hot)) == 4  # every worker caches the hot prefix now


def test_the_hot_prefix_spills_before_the_imbalance_threshold() -> None:
    ws, policy = fleet(2), CacheAware()
    hot = ids(160)
    owner = route(policy, ws, req([*hot, *ids(160)]))
    owner.load += 1
    spilled_at = None
    for _ in range(100):
        chosen = route(policy, ws, req([*hot, *ids(160)]))
        if chosen is not owner:
            spilled_at = owner.load
            break
        chosen.load += 1
    assert spilled_at is not None and spilled_at <= 33  # a half match is worth half of the 64 gap


def test_uniform_random_prompts_with_leases_stay_balanced() -> None:
    ws, policy = fleet(4), CacheAware()
    rng = random.Random(5)
    leases = Leases(hold=3)
    counts: Counter[int] = Counter()
    for _ in range(2000):
        chosen = route(policy, ws, req(ids(rng.randrange(50, 400), rng)))
        leases.step(chosen)
        counts[ws.index(chosen)] += 1
    assert len(counts) == 4 and max(counts.values()) / min(counts.values()) <= 1.3


def test_uniform_random_text_with_random_lease_lengths_stays_balanced() -> None:
    ws, policy = fleet(4), CacheAware()
    rng = random.Random(6)
    live: list[tuple[int, int]] = []
    counts: Counter[int] = Counter()
    for step in range(2000):
        for end, i in [x for x in live if x[0] == step]:
            ws[i].load -= 1
            live.remove((end, i))
        text = "".join(rng.choices("abcdefghijklmnop", k=rng.randrange(100, 600)))
        chosen = route(policy, ws, RouteRequest(MODEL, text=text))
        chosen.load += 1
        live.append((step + rng.randrange(1, 8), ws.index(chosen)))
        counts[ws.index(chosen)] += 1
    assert len(counts) == 4 and max(counts.values()) / min(counts.values()) <= 1.3


def stored(token_ids: list[int], engine_base: int) -> KvEventBatch:
    blocks = tuple(
        KvBlock(engine_base + i, tuple(token_ids[i * 16 : (i + 1) * 16])) for i in range(len(token_ids) // 16)
    )
    return KvEventBatch(1, (KvStored(blocks, None),))


def test_events_pick_the_best_overlap() -> None:
    ws, policy = fleet(3), CacheAware()
    prompt = ids(160)
    policy.index.apply(worker_id(ws[1]), stored(prompt[:64], 100))
    policy.index.apply(worker_id(ws[2]), stored(prompt[:128], 200))
    ws[2].load = 2
    assert route(policy, ws, req(prompt)) is ws[2]
    assert policy.tree(MODEL, tokens=True) is None  # the engines' events replace the approximate tree


def test_events_tie_break_on_load_then_smaller_cache() -> None:
    ws, policy = fleet(3), CacheAware()
    prompt = ids(160)
    for i, w in enumerate(ws):
        policy.index.apply(worker_id(w), stored(prompt[:64] + ids(16 * i), 100 * (i + 1)))
    ws[0].load = 1
    assert route(policy, ws, req(prompt)) is ws[1]  # ws[1] and ws[2] tie on load; ws[1] holds less


def test_events_without_overlap_go_to_the_least_loaded() -> None:
    ws, policy = fleet(3), CacheAware()
    policy.index.apply(worker_id(ws[0]), stored(ids(64), 100))
    ws[0].load, ws[2].load = 1, 1
    assert route(policy, ws, req(ids(160))) is ws[1]


def test_maintain_bounds_every_tree() -> None:
    config = PolicyConfig(max_tree_size=4096)
    ws, policy = fleet(4), CacheAware(config, clock=lambda: 0.0)
    rng = random.Random(8)
    systems = [ids(256, rng) for _ in range(3)]
    for step in range(1, 3001):
        route(policy, ws, req([*rng.choice(systems), *ids(rng.randrange(16, 512), rng)]))
        route(policy, ws, RouteRequest(MODEL, text="".join(rng.choices("abcd", k=300))))
        if step % 250 == 0:
            policy.maintain(0.0)
            for tokens in (True, False):
                tree = policy.tree(MODEL, tokens=tokens)
                assert tree is not None
                _, sizes = tree.audit()
                assert sizes and all(n <= config.max_tree_size for n in sizes.values())


def test_workers_absent_for_max_idle_secs_are_forgotten() -> None:
    now = [0.0]
    ws, policy = fleet(2), CacheAware(PolicyConfig(max_idle_secs=100.0), clock=lambda: now[0])
    prompt = ids(160)
    gone = route(policy, ws, req(prompt))
    stays = ws[1] if gone is ws[0] else ws[0]
    now[0] = 150.0
    route(policy, [stays], req(ids(160)))
    policy.maintain(150.0)
    assert worker_id(gone) not in holders(policy, prompt)  # lazily dropped, not on every request
    route(policy, [stays], req(ids(160)))
    policy.maintain(500.0)
    assert policy.tree(MODEL, tokens=True) is None
