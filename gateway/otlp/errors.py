"""Every way an OTLP request can fail, and the one place that maps it to HTTP and gRPC replies."""
from __future__ import annotations

import enum
from dataclasses import dataclass

import grpc

from billing.outcomes import Outcome


@dataclass(frozen=True)
class _Reply:
    http_status: int
    grpc_code: grpc.StatusCode
    outcome: Outcome
    retryable: bool  # tell the exporter when to retry (Retry-After / google.rpc.RetryInfo)


class Reason(enum.Enum):
    UNAUTHENTICATED = _Reply(401, grpc.StatusCode.UNAUTHENTICATED, Outcome.UNAUTHORIZED, False)
    PERMISSION_DENIED = _Reply(403, grpc.StatusCode.PERMISSION_DENIED, Outcome.UNAUTHORIZED, False)
    UNDECODABLE = _Reply(400, grpc.StatusCode.INVALID_ARGUMENT, Outcome.INVALID, False)
    UNSUPPORTED_MEDIA_TYPE = _Reply(415, grpc.StatusCode.INVALID_ARGUMENT, Outcome.INVALID, False)
    UNSUPPORTED_ENCODING = _Reply(415, grpc.StatusCode.INVALID_ARGUMENT, Outcome.INVALID, False)
    TOO_LARGE = _Reply(413, grpc.StatusCode.RESOURCE_EXHAUSTED, Outcome.INVALID, False)
    THROTTLED = _Reply(429, grpc.StatusCode.RESOURCE_EXHAUSTED, Outcome.THROTTLED, True)
    DAILY_QUOTA = _Reply(429, grpc.StatusCode.RESOURCE_EXHAUSTED, Outcome.OVER_QUOTA, True)
    # Retrying cannot help (the stored-data cap): no Retry-After, no RetryInfo, not a 429.
    QUOTA_EXHAUSTED = _Reply(403, grpc.StatusCode.RESOURCE_EXHAUSTED, Outcome.OVER_QUOTA, False)
    # Only what can succeed when retried says so: storage unreachable, a timeout, shutting down.
    STORAGE_UNAVAILABLE = _Reply(503, grpc.StatusCode.UNAVAILABLE, Outcome.STORAGE_UNAVAILABLE, True)
    # Too many calls in flight at once (the gRPC server's cap): retry shortly.
    OVERLOADED = _Reply(503, grpc.StatusCode.RESOURCE_EXHAUSTED, Outcome.THROTTLED, True)
    # Rows storage refuses for what they are (retrying the same request fails the same way).
    UNSTORABLE = _Reply(400, grpc.StatusCode.INVALID_ARGUMENT, Outcome.INVALID, False)
    # A fault of the gateway's own (logged with the reference in the message).
    INTERNAL = _Reply(500, grpc.StatusCode.INTERNAL, Outcome.INTERNAL_ERROR, False)

    @property
    def http_status(self) -> int:
        return self.value.http_status

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return self.value.grpc_code

    @property
    def outcome(self) -> Outcome:
        return self.value.outcome


class IngestError(Exception):
    """A request the gateway refuses as a whole. `message` is shown to the sender; `tenant_id`
    and `principal` say who sent it, once that is known (for metering and metrics)."""

    def __init__(self, reason: Reason, message: str, *, retry_after_seconds: int | None = None,
                 tenant_id: str | None = None):
        # A message quotes what the sender sent; a lone surrogate in it could not be encoded in
        # the reply.
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_seconds = retry_after_seconds if reason.value.retryable else None
        self.tenant_id = tenant_id
        self.principal = None  # tenants.authentication.Principal, set by the pipeline
