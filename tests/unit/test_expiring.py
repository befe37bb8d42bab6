"""The lookup cache's map: entries expire a fixed time after they were put; bounded."""

from __future__ import annotations

from agent.expiring import ExpiringMap


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_for_its_ttl_and_a_put_renews_it() -> None:
    clock = Clock()
    cache = ExpiringMap[str, str](10, 60, clock)
    cache.put("+33612345678", "Jean")
    clock.now += 59.9
    assert cache.get("+33612345678") == "Jean"
    cache.put("+33612345678", "Jean Dupont")  # looked up again: 60 s more
    clock.now += 59.9
    assert cache.get("+33612345678") == "Jean Dupont"
    clock.now += 0.1
    assert cache.get("+33612345678") is None and cache.get("+33600000000") is None


def test_the_oldest_entries_go_first_when_full_and_expired_ones_are_dropped() -> None:
    clock = Clock()
    cache = ExpiringMap[str, int](3, 10, clock)
    for i in range(4):
        cache.put(f"n{i}", i)
        clock.now += 1
    assert len(cache) == 3 and cache.get("n0") is None and cache.get("n1") == 1
    cache.put("n1", 11)  # renewed at 104: now the newest, until 114
    clock.now += 1
    cache.put("n4", 4)  # full: n2, the oldest, goes
    assert [cache.get(f"n{i}") for i in range(5)] == [None, 11, None, 3, 4]
    clock.now = 113.5  # n3 (put at 103) has expired; the next put sweeps it out of memory
    cache.put("n5", 5)
    assert len(cache) == 3 and [cache.get(n) for n in ("n1", "n4", "n5")] == [11, 4, 5]


def test_pop_and_a_zero_ttl() -> None:
    cache = ExpiringMap[str, int](3, 10)
    cache.put("a", 1)
    cache.pop("a")
    cache.pop("never-put")
    assert cache.get("a") is None and len(cache) == 0
    off = ExpiringMap[str, int](3, 0)
    off.put("a", 1)
    assert off.get("a") is None and len(off) == 0
