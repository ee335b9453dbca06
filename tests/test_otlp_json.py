"""OTLP/JSON as the specification writes it (hex ids, lowerCamelCase, enums as integers,
64-bit integers as strings or numbers) lands exactly the rows the same data does as protobuf."""

from __future__ import annotations

import base64
import copy
import urllib.request

import pytest
from google.protobuf import json_format

from gateway.otlp.decode import REQUEST_TYPES
from storage.schema import BLOCK_COLUMN, METRIC_TABLES, PARTITION_COLUMN, REQUEST_BYTES_COLUMN
from tests import otlp_requests
from vocabulary import Signal

pytestmark = pytest.mark.django_db(transaction=True)

CASES = {
    Signal.TRACES: (otlp_requests.traces_json, ("otel_traces",)),
    Signal.METRICS: (otlp_requests.metrics_json, METRIC_TABLES),
    Signal.LOGS: (otlp_requests.logs_json, ("otel_logs",)),
}


def post(url: str, body: bytes, content_type: str, key: str) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": content_type, "Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request) as response:
        return response.status, response.read()


def _as_protobuf(signal: Signal, document: dict) -> bytes:
    """The same data as a protobuf message, translating ids the way the spec defines them."""
    document = copy.deepcopy(document)

    def fix(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                else:
                    fix(value)
        elif isinstance(node, list):
            for item in node:
                fix(item)

    fix(document)
    return json_format.ParseDict(document, REQUEST_TYPES[signal]()).SerializeToString()


def _table_rows(store, tenant, table: str) -> list[tuple]:
    """The rows `tenant` has in `table`, but of what the gateway adds of the request (storage.requests:
    a block id derived from the tenant and the body, the body's size) only which rows carry it."""
    columns = [
        f"`{name}`"
        for (name,) in store.query(
            "SELECT name FROM system.columns WHERE table = {table:String} AND database = currentDatabase()"
            " AND name NOT IN ('TenantId', {block:String}, {size:String}, {partition:String})",
            {"table": table, "block": BLOCK_COLUMN, "size": REQUEST_BYTES_COLUMN, "partition": PARTITION_COLUMN},
        ).result_rows
    ]
    columns += [f"{BLOCK_COLUMN} != ''", f"{REQUEST_BYTES_COLUMN} != 0", f"{PARTITION_COLUMN} = TenantId"]
    result = tenant.reader.query(
        f"SELECT {', '.join(columns)} FROM {table} WHERE TenantId = {{tenant_id:String}} ORDER BY tuple(*)"
    )
    return result.result_rows


def _request_bytes(tenant, tables) -> int:
    """The body size the tenant's stored rows carry (on the first row of the request's first block)."""
    total = 0
    for table in tables:
        (row,) = tenant.rows(
            f"SELECT sum({REQUEST_BYTES_COLUMN}) AS n FROM {table} WHERE TenantId = {{tenant_id:String}}"
        )
        total += row["n"]
    return total


@pytest.mark.parametrize("signal", list(CASES), ids=str)
def test_json_lands_same_rows_as_protobuf(signal, http_url, make_tenant, store):
    build, tables = CASES[signal]
    as_json, as_protobuf = make_tenant("json"), make_tenant("protobuf")
    url = f"{http_url}/v1/{signal}"
    json_body, protobuf_body = otlp_requests.dumps(build()), _as_protobuf(signal, build())
    status, body = post(url, json_body, "application/json", as_json.key)
    assert status == 200 and body == b"{}"
    status, _ = post(url, protobuf_body, "application/x-protobuf", as_protobuf.key)
    assert status == 200
    for table in tables:
        json_rows = _table_rows(store, as_json, table)
        assert json_rows, f"nothing stored in {table}"
        assert json_rows == _table_rows(store, as_protobuf, table)
    assert _request_bytes(as_json, tables) == len(json_body)  # each as received
    assert _request_bytes(as_protobuf, tables) == len(protobuf_body)


def test_json_span_values(http_url, tenant):
    post(
        f"{http_url}/v1/traces",
        otlp_requests.dumps(otlp_requests.traces_json()),
        "application/json; charset=utf-8",
        tenant.key,
    )
    (row,) = tenant.rows(
        "SELECT TraceId, SpanId, ParentSpanId, SpanKind, StatusCode, StatusMessage, SpanAttributes, Duration,"
        " Links.TraceId, Links.Attributes, Events.Name FROM otel_traces WHERE TenantId = {tenant_id:String}"
    )
    assert (row["TraceId"], row["SpanId"], row["ParentSpanId"]) == (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        "eee19b7ec3c1b173",
    )
    assert (row["SpanKind"], row["StatusCode"], row["StatusMessage"]) == ("Server", "Error", "boom")
    assert row["SpanAttributes"] == {
        "my.span.attr": "some value",
        "count": "42",
        "ratio": "0.5",
        "ok": "true",
        "list": '["a",1]',
    }
    assert row["Duration"] == 1_000_000
    assert row["Links.TraceId"] == ["0af7651916cd43dd8448eb211c80319c"]
    assert row["Links.Attributes"] == [{"l": "7"}]
    assert row["Events.Name"] == ["evt"]


def test_json_metric_values(http_url, tenant):
    post(f"{http_url}/v1/metrics", otlp_requests.dumps(otlp_requests.metrics_json()), "application/json", tenant.key)
    (summary,) = tenant.rows(
        "SELECT Count, Sum, ValueAtQuantiles.Quantile AS Q, ValueAtQuantiles.Value AS V FROM otel_metrics_summary"
        " WHERE TenantId = {tenant_id:String}"
    )
    assert summary == {"Count": 4, "Sum": 20.0, "Q": [0.5, 0.99], "V": [4.0, 9.0]}
    (sum_row,) = tenant.rows(
        "SELECT Value, Exemplars.TraceId AS T, Exemplars.Value AS EV FROM otel_metrics_sum WHERE TenantId = {tenant_id:String}"
    )
    assert sum_row == {"Value": 5.0, "T": ["5b8efff798038103d269b633813fc60c"], "EV": [1.5]}
    (exp,) = tenant.rows(
        "SELECT ZeroCount, PositiveOffset, PositiveBucketCounts FROM otel_metrics_exponential_histogram"
        " WHERE TenantId = {tenant_id:String}"
    )
    assert exp == {"ZeroCount": 1, "PositiveOffset": 1, "PositiveBucketCounts": [0, 2]}
    (gauge,) = tenant.rows("SELECT Value FROM otel_metrics_gauge WHERE TenantId = {tenant_id:String}")
    assert gauge["Value"] == 10.0


def test_json_log_values(http_url, tenant):
    post(f"{http_url}/v1/logs", otlp_requests.dumps(otlp_requests.logs_json()), "application/json", tenant.key)
    (row,) = tenant.rows(
        "SELECT Body, SeverityNumber, SeverityText, TraceId, LogAttributes, ScopeName, ScopeVersion"
        " FROM otel_logs WHERE TenantId = {tenant_id:String}"
    )
    assert row == {
        "Body": "Example log record",
        "SeverityNumber": 10,
        "SeverityText": "Information",
        "TraceId": "5b8efff798038103d269b633813fc60c",
        "LogAttributes": {"string.attribute": "some string", "map.attribute": '{"some.map.key":"some value"}'},
        "ScopeName": "my.library",
        "ScopeVersion": "1.0.0",
    }
