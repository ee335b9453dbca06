"""Prometheus metrics on /metrics as a scraper sees them, after real requests over both
transports; /readyz's checks; the JSON log format; the CPU count that sizes gunicorn."""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.request

import grpc
import pytest
from django.test import override_settings
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.jsonlog import JsonFormatter
from gateway.metrics import GatewayMetrics, Transport
from storage.host import available_cpus
from tests import otlp_requests
from tests.clients import grpc_export, http_post
from vocabulary import Signal


def _samples(text: str) -> dict[tuple, float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(http_url: str) -> dict[tuple, float]:
    with urllib.request.urlopen(f"{http_url}/metrics") as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return _samples(response.read().decode())


def _value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_items_bytes_and_latency_by_signal_transport_and_outcome(tenant, http_url, grpc_channel):
    before = scrape(http_url)
    body = otlp_requests.traces_request(3).SerializeToString()
    # Another trace: a body sent again is stored (and its rows counted) once.
    grpc_body = otlp_requests.traces_request(3, trace_id=b"\x07" * 16).SerializeToString()
    assert http_post(http_url, "traces", body, key=tenant.key).status == 200
    assert http_post(http_url, "logs", b"not protobuf", key=tenant.key).status == 400
    assert http_post(http_url, "traces", body, key=None).status == 401
    grpc_export(grpc_channel, "traces", grpc_body, key=tenant.key)
    with pytest.raises(grpc.RpcError):
        grpc_export(grpc_channel, "metrics", body, key="otlpgw_not_a_key")
    after = scrape(http_url)

    def delta(name, **labels):
        return _value(after, name, **labels) - _value(before, name, **labels)

    accepted_http = dict(signal="traces", transport="http", outcome="accepted")
    accepted_grpc = dict(signal="traces", transport="grpc", outcome="accepted")
    assert delta("otlp_gateway_requests_total", **accepted_http) == 1
    assert delta("otlp_gateway_requests_total", **accepted_grpc) == 1
    assert delta("otlp_gateway_requests_total", signal="logs", transport="http", outcome="invalid") == 1
    assert delta("otlp_gateway_requests_total", signal="traces", transport="http", outcome="unauthorized") == 1
    assert delta("otlp_gateway_requests_total", signal="metrics", transport="grpc", outcome="unauthorized") == 1
    assert delta("otlp_gateway_items_total", **accepted_http) == 3
    assert delta("otlp_gateway_items_total", **accepted_grpc) == 3
    assert delta("otlp_gateway_received_bytes_total", **accepted_http) == len(body)
    assert delta("otlp_gateway_request_duration_seconds_count", **accepted_grpc) == 1
    assert delta("otlp_gateway_request_duration_seconds_bucket", le="+Inf", **accepted_http) == 1
    # The batcher: both requests' spans stored, each flush timed, nothing left queued.
    assert delta("otlp_gateway_clickhouse_rows_total", table="otel_traces", result="stored") == 6
    assert delta("otlp_gateway_clickhouse_insert_duration_seconds_count", table="otel_traces", result="stored") >= 1
    assert delta("otlp_gateway_batcher_flush_duration_seconds_count") >= 1
    assert _value(after, "otlp_gateway_batcher_queue_depth") == 0
    # No tenant label unless GATEWAY_METRICS_TENANT_LABEL says so.
    assert not any("tenant" in dict(labels) for _, labels in after)
    assert not any(name.endswith("_created") for name, _ in after)


def test_tenant_label_only_when_enabled():
    for enabled in (False, True):
        registry = CollectorRegistry()
        metrics = GatewayMetrics(registry=registry, tenant_label=enabled)
        metrics.record_export(
            transport=Transport.HTTP,
            signal=Signal.LOGS,
            outcome="accepted",
            seconds=0.01,
            body_bytes=10,
            accepted=2,
            rejected=1,
            tenant="acme",
        )
        samples = _samples(generate_latest(registry).decode())
        tenant = {"tenant": "acme"} if enabled else {}
        labels = dict(signal="logs", transport="http", **tenant)
        assert _value(samples, "otlp_gateway_items_total", outcome="accepted", **labels) == 2
        assert _value(samples, "otlp_gateway_items_total", outcome="rejected", **labels) == 1
        assert _value(samples, "otlp_gateway_received_bytes_total", outcome="accepted", **labels) == 10


@pytest.mark.django_db
def test_metrics_token(client, pipeline):
    with override_settings(GATEWAY_METRICS_TOKEN="scrape-secret"):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").status_code == 200
    assert client.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_readyz_checks_database_cache_and_clickhouse(client, pipeline):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "cache": "ok", "clickhouse": "ok", "clickhouse_writes": "ok"},
    }
    # A cache that keeps nothing, as a Redis that refuses writes would.
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["cache"] == "error: value not read back"


@pytest.mark.django_db(transaction=True)
def test_readyz_is_not_ready_while_storage_cannot_take_writes(client, store, tenant, http_url):
    with override_settings(GATEWAY_READY_MIN_FREE_MB=10**9):  # a petabyte free: no disk has it
        response = client.get("/readyz")
    assert response.status_code == 503
    assert "MB free, under GATEWAY_READY_MIN_FREE_MB" in response.json()["checks"]["clickhouse_writes"]

    body = otlp_requests.traces_request(2).SerializeToString()
    store.command("DETACH TABLE otel_traces")  # the table cannot be written
    try:
        assert http_post(http_url, "traces", body, key=tenant.key).status == 503
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "INSERTs into otel_traces are failing" in response.json()["checks"]["clickhouse_writes"]
        with override_settings(GATEWAY_READY_FAILURE_SECONDS=0):  # a failure long ago: try again
            assert client.get("/readyz").status_code == 200
    finally:
        store.command("ATTACH TABLE otel_traces")
    assert http_post(http_url, "traces", body, key=tenant.key).status == 200
    assert client.get("/readyz").json()["checks"]["clickhouse_writes"] == "ok"


def test_json_log_lines_keep_extras_and_exceptions():
    logger = logging.getLogger("test.jsonlog")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            logger.name,
            logging.ERROR,
            __file__,
            1,
            "stored %s rows",
            (5,),
            exc_info=sys.exc_info(),
            extra={"tenant_id": "t-1"},
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "ERROR" and line["logger"] == "test.jsonlog"
    assert line["message"] == "stored 5 rows" and line["tenant_id"] == "t-1"
    assert "ValueError: boom" in line["exception"]
    assert line["time"].endswith("+00:00")


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_workers_follow_the_container_cpu_limit(tmp_path, files, expected):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    unlimited = len(os.sched_getaffinity(0))  # what the process is scheduled on
    assert available_cpus(tmp_path / "no-cgroup") == unlimited
    assert available_cpus(tmp_path) == (min(expected, unlimited) if expected else unlimited)
