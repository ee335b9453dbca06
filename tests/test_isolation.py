"""Two tenants sending at once: each tenant's rows sit in its own partitions, and the scoped
reader for one never returns the other's rows."""

from __future__ import annotations

import threading

import pytest

from storage.clickhouse import UnscopedQueryError
from storage.reader import TenantReader
from tests import otlp_requests
from tests.clients import grpc_export, http_post

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS_PER_TRANSPORT = 10
SPANS = 50


def _send(tenant, service: str, http_url: str, grpc_channel, errors: list, sender: int) -> None:
    def body(n: int) -> bytes:  # every request its own trace: the gateway stores a repeated one once
        trace_id = (sender * 1000 + n + 1).to_bytes(16, "big")
        return otlp_requests.traces_request(SPANS, service=service, trace_id=trace_id).SerializeToString()

    try:
        for n in range(REQUESTS_PER_TRANSPORT):
            assert http_post(http_url, "traces", body(2 * n), key=tenant.key).status == 200
            grpc_export(grpc_channel, "traces", body(2 * n + 1), key=tenant.key)
    except Exception as exc:  # surfaced in the main thread
        errors.append(exc)


def test_concurrent_tenants_stay_apart(make_tenant, http_url, grpc_channel, store):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    errors: list = []
    threads = [
        threading.Thread(target=_send, args=(tenant, service, http_url, grpc_channel, errors, sender))
        for tenant, service in ((alpha, "alpha-svc"), (beta, "beta-svc"))
        for sender in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    expected = 2 * 2 * REQUESTS_PER_TRANSPORT * SPANS
    for tenant, service in ((alpha, "alpha-svc"), (beta, "beta-svc")):
        rows = tenant.rows(
            "SELECT ServiceName, count() AS n FROM otel_traces WHERE TenantId = {tenant_id:String} GROUP BY ServiceName"
        )
        assert rows == [{"ServiceName": service, "n": expected}]
        partitions = tenant.rows(
            "SELECT DISTINCT _partition_id AS p, TenantId FROM otel_traces WHERE TenantId = {tenant_id:String}"
        )
        assert partitions and all(p["TenantId"] == str(tenant.tenant.id) for p in partitions)
    # Partition ids of one tenant never hold the other's rows.
    alpha_parts = {
        p["p"]
        for p in alpha.rows("SELECT DISTINCT _partition_id AS p FROM otel_traces WHERE TenantId = {tenant_id:String}")
    }
    beta_parts = {
        p["p"]
        for p in beta.rows("SELECT DISTINCT _partition_id AS p FROM otel_traces WHERE TenantId = {tenant_id:String}")
    }
    assert alpha_parts.isdisjoint(beta_parts)
    partition_keys = store.query(
        "SELECT DISTINCT partition FROM system.parts WHERE table = {table:String} AND active", {"table": "otel_traces"}
    ).result_rows
    assert any(str(alpha.tenant.id) in key for (key,) in partition_keys)


def test_scoped_reader_cannot_see_other_tenant_even_without_filter(make_tenant, http_url):
    alpha, beta = make_tenant("alpha"), make_tenant("beta")
    for tenant in (alpha, beta):
        http_post(http_url, "traces", otlp_requests.traces_request(2).SerializeToString(), key=tenant.key)
        http_post(http_url, "logs", otlp_requests.logs_request(2).SerializeToString(), key=tenant.key)
    # A query that forgets its own filter (the parameter only in a harmless place) still sees
    # only the reader's tenant, through ClickHouse's additional_table_filters.
    sloppy = "SELECT DISTINCT TenantId FROM otel_traces WHERE {tenant_id:String} != ''"
    assert alpha.reader.query(sloppy).result_rows == [(str(alpha.tenant.id),)]
    joined = "SELECT DISTINCT l.TenantId FROM otel_logs AS l, otel_traces AS t WHERE t.TenantId = {tenant_id:String}"
    assert beta.reader.query(joined).result_rows == [(str(beta.tenant.id),)]


def test_unscoped_reads_are_refused(store, tenant):
    with pytest.raises(UnscopedQueryError):
        store.query("SELECT count() FROM otel_traces")
    with pytest.raises(UnscopedQueryError):
        store.query("select * from OTEL_LOGS")
    with pytest.raises(UnscopedQueryError):
        tenant.reader.query("SELECT count() FROM otel_traces")
    with pytest.raises(UnscopedQueryError):
        tenant.reader.query(
            "SELECT count() FROM otel_traces WHERE TenantId = {tenant_id:String}", {"tenant_id": "someone-else"}
        )
    with pytest.raises(ValueError):
        TenantReader(store, "x' OR 1=1 --")
    # Operator tooling must say why it reads across tenants.
    with pytest.raises(ValueError):
        store.dangerously_query_unscoped("SELECT count() FROM otel_traces", reason="")
    assert store.dangerously_query_unscoped("SELECT count() FROM otel_traces", reason="test").result_rows[0][0] >= 0
