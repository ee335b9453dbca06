"""End to end: `manage.py serve` as a person runs it (gunicorn worker with the gRPC server and
the batcher inside), real exporters over both transports, rows read from its chDB directory
after it stopped (one process owns a chDB path at a time)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests import otlp_requests

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gateway:
    def __init__(
        self,
        data_dir: Path,
        extra_env: dict | None = None,
        args: tuple[str, ...] = (),
        grpc_credentials: grpc.ChannelCredentials | None = None,
        log_dir: Path | None = None,
    ):
        self.args, self.grpc_credentials = args, grpc_credentials  # credentials: for a gateway serving TLS
        self.grpc_port, self.http_port = _free_port(), _free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DJANGO_"))},
            "GATEWAY_DATA_DIR": str(data_dir),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_GRPC_PORT": str(self.grpc_port),
            "GATEWAY_HTTP_PORT": str(self.http_port),
            "DJANGO_SETTINGS_MODULE": "gateway.settings",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.log = (log_dir or data_dir) / f"serve-{self.grpc_port}.log"

    def __enter__(self):
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.output = open(self.log, "w")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", *self.args],
            cwd=ROOT,
            env=self.env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        target = f"localhost:{self.grpc_port}" if self.grpc_credentials else f"127.0.0.1:{self.grpc_port}"
        with (
            grpc.secure_channel(target, self.grpc_credentials)
            if self.grpc_credentials
            else grpc.insecure_channel(target)
        ) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process.poll() is None, self.text()
                try:
                    if (
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        break
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "gateway did not start:\n" + self.text()
                time.sleep(0.2)
        return self

    def text(self) -> str:
        return self.log.read_text()

    def __exit__(self, *exc):
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(30) == 0, self.text()
        self.output.close()


def run_script(script: str, data_dir: Path, *args: str) -> dict:
    """Run `script` (Python, Django set up by it) in a fresh process with its chDB directory in
    `data_dir` (one process owns a chDB path) and return the JSON its last line prints."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gateway.settings", "GATEWAY_DATA_DIR": str(data_dir)}
    out = subprocess.run(
        [sys.executable, "-c", script, f"chdb://{data_dir / 'clickhouse'}", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _query(data_dir: Path, sql: str) -> list:
    """Read the stopped gateway's chDB directory from a fresh process."""
    script = (
        "import json, sys, clickhouse_connect\n"
        f"client = clickhouse_connect.get_client(dsn='chdb://{data_dir / 'clickhouse'}')\n"
        "print(json.dumps(client.query(sys.argv[1]).result_rows, default=str))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, sql], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_serve_end_to_end(tmp_path):
    data_dir = tmp_path / "data"
    with Gateway(data_dir) as gateway:
        key = next(word for word in gateway.text().split() if word.startswith("otlpgw_"))
        assert f"OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:{gateway.grpc_port}" in gateway.text()
        assert f"OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20{key}" in gateway.text()

        tracer_provider = TracerProvider(resource=Resource.create({"service.name": "e2e"}))
        tracer_provider.add_span_processor(
            SimpleSpanProcessor(
                OTLPSpanExporter(
                    endpoint=f"127.0.0.1:{gateway.grpc_port}", insecure=True, headers={"authorization": f"Bearer {key}"}
                )
            )
        )
        with tracer_provider.get_tracer("e2e").start_as_current_span("checkout") as span:
            pass
        tracer_provider.shutdown()

        logger_provider = LoggerProvider(resource=Resource.create({"service.name": "e2e"}))
        logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(
                OTLPLogExporter(endpoint=f"http://127.0.0.1:{gateway.http_port}/v1/logs", headers={"x-api-key": key})
            )
        )
        logger_provider.get_logger("e2e").emit(body="hello from e2e", severity_text="INFO")
        logger_provider.shutdown()

        # gunicorn runs the HTTP edge: sockets stuck in their headers or idle hold no thread
        # (the embedded worker has 8), and a chunked body is read whole.
        stuck = [socket.create_connection(("127.0.0.1", gateway.http_port)) for _ in range(40)]
        for number, sock in enumerate(stuck[:20]):
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n"[: 10 + number])
        request = urllib.request.Request(
            f"http://127.0.0.1:{gateway.http_port}/v1/traces",
            method="POST",
            data=iter([otlp_requests.traces_request(2).SerializeToString()]),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/x-protobuf",
                "Transfer-Encoding": "chunked",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.http_port}/healthz", timeout=10) as health:
            assert health.status == 200
        for sock in stuck:
            sock.close()

        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.http_port}/static/admin/css/base.css") as css:
            assert css.status == 200  # the console is styled under gunicorn, DEBUG off
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway.http_port}/readyz") as ready:
            assert json.loads(ready.read())["checks"] == {
                "database": "ok",
                "cache": "ok",
                "clickhouse": "ok",
                "clickhouse_writes": "ok",
            }

        # The command exec'd a fresh interpreter for gunicorn's arbiter (same pid): it holds
        # neither chDB nor Django's apps; its one worker holds chDB.
        arbiter = gateway.process.pid
        assert "gateway.processes" in Path(f"/proc/{arbiter}/cmdline").read_text()
        workers = [int(p) for p in Path(f"/proc/{arbiter}/task/{arbiter}/children").read_text().split()]
        assert len(workers) == 1
        assert "chdb" not in Path(f"/proc/{arbiter}/maps").read_text()
        assert "chdb" in Path(f"/proc/{workers[0]}/maps").read_text()

    rows = _query(
        data_dir, "SELECT TenantId, SpanName, TraceId, ServiceName FROM otel_traces WHERE ServiceName = 'e2e'"
    )
    assert [row[1:] for row in rows] == [["checkout", f"{span.context.trace_id:032x}", "e2e"]]
    assert len(_query(data_dir, "SELECT SpanName FROM otel_traces WHERE ServiceName = 'svc'")) == 2  # the chunked one
    logs = _query(data_dir, "SELECT TenantId, Body FROM otel_logs")
    assert logs == [[rows[0][0], "hello from e2e"]]

    # A second start keeps the data and does not print a key again.
    with Gateway(data_dir) as gateway:
        assert "otlpgw_" not in gateway.text()
        assert "Demo tenant 'demo' exists" in gateway.text()
    assert len(_query(data_dir, "SELECT SpanName FROM otel_traces")) == 3
