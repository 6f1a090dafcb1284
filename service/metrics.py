"""Prometheus metrics of one app: requests, latency, calls processed, store size.

Each app owns a ``CollectorRegistry`` (no process globals), so tests and several apps in
one process never share counters. With several uvicorn workers each reports its own. The
counts are store-wide, so only a key granted every project (``*``) may read them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import APIRouter, HTTPException, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from service.deps import PrincipalDep

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _StoreCollector:
    """Store size, read from ``stats()`` at scrape time."""

    def __init__(self, stats: Callable[[], dict[str, int]]) -> None:
        self._stats = stats

    def _families(self, stats: dict[str, int]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "trace_usage_store_calls", "Calls in the store.", value=stats.get("calls", 0)
        )
        yield GaugeMetricFamily(
            "trace_usage_store_bytes", "Size of the store on disk.", value=stats.get("bytes", 0)
        )

    def describe(self) -> Iterator[Metric]:
        return self._families({})

    def collect(self) -> Iterator[Metric]:
        return self._families(self._stats())


class Metrics:
    """The app's instruments; the access middleware feeds them once per request."""

    def __init__(self, store_stats: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "trace_usage_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "trace_usage_http_request_duration_seconds",
            "Time from request to the end of the response.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.calls = Counter(
            "trace_usage_calls_processed",
            "Calls answered by the usage endpoints.",
            ["route"],
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(store_stats))

    def observe(
        self, method: str, route: str, status: int, seconds: float, calls: int | None
    ) -> None:
        """Record one finished request."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)
        if calls is not None:
            self.calls.labels(route).inc(calls)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response)
def metrics(request: Request, principal: PrincipalDep) -> Response:
    """Prometheus text exposition, for keys granted every project (``--projects '*'``):
    the counts are store-wide, so a key of one project must not read them."""
    if not principal.key.grants_all:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"/metrics counts every project: key {principal.key.id} is not granted '*'",
        )
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
