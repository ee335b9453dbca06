"""OTLP replies as bytes: Export*ServiceResponse on success, google.rpc.Status on error,
in the request's encoding."""
from __future__ import annotations

from google.protobuf import any_pb2, duration_pb2, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from gateway.otlp.decode import Encoding
from gateway.otlp.errors import IngestError


def encode(message: Message, encoding: Encoding) -> bytes:
    if encoding is Encoding.JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()


def error_status(error: IngestError) -> status_pb2.Status:
    status = status_pb2.Status(code=error.reason.grpc_code.value[0], message=error.message)
    if error.retry_after_seconds is not None:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=error.retry_after_seconds)))
        status.details.append(detail)
    return status
