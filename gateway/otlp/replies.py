"""The one place a refusal becomes a reply: its HTTP status and gRPC code, the google.rpc.Status
it carries (with RetryInfo when a retry can succeed), and replies encoded in the request's
encoding (Export*ServiceResponse on success)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, duration_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from gateway.otlp.decode import Encoding
from vocabulary import Reason, Refusal


@dataclass(frozen=True)
class WireStatus:
    http: int
    grpc: grpc.StatusCode


# As the OTLP specification says for each case; RESOURCE_EXHAUSTED carries RetryInfo only where
# a retry can succeed (Reason.retryable).
WIRE_STATUS = {
    Reason.UNAUTHENTICATED: WireStatus(401, grpc.StatusCode.UNAUTHENTICATED),
    Reason.PERMISSION_DENIED: WireStatus(403, grpc.StatusCode.PERMISSION_DENIED),
    Reason.UNDECODABLE: WireStatus(400, grpc.StatusCode.INVALID_ARGUMENT),
    Reason.UNSUPPORTED_MEDIA_TYPE: WireStatus(415, grpc.StatusCode.INVALID_ARGUMENT),
    Reason.UNSUPPORTED_ENCODING: WireStatus(415, grpc.StatusCode.INVALID_ARGUMENT),
    Reason.TOO_LARGE: WireStatus(413, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Reason.THROTTLED: WireStatus(429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Reason.DAILY_QUOTA: WireStatus(429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    # Retrying cannot help (the stored-data cap): no Retry-After, no RetryInfo, not a 429.
    Reason.QUOTA_EXHAUSTED: WireStatus(403, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Reason.STORAGE_UNAVAILABLE: WireStatus(503, grpc.StatusCode.UNAVAILABLE),
    Reason.OVERLOADED: WireStatus(503, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Reason.UNSTORABLE: WireStatus(400, grpc.StatusCode.INVALID_ARGUMENT),
    Reason.INTERNAL: WireStatus(500, grpc.StatusCode.INTERNAL),
}


def http_status(refusal: Refusal) -> int:
    return WIRE_STATUS[refusal.reason].http


def grpc_code(refusal: Refusal) -> grpc.StatusCode:
    return WIRE_STATUS[refusal.reason].grpc


def encode(message: Message, encoding: Encoding) -> bytes:
    if encoding is Encoding.JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()


def error_status(refusal: Refusal) -> status_pb2.Status:
    status = status_pb2.Status(code=grpc_code(refusal).value[0], message=refusal.message)
    if refusal.retry_after_seconds is not None:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=refusal.retry_after_seconds)))
        status.details.append(detail)
    return status
