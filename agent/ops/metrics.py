"""Prometheus metrics of one agent (own registry: no process-wide singletons).

What every call touches is counted in plain dicts on the event loop (`LoopCounter`,
`LoopHistogram`: no lock) and read by the registry at scrape time; the rest uses
prometheus_client's thread-safe metrics."""

from __future__ import annotations

import bisect
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
)

LOOKUP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class LoopCounter:
    """A labelled counter for the hot path: `counts[labels] += 1`, from the event loop thread
    only (or `counts=`, a function that reads counts kept elsewhere)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str],
                 registry: CollectorRegistry | None = None,
                 counts: Callable[[], Mapping[tuple[str, ...], float]] | None = None) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self.counts: Tally[tuple[str, ...]] = Tally()
        self._read = counts or (lambda: self.counts)
        if registry is not None:
            registry.register(self)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, count in sorted(self._read().items()):
            family.add_metric(values, count)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labels)


class LoopHistogram:
    """An unlabelled histogram for the hot path. Touch it from the event loop thread only."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float],
                 registry: CollectorRegistry | None = None) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        if registry is not None:
            registry.register(self)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def collect(self) -> Iterator[Metric]:
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets,
                                    sum_value=self.sum)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls_routed = LoopCounter("crm_agent_calls_routed", "Routing decisions by rule "
                                        "and interface", ["rule", "via"], registry=r)
        self.lookup_seconds = Histogram("crm_agent_lookup_seconds", "CRM lookup latency",
                                        buckets=LOOKUP_BUCKETS, registry=r)
        self.route_seconds = LoopHistogram("crm_agent_route_seconds", "Whole routing "
                                           "decision latency", LOOKUP_BUCKETS, registry=r)
        self.crm_errors = LoopCounter("crm_agent_crm_errors", "Callers answered without the "
                                      "CRM, by reason (crm-timeout, crm-unavailable: breaker "
                                      "open, crm-overloaded, crm-error)", ["reason"],
                                      registry=r)
        self.breaker_open = Gauge("crm_agent_crm_breaker_open", "1 while the CRM circuit "
                                  "breaker is open (lookups skipped), else 0", registry=r)
        self.cache = LoopCounter("crm_agent_lookup_cache", "Lookup cache results", ["result"],
                                 registry=r)
        self.rules_reloads = Counter("crm_agent_rules_reloads", "Rules reload attempts by "
                                     "result", ["result"], registry=r)
        self.outbox = Gauge("crm_agent_outbox_rows", "Outbox rows by status", ["status"],
                            registry=r)
        self.outbox_failures = Counter("crm_agent_outbox_failures", "Failed outbox attempts",
                                       registry=r)
        self.calls_journaled = Counter("crm_agent_calls_journaled", "Calls written to the "
                                       "journal by outcome", ["outcome"], registry=r)
        self.agi_outcomes: Mapping[str, int] = {}
        """The FastAGI server's `outcomes`, exported as they are at scrape time."""
        LoopCounter("crm_agent_agi_sessions", "FastAGI sessions by result", ["result"],
                    registry=r, counts=lambda: {(k,): v for k, v in self.agi_outcomes.items()})

    def routed(self, rule: str, via: str, seconds: float) -> None:
        """Count one routing decision and how long it took."""
        self.calls_routed.counts[rule, via] += 1
        self.route_seconds.observe(seconds)

    def crm_error(self, reason: str) -> None:
        self.crm_errors.counts[(reason,)] += 1

    def cached(self, result: str) -> None:
        self.cache.counts[(result,)] += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)
