"""Prometheus metrics of this gateway process (``GET /metrics``), and the latency buckets shared
with the per-minute usage rollups."""

from __future__ import annotations

import bisect

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["LATENCY_BUCKETS_MS", "REGISTRY", "bucket_index", "empty_buckets", "percentile_from_buckets"]

# Upper bounds in milliseconds; the last bucket is everything slower.
LATENCY_BUCKETS_MS = (5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)

REGISTRY = CollectorRegistry()
FRAMES = Counter("realtime_frames", "Frames received from clients", ["app"], registry=REGISTRY)
RESULTS = Counter("realtime_results", "Results relayed to clients", ["app"], registry=REGISTRY)
ERRORS = Counter("realtime_errors", "Errors sent to clients, by code", ["app", "code"], registry=REGISTRY)
LATENCY = Histogram(
    "realtime_result_latency_seconds",
    "From a frame's arrival at the gateway to the result that answers it",
    ["app"],
    buckets=[b / 1000 for b in LATENCY_BUCKETS_MS],
    registry=REGISTRY,
)
SLOW_CLIENT_DROPS = Counter(
    "realtime_slow_client_drops",
    "Results dropped for a client that did not read them (a newer one replaced them)",
    ["app"],
    registry=REGISTRY,
)
SESSIONS = Counter(
    "realtime_sessions",
    "Admitted sessions by mode: realtime (a WebSocket connection), stream and run (one HTTP request each)",
    ["app", "mode"],
    registry=REGISTRY,
)
ADMISSIONS = Counter(
    "realtime_admissions",
    "Realtime connections admitted, by source: cache (a credential admitted a moment ago; the database"
    " confirms it behind the first frames) or database",
    ["source"],
    registry=REGISTRY,
)
UPSTREAM_OPENS = Counter(
    "realtime_upstream_opens",
    "Runner sessions realtime connections started on: warm (opened ahead) or cold (opened then)",
    ["how"],
    registry=REGISTRY,
)
for _source in ("cache", "database"):
    ADMISSIONS.labels(_source)
for _how in ("warm", "cold"):
    UPSTREAM_OPENS.labels(_how)
ACTIVE = Gauge("realtime_active_connections", "Open realtime connections", ["app"], registry=REGISTRY)
RUNNER_UP = Gauge("realtime_runner_up", "1 when the runner answers its health check", ["runner"], registry=REGISTRY)
# The usage recorder's health: what waits for the database, what it could not keep.
USAGE_BACKLOG = Gauge(
    "realtime_usage_backlog_records", "Closed connections' usage records waiting for the database", registry=REGISTRY
)
USAGE_FAILED = Counter(
    "realtime_usage_records_failed",
    "Usage rows set aside: the database refused their data (kind: connection record or app minute)",
    ["kind"],
    registry=REGISTRY,
)
for _kind in ("connection", "minute"):
    USAGE_FAILED.labels(_kind)
USAGE_LOST = Counter(
    "realtime_usage_records_lost",
    "Usage records dropped unwritten: the backlog was full, or the process stopped with them unwritten",
    registry=REGISTRY,
)


def empty_buckets() -> list[int]:
    return [0] * (len(LATENCY_BUCKETS_MS) + 1)


def bucket_index(latency_ms: float) -> int:
    return bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)


def percentile_from_buckets(counts: list[int], fraction: float) -> float | None:
    """An upper bound of the given percentile (0..1) from bucket counts; None without data."""
    total = sum(counts)
    if not total:
        return None
    rank = fraction * total
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return float(LATENCY_BUCKETS_MS[index]) if index < len(LATENCY_BUCKETS_MS) else float("inf")
    return float("inf")
