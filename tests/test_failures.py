"""Every way a request can fail ends in one reply the sender can act on and one usage row:
hostile OTLP/JSON, a fault of the gateway's own, the database or the rate-limit store
unreachable, rows storage refuses for what they are. Over both transports where it applies."""

from __future__ import annotations

import grpc
import pytest
from django.db import connection
from django.test import override_settings

from gateway.otlp import decode, runtime
from tests import otlp_requests
from tests.clients import grpc_export, http_post, retry_info
from tests.conftest import unwritable_table
from tests.test_quotas import on_plan

pytestmark = pytest.mark.django_db(transaction=True)

GOOD = otlp_requests.traces_request(3).SerializeToString()
JSON = "application/json"


def _usage(tenant) -> dict[str, tuple[int, int, int]]:
    assert runtime.get_pipeline().batcher.drain(30)
    return {
        r["Outcome"]: (r["Requests"], r["Items"], r["ItemsAccepted"])
        for r in tenant.rows(
            "SELECT Outcome, sum(Requests) AS Requests, sum(Items) AS Items, sum(ItemsAccepted) AS ItemsAccepted "
            "FROM gateway_usage WHERE TenantId = {tenant_id:String} GROUP BY Outcome"
        )
    }


def _span_json(**span) -> bytes:
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "s",
                                **span,
                            }
                        ]
                    }
                ]
            }
        ]
    }
    return otlp_requests.dumps(document)


HOSTILE_JSON = {
    "nesting 1000 deep": b'{"resourceSpans":' + b"[" * 1000 + b"]" * 1000 + b"}",
    "attribute values nested deep": (
        '{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":'
        + '{"kvlistValue":{"values":[{"key":"b","value":' * 300
        + '{"stringValue":"x"}'
        + "}]}}" * 300
        + "}]}]}]}]}"
    ).encode(),
    "enum of 1e999": _span_json(kind=1e999).replace(b"Infinity", b"1e999"),
    "lone surrogate as an enum": _span_json().replace(b'"name": "s"', b'"kind": "\\ud800"'),
    "lone surrogate as a field name": _span_json().replace(b'"name"', b'"\\ud800"'),
    "lone surrogate as a top-level key": b'{"\\udfff": 1}',
    "lone surrogate in a name": _span_json(name="x").replace(b'"x"', b'"a\\udbff"'),
    "number as a string field": _span_json(name=12),
    "list as an object": b'{"resourceSpans": {"a": 1}}',
}


@pytest.mark.parametrize("case", list(HOSTILE_JSON))
def test_hostile_json_is_a_400_in_json_and_metered(case, tenant, http_url):
    reply = http_post(http_url, "traces", HOSTILE_JSON[case], key=tenant.key, content_type=JSON)
    assert reply.status == 400, reply.body[:300]
    assert reply.headers["content-type"] == JSON
    status = reply.status_message()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "OTLP/JSON" in status.message + "JSON"
    assert _usage(tenant) == {"invalid": (1, 0, 0)}
    assert http_post(http_url, "traces", GOOD, key=tenant.key).status == 200


def test_protobuf_nested_too_deep_is_invalid_on_both_transports(tenant, http_url, grpc_channel):
    request = otlp_requests.traces_request(1)
    value = request.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="deep").value
    for _ in range(200):
        value = value.kvlist_value.values.add(key="k").value
    value.string_value = "bottom"
    body = request.SerializeToString()
    assert http_post(http_url, "traces", body, key=tenant.key).status == 400
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", body, key=tenant.key)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _usage(tenant) == {"invalid": (2, 2, 0)}  # its one span counted, refused
    assert tenant.count("otel_traces") == 0


@pytest.fixture
def gateway_bug(monkeypatch):
    """A fault of the gateway's own in the middle of the pipeline (after authentication)."""

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(decode, "decompress", broken)


@pytest.mark.parametrize("content_type", ["application/x-protobuf", JSON])
def test_an_internal_error_is_a_500_status_with_a_reference_and_metered(
    content_type, tenant, http_url, gateway_bug, caplog
):
    body = GOOD if content_type != JSON else otlp_requests.dumps(otlp_requests.traces_json())
    reply = http_post(http_url, "traces", body, key=tenant.key, content_type=content_type)
    assert reply.status == 500 and reply.headers["content-type"] == content_type
    assert "retry-after" not in reply.headers
    message = reply.status_message().message
    assert "internal error (reference " in message and "nothing from this request was stored" in message
    reference = message.split("reference ")[1].split(")")[0]
    assert any(reference in record.getMessage() and record.exc_info for record in caplog.records)
    assert _usage(tenant) == {"internal_error": (1, 0, 0)}
    assert tenant.count("otel_traces") == 0


def test_an_internal_error_over_grpc(tenant, grpc_channel, gateway_bug):
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", GOOD, key=tenant.key)
    assert caught.value.code() == grpc.StatusCode.INTERNAL and "internal error" in caught.value.details()
    assert retry_info(caught.value) is None
    assert _usage(tenant) == {"internal_error": (1, 0, 0)}


def test_database_unreachable_while_loading_the_key_ring_is_retryable_and_metered(tenant, http_url, grpc_channel):
    """A real fault: the data-key table is gone while a tenant's first request needs its keys."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE tenants_tenantdatakey RENAME TO tenants_tenantdatakey_away")
    try:
        reply = http_post(http_url, "traces", GOOD, key=tenant.key)
        assert reply.status == 503 and reply.headers["retry-after"]
        assert "cannot reach its database" in reply.status_message().message
        with pytest.raises(grpc.RpcError) as caught:
            grpc_export(grpc_channel, "traces", GOOD, key=tenant.key)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE and retry_info(caught.value) is not None
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE tenants_tenantdatakey_away RENAME TO tenants_tenantdatakey")
    assert http_post(http_url, "traces", GOOD, key=tenant.key).status == 200
    assert _usage(tenant) == {"storage_unavailable": (2, 3 * 2, 0), "accepted": (1, 3, 3)}
    assert tenant.count("otel_traces") == 3


def test_rate_limit_store_unreachable_is_retryable_and_metered(tenant, http_url, grpc_channel):
    on_plan(tenant, requests_per_second=100)
    dead_redis = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    with override_settings(CACHES=dead_redis):
        reply = http_post(http_url, "traces", GOOD, key=tenant.key)
        assert reply.status == 503 and reply.headers["retry-after"]
        assert "cannot reach its rate-limit store" in reply.status_message().message
        with pytest.raises(grpc.RpcError) as caught:
            grpc_export(grpc_channel, "traces", GOOD, key=tenant.key)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert http_post(http_url, "traces", GOOD, key=tenant.key).status == 200
    assert _usage(tenant) == {"storage_unavailable": (2, 6, 0), "accepted": (1, 3, 3)}


def test_unsupported_content_type_is_metered_to_the_tenant(tenant, http_url):
    reply = http_post(http_url, "traces", GOOD, key=tenant.key, content_type="text/plain")
    assert reply.status == 415
    assert _usage(tenant) == {"invalid": (1, 0, 0)}


@pytest.fixture
def rows_storage_refuses(monkeypatch):
    """Rows ClickHouse refuses for what they are (a type its column cannot hold, as in
    tests/test_storage.py::test_one_refused_request_fails_alone), wherever they are prepared."""
    from gateway.otlp import pipeline as pipeline_module
    from gateway.otlp.prepare import PreparePool
    from storage.clickhouse import RowsRejected

    def refused(*args, **kwargs):
        raise RowsRejected("rows for otel_traces cannot be encoded: Duration -5 is not a UInt64")

    monkeypatch.setattr(PreparePool, "prepare", refused)
    monkeypatch.setattr(pipeline_module, "prepare", refused)


def test_rows_storage_refuses_are_a_permanent_error(tenant, http_url, grpc_channel, rows_storage_refuses):
    reply = http_post(http_url, "traces", GOOD, key=tenant.key)
    assert reply.status == 400 and "retry-after" not in reply.headers
    assert "cannot be stored, and would not be on a retry" in reply.status_message().message
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(grpc_channel, "traces", GOOD, key=tenant.key)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and retry_info(caught.value) is None
    assert _usage(tenant) == {"invalid": (2, 6, 0)}


def test_a_table_that_cannot_be_written_stores_and_meters_nothing_as_accepted(store, tenant, http_url):
    with unwritable_table(store, "otel_traces"):
        reply = http_post(http_url, "traces", GOOD, key=tenant.key)
        assert reply.status == 503 and "nothing from this request was stored" in reply.status_message().message
        assert tenant.count("otel_traces") == 0
        # Its usage comes from its stored rows, and none was stored: nothing is accepted.
        assert _usage(tenant) == {"storage_unavailable": (1, 3, 0)}
    # The exporter retries once the table can be written: stored once, metered once.
    assert http_post(http_url, "traces", GOOD, key=tenant.key).status == 200
    assert tenant.count("otel_traces") == 3
    assert _usage(tenant) == {"storage_unavailable": (1, 3, 0), "accepted": (1, 3, 3)}
