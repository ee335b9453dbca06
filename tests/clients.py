"""Minimal raw OTLP clients for tests that need full control of bytes and headers."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from urllib.parse import urlparse

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2

SERVICE = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def status_message(self) -> status_pb2.Status:
        """The google.rpc.Status of an error reply, in the reply's content type."""
        status = status_pb2.Status()
        if self.headers.get("content-type", "").startswith("application/json"):
            json_format.Parse(self.body, status)
        else:
            status.ParseFromString(self.body)
        return status


def http_post(
    base_url: str,
    signal: str,
    body: bytes,
    *,
    key: str | None,
    content_type: str = "application/x-protobuf",
    headers: dict | None = None,
) -> HttpReply:
    parsed = urlparse(base_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    all_headers = {"Content-Type": content_type, **(headers or {})}
    if key is not None:
        all_headers["Authorization"] = f"Bearer {key}"
    connection.request("POST", f"/v1/{signal}", body=body, headers=all_headers)
    response = connection.getresponse()
    reply = HttpReply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    connection.close()
    return reply


def grpc_export(
    channel: grpc.Channel,
    signal: str,
    body: bytes,
    *,
    key: str | None,
    compression: grpc.Compression | None = None,
    metadata: list | None = None,
) -> bytes:
    call = channel.unary_unary(SERVICE[signal], request_serializer=None, response_deserializer=None)
    md = list(metadata or [])
    if key is not None:
        md.append(("authorization", f"Bearer {key}"))
    return call(body, metadata=md, compression=compression, timeout=30)


def retry_info(error: grpc.RpcError) -> error_details_pb2.RetryInfo | None:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info
    return None


def json_body(document) -> bytes:
    return json.dumps(document).encode()


def post_numbered_traces(port: int, key: str, number: int, spans: int) -> int | None:
    """One OTLP/HTTP export to 127.0.0.1:`port` whose `spans` spans carry `number` in their
    trace id (so each number is a request of its own); its status, None if unanswered."""
    from tests import otlp_requests

    request = otlp_requests.traces_request(spans, trace_id=number.to_bytes(16, "big"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST",
            "/v1/traces",
            body=request.SerializeToString(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"},
        )
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
