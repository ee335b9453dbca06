"""The SQL Grafana's ClickHouse data source sends for OpenTelemetry data finds our rows.

The queries are those of grafana/clickhouse-datasource v4.20.0 (commit 1d04063a31fb), as its
own tests expect them (src/data/sqlGenerator.test.ts): "generates trace ID query with
additional fields, flatten nested disabled", "generates trace search query", and the logs
query for the OTel 1.2.9 schema (exporter v0.150 and earlier, detected by otel_logs having
TimestampTime: src/otel.ts). Only the database name and Grafana's time macros are filled in.
They run as a tool's queries would, scoped to one tenant by ClickHouse's table filters alone.
"""

from __future__ import annotations

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests import otlp_requests
from tests.clients import http_post

pytestmark = pytest.mark.django_db(transaction=True)

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
FROM, TO = "toDateTime(now() - 3600)", "toDateTime(now() + 3600)"

TRACE_BY_ID = """WITH '{trace_id}' as __gf_trace_id, (SELECT min(Start) FROM "default"."otel_traces_trace_id_ts" WHERE TraceId = __gf_trace_id) as __gf_trace_start,
(SELECT max(End) + 1 FROM "default"."otel_traces_trace_id_ts" WHERE TraceId = __gf_trace_id) as __gf_trace_end
SELECT "TraceId" as traceID, "SpanId" as spanID, "ParentSpanId" as parentSpanID,
"ServiceName" as serviceName, "SpanName" as operationName, multiply(toUnixTimestamp64Nano("Timestamp"), 0.000001) as startTime,
multiply("Duration", 0.000001) as duration,
arrayMap(key -> map('key', key, 'value',"SpanAttributes"[key]),
mapKeys("SpanAttributes")) as tags,
arrayMap(key -> map('key', key, 'value',"ResourceAttributes"[key]), mapKeys("ResourceAttributes")) as serviceTags,
if("StatusCode" IN ('Error', 'STATUS_CODE_ERROR'), 2, 0) as statusCode,
arrayMap((name, timestamp, attributes) -> tuple(name, toString(toUnixTimestamp64Milli(timestamp)), arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))::Tuple(name String, timestamp String, fields Array(Map(String, String))), "Events".Name, "Events".Timestamp, "Events".Attributes) AS logs,
arrayMap((traceID, spanID, attributes) -> tuple(traceID, spanID, arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))::Tuple(traceID String, spanID String, tags Array(Map(String, String))), "Links".TraceId, "Links".SpanId, "Links".Attributes) AS references,
"StatusMessage" as statusMessage,
"TraceState" as traceState
FROM "default"."otel_traces" WHERE traceID = __gf_trace_id AND "Timestamp" >= __gf_trace_start AND "Timestamp" <= __gf_trace_end"""

TRACE_SEARCH = (
    'SELECT "TraceId" as traceID, "ServiceName" as serviceName, "SpanName" as operationName, "Timestamp" as '
    'startTime, multiply("Duration", 0.000001) as duration FROM "default"."otel_traces" WHERE ( Timestamp >= '
    "$__fromTime AND Timestamp <= $__toTime ) AND ( ParentSpanId = '' ) AND ( Duration > 0 ) ORDER BY Timestamp "
    "DESC, Duration DESC LIMIT 1000"
)

LOGS_OTEL_129 = (
    'SELECT Timestamp as "timestamp", Body as "body", SeverityText as "level" FROM "default"."otel_logs" WHERE '
    "( TimestampTime >= $__fromTime AND TimestampTime <= $__toTime ) ORDER BY (TimestampTime, timestamp) DESC "
    "LIMIT 1000"
)


def _grafana(sql: str) -> str:
    return sql.replace("$__fromTime", FROM).replace("$__toTime", TO)


def _send_a_trace_and_logs(tenant, http_url) -> None:
    request = otlp_requests.traces_request(3, trace_id=TRACE_ID)
    root, child, grandchild = request.resource_spans[0].scope_spans[0].spans
    child.parent_span_id, grandchild.parent_span_id = root.span_id, child.span_id
    child.status.code = Span.SPAN_KIND_UNSPECIFIED + 2  # STATUS_CODE_ERROR
    child.events.add(name="retry", time_unix_nano=child.start_time_unix_nano).attributes.append(
        otlp_requests.kv("attempt", 2)
    )
    child.links.add(trace_id=TRACE_ID, span_id=root.span_id)
    assert http_post(http_url, "traces", request.SerializeToString(), key=tenant.key).status == 200
    logs = otlp_requests.logs_request(2).SerializeToString()
    assert http_post(http_url, "logs", logs, key=tenant.key).status == 200


def test_grafana_reads_a_trace_by_id_through_the_lookup_table(make_tenant, http_url):
    tenant, other = make_tenant(), make_tenant()
    _send_a_trace_and_logs(tenant, http_url)
    _send_a_trace_and_logs(other, http_url)  # the same trace id, another tenant's
    lookup = tenant.rows(
        "SELECT TraceId, Start <= End AS ordered FROM otel_traces_trace_id_ts WHERE TenantId = {tenant_id:String}"
    )
    assert lookup == [{"TraceId": TRACE_ID.hex(), "ordered": True}]
    result = tenant.reader.query_for_tool(TRACE_BY_ID.format(trace_id=TRACE_ID.hex()))
    spans = {row["operationName"]: row for row in (dict(zip(result.column_names, r)) for r in result.result_rows)}
    assert sorted(spans) == ["span-0", "span-1", "span-2"]  # this tenant's three, not the other's
    assert spans["span-1"]["parentSpanID"] == spans["span-0"]["spanID"] and spans["span-1"]["statusCode"] == 2
    assert [event["name"] for event in spans["span-1"]["logs"]] == ["retry"]
    [reference] = spans["span-1"]["references"]
    assert (reference["traceID"], reference["spanID"]) == (TRACE_ID.hex(), spans["span-0"]["spanID"])
    assert {"key": "service.name", "value": "svc"} in spans["span-0"]["serviceTags"]


def test_grafana_trace_search_and_logs_queries_find_rows(tenant, http_url):
    _send_a_trace_and_logs(tenant, http_url)
    traces = tenant.reader.query_for_tool(_grafana(TRACE_SEARCH)).result_rows
    assert [(row[0], row[2]) for row in traces] == [(TRACE_ID.hex(), "span-0")]  # the root span only
    logs = tenant.reader.query_for_tool(_grafana(LOGS_OTEL_129)).result_rows
    assert len(logs) == 2 and all(row[1] for row in logs)


_MIGRATE_FROM_VERSION_2 = """
import json, os, sys
import django
django.setup()
from storage.clickhouse import Store
from storage import schema

store = Store(sys.argv[1])
current = schema.MIGRATIONS
schema.MIGRATIONS = current[:2]  # the schema the previous version of the gateway made
import storage.clickhouse as clickhouse
clickhouse.MIGRATIONS = schema.MIGRATIONS
tuning = clickhouse.embedded_tuning_statements
clickhouse.embedded_tuning_statements = lambda: ()  # (it names the tables of every version)
store.migrate()
clickhouse.embedded_tuning_statements = tuning
tenant = "7f0c3d4e-0000-4000-8000-000000000001"
store.command(
    "INSERT INTO otel_traces (TenantId, Timestamp, TraceId, SpanId, SpanName, ServiceName, Duration, RetentionDays) "
    f"SELECT '{tenant}', now64(9) - number, 'trace-' || toString(number % 3), toString(number), 'op', 'svc', 5, 30 "
    "FROM numbers(12)"
)
store.command(
    "INSERT INTO otel_logs (TenantId, Timestamp, Body, RetentionDays) "
    f"SELECT '{tenant}', now64(9) - number, 'line', 30 FROM numbers(4)"
)
clickhouse.MIGRATIONS = schema.MIGRATIONS = current
applied = store.migrate()  # what manage.py migrate_clickhouse does
lookup = store.dangerously_query_unscoped(
    "SELECT TraceId, Start <= End FROM otel_traces_trace_id_ts ORDER BY TraceId", reason="test").result_rows
logs = store.dangerously_query_unscoped(
    "SELECT count() FROM otel_logs WHERE TimestampTime = toDateTime(Timestamp)", reason="test").result_rows
print(json.dumps({"applied": applied, "lookup": lookup, "logs": logs}))
"""


def test_migration_3_brings_a_version_2_database_up_to_date_with_its_data(tmp_path):
    """A database the previous version made (migrations 1-2), with traces and logs in it: the
    migration adds TimestampTime to its logs and fills the lookup from its traces."""
    from tests.test_serve import run_script

    result = run_script(_MIGRATE_FROM_VERSION_2, tmp_path)
    assert result["applied"] == [3, 4, 5, 6, 7]
    assert result["lookup"] == [["trace-0", True], ["trace-1", True], ["trace-2", True]]
    assert result["logs"] == [[4]]
