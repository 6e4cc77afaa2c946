"""Prometheus metrics of one app instance (its own registry, so apps in one process
do not share counters)."""

from __future__ import annotations

import time
from collections import Counter as Counter_
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fyp.api.log_end import read_log_end
from fyp.api.security import Guard
from fyp.engine import Engine


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fyp_http_requests",
            "HTTP requests",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fyp_http_request_seconds",
            "HTTP request latency",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.events = Counter(
            "fyp_events", "Events received, by outcome", ["outcome"], registry=self.registry
        )
        self.events_rejected = Counter(
            "fyp_events_rejected", "Events rejected, by reason", ["reason"], registry=self.registry
        )

        self.residency_refused = Counter(
            "fyp_residency_refused",
            "Requests (or event batches) refused: a user not homed in this deployment",
            registry=self.registry,
        )

        # The event log's end for the scrape under way (read before it, off the loop):
        # the collectors run on the event loop, where a Redis round trip holds every
        # request (fyp.api.log_end).
        self._log_end: int | None = None

    def log_end(self, engine: Engine) -> int:
        """The event log's end: as read for the scrape under way, else read now."""
        return self._log_end if self._log_end is not None else engine.event_log.last_offset()

    async def exposition(self, engine: Engine) -> bytes:
        """The registry in Prometheus's text format, ``engine``'s log end read first
        where it does not hold the event loop."""
        self._log_end = await read_log_end(engine)
        try:
            return generate_latest(self.registry)
        finally:
            self._log_end = None

    def watch_engine(self, engine: Engine) -> None:
        self.registry.register(_EngineCollector(engine, self))

    def watch_guard(self, guard: Guard) -> None:
        self.registry.register(_GuardCollector(guard))


class _GuardCollector(Collector):
    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    def collect(self) -> Iterator[CounterMetricFamily]:
        refused = CounterMetricFamily(
            "fyp_auth_refused",
            "Requests refused by authentication, scope, key region or a key's rate limit",
            labels=["why"],
        )
        for why, n in sorted(self.guard.refused.items()):
            refused.add_metric([why], n)
        yield refused


class _EngineCollector(Collector):
    def __init__(self, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        c = self.engine.pipeline.counters
        fails = CounterMetricFamily(
            "fyp_candidate_source_failures",
            "Candidate source calls that failed open",
            labels=["source", "why"],
        )
        for (source, why), n in sorted(c.source_failures.items()):
            fails.add_metric([source, why], n)
        yield fails
        late = CounterMetricFamily(
            "fyp_candidate_source_late",
            "Candidate source calls that returned after their time budget (kept)",
            labels=["source"],
        )
        for source, n in sorted(c.source_late.items()):
            late.add_metric([source], n)
        yield late
        cands = CounterMetricFamily(
            "fyp_candidates", "Candidates proposed, by source", labels=["source"]
        )
        for source, n in sorted(c.source_candidates.items()):
            cands.add_metric([source], n)
        yield cands
        served = CounterMetricFamily("fyp_served", "Items served, by source", labels=["source"])
        for source, n in sorted(c.served_by_source.items()):
            served.add_metric([source], n)
        yield served
        filtered = CounterMetricFamily(
            "fyp_filtered", "Candidates removed, by filter", labels=["filter"]
        )
        for name, n in sorted(c.filtered.items()):
            filtered.add_metric([name], n)
        yield filtered
        rules = CounterMetricFamily(
            "fyp_filtered_by_rule",
            "Candidates removed, by surface policy, filter and rule (e.g. eligibility, "
            "label:misinformation)",
            labels=["surface", "filter", "rule"],
        )
        for (surface, name, rule), n in sorted(c.filtered_by_rule.items()):
            rules.add_metric([surface, name, rule], n)
        yield rules
        gate = CounterMetricFamily(
            "fyp_last_gate_removed",
            "Items the last gate removed from a finished page (should stay 0: the earlier "
            "stages keep the rules)",
            labels=["rule"],
        )
        for name, n in sorted(c.gate_removed.items()):
            gate.add_metric([name], n)
        yield gate
        top_ups = CounterMetricFamily(
            "fyp_catalog_top_ups",
            "Feed requests topped up from the whole catalog",
        )
        top_ups.add_metric([], c.top_ups)
        yield top_ups
        state = self.engine.state
        late = CounterMetricFamily(
            "fyp_late_outcome_corrections",
            "Actions that arrived after their impression's example closed, learned as corrections",
        )
        late.add_metric([], state.late_corrections)
        yield late
        skipped = CounterMetricFamily(
            "fyp_learning_skipped_events", "Logged events of videos the catalog does not hold"
        )
        skipped.add_metric([], state.skipped_events)
        yield skipped
        refreshes = CounterMetricFamily(
            "fyp_personalisation_refreshes", "Users whose learned personalisation was forgotten"
        )
        refreshes.add_metric([], state.refreshes_done)
        yield refreshes
        fraud = CounterMetricFamily(
            "fyp_fraud_throttled_events",
            "Explicit actions past a user's per-minute limit: logged, not trained on",
        )
        fraud.add_metric([], state.fraud.throttled)
        yield fraud
        pending = GaugeMetricFamily(
            "fyp_videos_by_moderation_state", "Videos by moderation state", labels=["state"]
        )
        for st, n in sorted(Counter_(s.value for s in self.engine.catalog.states).items()):
            pending.add_metric([st], n)
        yield pending
        lag = GaugeMetricFamily("fyp_learning_lag_events", "Logged events not yet learned")
        lag.add_metric([], self.engine.pending(self.metrics.log_end(self.engine)))
        yield lag
        videos = GaugeMetricFamily("fyp_catalog_videos", "Videos in the catalog")
        videos.add_metric([], len(self.engine.catalog))
        yield videos


class MetricsMiddleware:
    """Counts requests and times them by route template (not raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # The labelled children, looked up once per label set: ``labels()`` takes a lock
        # and builds its key on every call, on every request (the label sets are bounded:
        # route templates, methods and statuses).
        self._counted: dict[tuple[str, str, int], Counter] = {}
        self._timed: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", "unmatched")
            method = scope["method"]
            counted = self._counted.get((name, method, status))
            if counted is None:
                counted = self.metrics.requests.labels(name, method, str(status))
                self._counted[name, method, status] = counted
            counted.inc()
            timed = self._timed.get((name, method))
            if timed is None:
                timed = self._timed[name, method] = self.metrics.latency.labels(name, method)
            timed.observe(time.perf_counter() - start)
