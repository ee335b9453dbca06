"""Store.encode + Store.insert_native (the batcher's path: each request encodes its own Native
block, one INSERT sends the blocks of several) store exactly what clickhouse-connect's own
columnar insert stores."""

from __future__ import annotations

import gzip
import uuid
from datetime import UTC

import lz4.frame
import pytest
from clickhouse_connect.datatypes.registry import get_from_name

from storage.clickhouse import MAIN_LANE, Store
from storage.flatten.traces import flatten_traces
from tests import otlp_requests
from tests.otlp_requests import kv


def _request(spans: int):
    request = otlp_requests.traces_request(spans)
    for i, span in enumerate(request.resource_spans[0].scope_spans[0].spans):
        span.attributes.extend([kv("http.method", "GET"), kv("ok", i % 2 == 0), kv("ratio", 0.5)])
        if i % 3:
            span.events.add(time_unix_nano=span.start_time_unix_nano + 1, name="e", attributes=[kv("k", i)])
        if i % 4 == 0:
            span.links.add(trace_id=bytes(range(16)), span_id=bytes(range(8)), attributes=[kv("l", "x")])
    return request


def _rows(store: Store, tenant_id: str) -> list[tuple]:
    return store.dangerously_query_unscoped(
        "SELECT * EXCEPT (TenantId, GatewayPartition) FROM otel_traces WHERE TenantId = {t:String} "
        "ORDER BY SpanId, Timestamp",
        {"t": tenant_id},
        reason="test",
    ).result_rows


def test_encoded_blocks_store_what_the_driver_stores(store):
    by_driver, by_blocks = str(uuid.uuid4()), str(uuid.uuid4())
    first, second = _request(7), _request(5)
    for span in second.resource_spans[0].scope_spans[0].spans:
        span.span_id = bytes(7) + span.span_id[-1:]  # distinct from the first request's

    for request in (first, second):
        (batch,) = flatten_traces(request, tenant_id=by_driver, retention_days=3).batches
        columns = [[list(v) if isinstance(v, tuple) else v for v in column] for column in batch.columns]
        store._get_client().insert(batch.table, columns, column_names=list(batch.column_names), column_oriented=True)

    batches = [flatten_traces(r, tenant_id=by_blocks, retention_days=3).batches[0] for r in (first, second)]
    blocks = [store.encode(b.table, b.column_names, b.columns) for b in batches]
    store.insert_native(batches[0].table, batches[0].column_names, blocks)  # one INSERT, two blocks

    assert len(_rows(store, by_blocks)) == 12
    assert _rows(store, by_blocks) == _rows(store, by_driver)


class _FakeServerClient:
    """What Store uses of an HTTP clickhouse-connect client."""

    server_tz = UTC

    def __init__(self, write_compression):
        self.write_compression = write_compression
        self.inserts = []

    def create_insert_context(self, table, column_names=None):  # as the real one: all columns when None
        class Context:
            column_names = ["a", "b"]
            column_types = [get_from_name("LowCardinality(String)"), get_from_name("UInt64")]

        return Context()

    def raw_insert(self, table, column_names, insert_block, settings=None, fmt=None, compression=None):
        self.inserts.append((table, column_names, insert_block, settings, fmt, compression))


@pytest.mark.parametrize(
    "compression, decompress",
    [
        ("gzip", gzip.decompress),
        ("lz4", lz4.frame.decompress),
        (None, lambda data: data),
    ],
)
def test_a_server_gets_the_blocks_compressed_as_the_client_negotiated(compression, decompress):
    store = Store("http://127.0.0.1:9/default", cluster="c1")
    store._clients[MAIN_LANE] = client = _FakeServerClient(compression)
    blocks = [store.encode("t", ("a", "b"), [["x", "y"], [1, 2]]), store.encode("t", ("a", "b"), [["z"], [3]])]
    store.insert_native("t", ("a", "b"), blocks)
    ((table, names, data, settings, fmt, sent_compression),) = client.inserts
    assert (table, names, fmt, sent_compression) == ("t", ["a", "b"], "Native", compression)
    assert settings == {"insert_distributed_sync": 1, "deduplicate_blocks_in_dependent_materialized_views": 1}
    assert decompress(data) == b"".join(blocks)
    assert not blocks[0].startswith(b"INSERT")
