"""The routing lookup cache as the router sees it: entries expire, unknown callers sooner,
the stale view outlives the fresh one, and the size bound holds."""

from __future__ import annotations

from agent.routing.service import UNKNOWN, CallerView, LookupCache

JEAN = CallerView(ctx={"caller.known": True, "contact.name": "Jean"}, contact_id=1)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_view_lives_for_its_ttl_then_only_as_stale() -> None:
    clock = Clock()
    cache = LookupCache(10, 60, 10, 3600, clock)
    cache.put("+33612345678", JEAN)
    clock.now += 59.9
    assert cache.get("+33612345678") is JEAN
    cache.put("+33612345678", JEAN)  # looked up again: 60 s more
    clock.now += 59.9
    assert cache.get("+33612345678") is JEAN
    clock.now += 0.1
    assert cache.get("+33612345678") is None  # not served as fresh once expired
    assert cache.get_stale("+33612345678") is JEAN  # the CRM fails: the last good view
    clock.now += 3600
    assert cache.get_stale("+33612345678") is None


def test_unknown_callers_expire_sooner_and_drop_the_stale_view() -> None:
    clock = Clock()
    cache = LookupCache(10, 60, 10, 3600, clock)
    cache.put("+33612345678", JEAN)
    cache.put("+33612345678", UNKNOWN)  # the contact was deleted
    assert cache.get_stale("+33612345678") is None
    clock.now += 60.1  # the fresh entry is gone; the negative one decides
    cache.put("+33600000000", UNKNOWN)
    assert cache.get("+33600000000") is UNKNOWN
    clock.now += 10
    assert cache.get("+33600000000") is None


def test_the_size_bound_holds_and_invalidate_forgets() -> None:
    clock = Clock()
    cache = LookupCache(3, 60, 10, 3600, clock)
    for i in range(5):
        cache.put(f"+3361234567{i}", JEAN)
        clock.now += 1
    assert len(cache.fresh) == 3 and len(cache.stale) == 3
    assert [cache.get(f"+3361234567{i}") for i in range(5)] == [None, None, JEAN, JEAN, JEAN]
    assert len(cache.negative) == 0
    for i in range(3):
        cache.put(f"+3360000000{i}", UNKNOWN)
    assert len(cache.negative) == 1  # a quarter of the entries, at least one
    cache.invalidate("+33612345674")
    cache.invalidate("+33699999999")  # never cached
    assert cache.get("+33612345674") is None and cache.get_stale("+33612345674") is None


def test_size_zero_disables_and_ttl_zero_serves_nothing() -> None:
    off = LookupCache(0, 60, 10, 3600)
    off.put("+33612345678", JEAN)
    assert off.get("+33612345678") is None
    instant = LookupCache(10, 0, 0, 3600)
    instant.put("+33612345678", JEAN)
    assert instant.get("+33612345678") is None and instant.get_stale("+33612345678") is JEAN
