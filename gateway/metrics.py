"""Prometheus metrics: OTLP requests, items and bytes by signal, transport and outcome, request
latency, and the storage batcher (queue depth, flush and INSERT latency, rows stored).

Both transports count each request once, through gateway.otlp.export (`record_export`); the batcher reports through
`BatcherMetrics`. /metrics serves them. Under gunicorn with several workers, set
PROMETHEUS_MULTIPROC_DIR (an empty, writable directory per pod) so that a scrape sums every
worker; without it each scrape sees the one worker that answered it.
"""

from __future__ import annotations

import enum
import hmac
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

# prometheus_client chooses per-process or multiprocess storage when a metric is first created;
# the multiprocess directory has to exist by then.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from django.conf import settings  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from storage.batcher import BatcherObserver  # noqa: E402
from vocabulary import Signal  # noqa: E402

if TYPE_CHECKING:
    from gateway.otlp.pipeline import ExportResult

# `*_created` timestamps would double the series for nothing Prometheus' rate() needs.
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Transport(enum.StrEnum):
    HTTP = "http"
    GRPC = "grpc"


class GatewayMetrics:
    """The gateway's metric families, registered in `registry`. Tenant labels only when
    `tenant_label` is set: one series per tenant grows with the number of tenants."""

    def __init__(self, *, registry: CollectorRegistry, tenant_label: bool):
        self.tenant_label = tenant_label
        labels = ("signal", "transport", "outcome") + (("tenant",) if tenant_label else ())
        self.requests = Counter(
            "otlp_gateway_requests", "OTLP export requests by how they ended.", labels, registry=registry
        )
        self.items = Counter(
            "otlp_gateway_items",
            "Spans, metric data points and log records in decoded requests: outcome 'accepted' "
            "(stored) or 'rejected' (refused inside a partially successful request).",
            labels,
            registry=registry,
        )
        self.received_bytes = Counter(
            "otlp_gateway_received_bytes",
            "Request body bytes as received (before decompression).",
            labels,
            registry=registry,
        )
        self.duration = Histogram(
            "otlp_gateway_request_duration_seconds",
            "Time from receiving an export request to its reply, including the wait for storage.",
            ("signal", "transport", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batcher_queue_depth = Gauge(
            "otlp_gateway_batcher_queue_depth",
            "Requests waiting for the storage writer.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.batcher_flush_duration = Histogram(
            "otlp_gateway_batcher_flush_duration_seconds",
            "Time to store one group of requests (every INSERT of the group).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.insert_duration = Histogram(
            "otlp_gateway_clickhouse_insert_duration_seconds",
            "Time of one INSERT into ClickHouse.",
            ("table", "result"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.http_refused = Counter(
            "otlp_gateway_http_refused",
            "HTTP connections and requests the edge refused before the application saw them, by reason "
            "(too_many_connections, tls_handshake, head_timeout, body_timeout, malformed, too_large, internal).",
            ("reason",),
            registry=registry,
        )
        self.inserted_rows = Counter(
            "otlp_gateway_clickhouse_rows",
            "Rows sent to ClickHouse, by table and result (stored or failed).",
            ("table", "result"),
            registry=registry,
        )

    def record_export(
        self,
        *,
        transport: Transport,
        signal: Signal,
        outcome: str,
        seconds: float,
        body_bytes: int,
        accepted: int,
        rejected: int,
        tenant: str,
    ) -> None:
        labels = (signal.value, transport.value, outcome) + ((tenant,) if self.tenant_label else ())
        self.requests.labels(*labels).inc()
        self.duration.labels(signal.value, transport.value, outcome).observe(seconds)
        if body_bytes:
            self.received_bytes.labels(*labels).inc(body_bytes)
        for item_outcome, count in (("accepted", accepted), ("rejected", rejected)):
            if count:
                self.items.labels(signal.value, transport.value, item_outcome, *labels[3:]).inc(count)


_lock = threading.Lock()
_metrics: GatewayMetrics | None = None


def get() -> GatewayMetrics:
    """The process's metrics, in the default registry, shaped by the settings."""
    global _metrics
    if _metrics is None:
        with _lock:
            if _metrics is None:
                _metrics = GatewayMetrics(registry=REGISTRY, tenant_label=settings.GATEWAY_METRICS_TENANT_LABEL)
    return _metrics


def record_export(transport: Transport, result: ExportResult, *, started: float) -> None:
    """Count one OTLP export request as it ended; `started` is its time.perf_counter() on arrival."""
    get().record_export(
        transport=transport,
        signal=result.signal,
        outcome=str(result.outcome),
        seconds=time.perf_counter() - started,
        body_bytes=result.body_bytes,
        accepted=result.accepted,
        rejected=result.rejected,
        tenant=result.principal.tenant_slug if result.principal is not None else "",
    )


class BatcherMetrics(BatcherObserver):
    """What the storage batcher reports (storage.batcher.BatcherObserver)."""

    def queue_depth(self, depth: int) -> None:
        get().batcher_queue_depth.set(depth)

    def inserted(self, *, table: str, rows: int, seconds: float, ok: bool) -> None:
        result = "stored" if ok else "failed"
        metrics = get()
        metrics.insert_duration.labels(table, result).observe(seconds)
        metrics.inserted_rows.labels(table, result).inc(rows)

    def flushed(self, *, seconds: float) -> None:
        get().batcher_flush_duration.observe(seconds)


def edge_refused(reason: str) -> None:
    """What the HTTP edge (gateway.edge) reports for each refusal it makes itself."""
    get().http_refused.labels(reason).inc()


def exposition_registry() -> CollectorRegistry:
    """What a scrape reads: every worker's files in multiprocess mode, else this process."""
    get()  # the families exist (at zero) before the first request
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@dataclass(frozen=True)
class WriterState:
    """The storage writer as its metrics tell it, since the processes started (every worker's,
    in multiprocess mode): what the console's overview shows."""

    queue_depth: int
    inserts: int
    failed_inserts: int
    insert_mean_ms: float | None
    insert_p95_ms: float | None  # the upper bound of the bucket the 95th percentile falls in


def writer_state() -> WriterState:
    depth, buckets, total, count, failed = 0.0, {}, 0.0, 0, 0
    for family in exposition_registry().collect():
        for sample in family.samples:
            if sample.name == "otlp_gateway_batcher_queue_depth":
                depth += sample.value
            elif sample.name == "otlp_gateway_clickhouse_insert_duration_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0) + sample.value
            elif sample.name == "otlp_gateway_clickhouse_insert_duration_seconds_sum":
                total += sample.value
            elif sample.name == "otlp_gateway_clickhouse_insert_duration_seconds_count":
                count += int(sample.value)
                if sample.labels.get("result") == "failed":
                    failed += int(sample.value)
    p95 = None
    if count:
        p95 = next((bound * 1000 for bound, seen in sorted(buckets.items()) if seen >= 0.95 * count), None)
    return WriterState(
        queue_depth=int(depth),
        inserts=count,
        failed_inserts=failed,
        insert_mean_ms=total / count * 1000 if count else None,
        insert_p95_ms=p95,
    )


def metrics_view(request: HttpRequest) -> HttpResponse:
    token = settings.GATEWAY_METRICS_TOKEN
    if token and not hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
        response = HttpResponse(
            "metrics need 'Authorization: Bearer <GATEWAY_METRICS_TOKEN>'\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(generate_latest(exposition_registry()), content_type=CONTENT_TYPE_LATEST)
