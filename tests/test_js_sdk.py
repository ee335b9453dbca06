"""A second real client: the OpenTelemetry JavaScript SDK's own OTLP exporters (Node), over
http/json, http/protobuf with and without gzip (Node sends chunked bodies), and gRPC, for
traces, metrics and logs, configured only through the standard OTEL_EXPORTER_OTLP_*
variables; rows read back and compared with what was sent.

The packages come from npm (tests/js/package.json, locked), installed here on first use."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

JS = Path(__file__).resolve().parent / "js"
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="session")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are not installed: the JavaScript SDK client test needs them")
    lock = (JS / "package-lock.json").read_bytes()
    stamp = JS / "node_modules" / ".installed"
    want = hashlib.sha256(lock).hexdigest()
    if not stamp.exists() or stamp.read_text() != want:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            cwd=JS,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            pytest.skip(f"npm could not install the JavaScript SDK: {result.stderr[-500:]}")
        stamp.write_text(want)
    return node


def _export(node: str, *, protocol: str, endpoint: str, key: str, run_id: str, compression: str = "none") -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(
        PROTOCOL=protocol,
        RUN_ID=run_id,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_EXPORTER_OTLP_HEADERS=f"authorization={quote(f'Bearer {key}')}",
        OTEL_EXPORTER_OTLP_COMPRESSION=compression,
    )
    result = subprocess.run([node, "export.cjs"], cwd=JS, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


CASES = [
    ("http/json", "none"),
    ("http/protobuf", "none"),
    ("http/protobuf", "gzip"),
    ("grpc", "none"),
    ("grpc", "gzip"),
]


@pytest.mark.parametrize("protocol, compression", CASES, ids=[f"{p}-{c}" for p, c in CASES])
def test_javascript_sdk_exporters(protocol, compression, node, tenant, http_server, http_url, grpc_target):
    endpoint = f"http://{grpc_target}" if protocol == "grpc" else f"http://127.0.0.1:{http_server.port}"
    run_id = f"{protocol.replace('/', '-')}-{compression}"
    results = _export(
        node, protocol=protocol, endpoint=endpoint, key=tenant.key, run_id=run_id, compression=compression
    )
    assert results.pop("sent") == {"spans": 3, "logs": 2}
    assert results == {signal: {"code": 0, "error": None} for signal in ("traces", "metrics", "logs")}

    spans = tenant.rows(
        "SELECT SpanName, SpanAttributes, ServiceName FROM otel_traces "
        "WHERE TenantId = {tenant_id:String} ORDER BY SpanName"
    )
    assert [row["SpanName"] for row in spans] == [f"{run_id}-span-{i}" for i in range(3)]
    assert [row["SpanAttributes"]["i"] for row in spans] == ["0", "1", "2"]
    assert {row["SpanAttributes"]["user.email"] for row in spans} == {"js@example.com"}  # decrypted for the tenant
    assert {row["ServiceName"] for row in spans} == {f"node-{run_id}"}

    (counter,) = tenant.rows(
        "SELECT MetricName, Value, Attributes FROM otel_metrics_sum WHERE TenantId = {tenant_id:String}"
    )
    assert (counter["MetricName"], counter["Value"], counter["Attributes"]) == (
        f"{run_id}.requests",
        5.0,
        {"route": "/a"},
    )
    (histogram,) = tenant.rows(
        "SELECT MetricName, Count, Sum FROM otel_metrics_histogram WHERE TenantId = {tenant_id:String}"
    )
    assert (histogram["MetricName"], histogram["Count"], histogram["Sum"]) == (f"{run_id}.latency", 1, 12.5)

    logs = tenant.rows(
        "SELECT Body, SeverityText, LogAttributes FROM otel_logs WHERE TenantId = {tenant_id:String} ORDER BY Body"
    )
    assert [(row["Body"], row["SeverityText"], row["LogAttributes"]) for row in logs] == [
        (f"{run_id}-log-{i}", "INFO", {"i": str(i)}) for i in range(2)
    ]
