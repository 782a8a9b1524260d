"""The approximate prefix tree: match lengths per tenant, size accounting, LRU eviction, memory bound."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane.routing.radix import RadixTree, pages


def put(tree: RadixTree, key: str, tenant: str, now: float = 0.0) -> None:
    tree.insert(tree.match(key), tenant, now)


def common(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_empty_tree_matches_nothing() -> None:
    match = RadixTree().match("hello")
    assert match.matched == 0 and match.tenants() == {}


def test_each_tenant_matches_its_longest_prefix() -> None:
    tree = RadixTree()
    put(tree, "hello world", "a")
    put(tree, "hello there", "b")
    match = tree.match("hello world!")
    assert match.matched == 11
    assert match.tenants() == {"a": 11, "b": 6}
    assert match.tenants(longer_than=6) == {"a": 11}
    assert tree.match("help").tenants() == {"a": 3, "b": 3}


def test_sizes_count_each_tenant_once_per_unit() -> None:
    tree = RadixTree()
    put(tree, "hello world", "a")
    put(tree, "hello there", "b")
    put(tree, "hello world", "b")
    assert tree.size("a") == 11
    assert tree.size("b") == len("hello world") + len("there")
    assert tree.audit() == (3, {"a": 11, "b": 16})


def test_token_pages_drop_the_partial_tail_and_count_tokens() -> None:
    assert pages(list(range(40)), 16) == (tuple(range(16)), tuple(range(16, 32)))
    tree = RadixTree(weight=16)
    put_pages = pages(list(range(40)), 16)
    tree.insert(tree.match(put_pages), "w", 0.0)
    other = pages([*range(16), *range(100, 140)], 16)
    match = tree.match(other)
    assert match.matched == 16 and match.tenants() == {"w": 16}
    assert tree.size("w") == 32


def test_eviction_drops_the_least_recently_used_leaves_first() -> None:
    tree = RadixTree()
    put(tree, "shared-old", "a", now=1.0)
    put(tree, "shared-new", "a", now=2.0)
    assert tree.size("a") == 13  # "shared-" + "old" + "new"
    tree.evict(max_size=10)
    assert tree.size("a") == 10
    assert tree.match("shared-new").tenants() == {"a": 10}
    assert tree.match("shared-old").tenants() == {"a": 7}


def test_eviction_of_one_tenant_keeps_what_others_hold() -> None:
    tree = RadixTree()
    put(tree, "prefix-one", "a", now=1.0)
    put(tree, "prefix-two", "b", now=2.0)
    tree.evict(max_size=0)
    assert tree.tenants() == set()
    put(tree, "prefix-one", "a", now=1.0)
    put(tree, "prefix-two", "b", now=2.0)
    put(tree, "xyzxyzxyz", "a", now=3.0)
    tree.evict(max_size=10)
    assert tree.match("prefix-one").tenants() == {"b": 7}
    assert tree.match("prefix-two").tenants() == {"b": 10}
    assert tree.match("xyzxyzxyz").tenants() == {"a": 9}
    assert tree.size("a") == 9 and tree.size("b") == 10


def test_retain_forgets_gone_tenants_and_frees_their_nodes() -> None:
    tree = RadixTree()
    put(tree, "common-a", "a")
    put(tree, "common-b", "b")
    tree.retain({"b"})
    assert tree.tenants() == {"b"}
    assert tree.audit() == (2, {"b": 8})  # "common-" and "b"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text("abc", max_size=12), st.sampled_from("xyz")), max_size=30), st.text("abc"))
def test_match_agrees_with_brute_force(inserts: list[tuple[str, str]], probe: str) -> None:
    tree = RadixTree()
    for i, (key, tenant) in enumerate(inserts):
        put(tree, key, tenant, float(i))
    expected: dict[str, int] = {}
    for key, tenant in inserts:
        expected[tenant] = max(expected.get(tenant, 0), common(key, probe))
    assert tree.match(probe).tenants() == {t: n for t, n in expected.items() if n > 0}
    held: dict[str, set[str]] = {}
    for key, tenant in inserts:
        held.setdefault(tenant, set()).add(key)
    sizes = {t: len({k[:i] for k in keys for i in range(1, len(k) + 1)}) for t, keys in held.items()}
    assert tree.audit()[1] == {t: n for t, n in sizes.items() if n}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.text("ab", max_size=10), st.sampled_from("xy")), max_size=30), st.integers(0, 9))
def test_eviction_keeps_sizes_exact_and_only_forgets(inserts: list[tuple[str, str]], bound: int) -> None:
    tree = RadixTree()
    for i, (key, tenant) in enumerate(inserts):
        put(tree, key, tenant, float(i))
    before = {key: tree.match(key).tenants() for key, _ in inserts}
    tree.evict(bound)
    _, sizes = tree.audit()
    assert all(tree.size(t) == n <= bound for t, n in sizes.items())
    for key, held in before.items():
        after = tree.match(key).tenants()
        assert all(n <= held[t] for t, n in after.items())


def test_memory_stays_bounded_under_a_long_random_stream() -> None:
    rng = random.Random(11)
    bound, tenants = 2000, [f"w{i}" for i in range(4)]
    tree = RadixTree()
    systems = ["".join(rng.choices("abcdef", k=200)) for _ in range(5)]
    for step in range(1, 5001):
        prompt = rng.choice(systems) + "".join(rng.choices("abcdefghij", k=rng.randrange(20, 200)))
        put(tree, prompt, rng.choice(tenants), float(step))
        if step % 100 == 0:
            tree.evict(bound)
            count, sizes = tree.audit()
            assert all(n <= bound for n in sizes.values())
            assert sizes == {t: tree.size(t) for t in sizes}
            assert count <= len(tenants) * bound  # every node holds at least one unit of some tenant
    assert 0 < sum(tree.size(t) for t in tenants) <= len(tenants) * bound
