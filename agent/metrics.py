"""Prometheus metrics of one agent (own registry: no process-wide singletons)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LOOKUP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls_routed = Counter("crm_agent_calls_routed", "Routing decisions by rule and "
                                    "interface", ["rule", "via"], registry=r)
        self.lookup_seconds = Histogram("crm_agent_lookup_seconds", "CRM lookup latency",
                                        buckets=LOOKUP_BUCKETS, registry=r)
        self.route_seconds = Histogram("crm_agent_route_seconds", "Whole routing decision "
                                       "latency", buckets=LOOKUP_BUCKETS, registry=r)
        self.crm_errors = Counter("crm_agent_crm_errors", "CRM lookup failures by reason",
                                  ["reason"], registry=r)
        self.cache = Counter("crm_agent_lookup_cache", "Lookup cache results", ["result"],
                             registry=r)
        self.rules_reloads = Counter("crm_agent_rules_reloads", "Rules reload attempts by "
                                     "result", ["result"], registry=r)
        self.outbox = Gauge("crm_agent_outbox_rows", "Outbox rows by status", ["status"],
                            registry=r)
        self.outbox_failures = Counter("crm_agent_outbox_failures", "Failed outbox attempts",
                                       registry=r)
        self.calls_journaled = Counter("crm_agent_calls_journaled", "Calls written to the "
                                       "journal by outcome", ["outcome"], registry=r)
        self._routed: dict[tuple[str, str], Any] = {}
        self._cache: dict[str, Any] = {}
        self.agi_sessions = Counter("crm_agent_agi_sessions", "FastAGI sessions by result",
                                    ["result"], registry=r)

    def routed(self, rule: str, via: str) -> None:
        """Count one routing decision (labelled children are cached: this is per call)."""
        child = self._routed.get((rule, via))
        if child is None:
            child = self._routed[(rule, via)] = self.calls_routed.labels(rule, via)
        child.inc()

    def cached(self, result: str) -> None:
        child = self._cache.get(result)
        if child is None:
            child = self._cache[result] = self.cache.labels(result)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
