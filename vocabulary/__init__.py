"""The words every layer shares: the signals, how a request ended (`Outcome`), and why one was
refused whole (`Reason`, `Refusal`). It imports nothing of the project, so every layer may
import it; what a reason looks like on the wire is the transports' business (gateway.otlp.replies).
"""

from __future__ import annotations

import enum


class Signal(enum.StrEnum):
    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"


class Isolation(enum.StrEnum):
    """How a tenant's rows are kept apart from other tenants' in storage."""

    DEDICATED = "dedicated"  # partitions of its own: dropped whole when it is deleted
    SHARED = "shared"  # partitions shared with other tenants, kept apart by the sort key and the reader

    @property
    def label(self) -> str:
        return {"dedicated": "Dedicated partitions", "shared": "Shared partitions"}[self.value]


class Outcome(enum.StrEnum):
    """How a request ended. Every request ends in exactly one."""

    ACCEPTED = "accepted"
    PARTIALLY_ACCEPTED = "partially_accepted"
    THROTTLED = "throttled"
    OVER_QUOTA = "over_quota"
    INVALID = "invalid"
    UNAUTHORIZED = "unauthorized"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    INTERNAL_ERROR = "internal_error"  # a fault of the gateway's own; nothing was stored


class Reason(enum.StrEnum):
    """Why a request was refused whole. It decides the request's outcome and whether retrying
    the same request can succeed (only then does the reply carry a retry hint)."""

    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    UNDECODABLE = "undecodable"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    UNSUPPORTED_ENCODING = "unsupported_encoding"
    TOO_LARGE = "too_large"
    THROTTLED = "throttled"
    DAILY_QUOTA = "daily_quota"
    QUOTA_EXHAUSTED = "quota_exhausted"  # the stored-data cap: waiting does not help
    STORAGE_UNAVAILABLE = "storage_unavailable"  # unreachable, timed out, shutting down
    OVERLOADED = "overloaded"  # too many calls in flight at once
    UNSTORABLE = "unstorable"  # rows storage refuses for what they are
    INTERNAL = "internal"  # a fault of the gateway's own, logged with a reference

    @property
    def outcome(self) -> Outcome:
        return _OUTCOMES[self]

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE


_OUTCOMES = {
    Reason.UNAUTHENTICATED: Outcome.UNAUTHORIZED,
    Reason.PERMISSION_DENIED: Outcome.UNAUTHORIZED,
    Reason.UNDECODABLE: Outcome.INVALID,
    Reason.UNSUPPORTED_MEDIA_TYPE: Outcome.INVALID,
    Reason.UNSUPPORTED_ENCODING: Outcome.INVALID,
    Reason.TOO_LARGE: Outcome.INVALID,
    Reason.THROTTLED: Outcome.THROTTLED,
    Reason.DAILY_QUOTA: Outcome.OVER_QUOTA,
    Reason.QUOTA_EXHAUSTED: Outcome.OVER_QUOTA,
    Reason.STORAGE_UNAVAILABLE: Outcome.STORAGE_UNAVAILABLE,
    Reason.OVERLOADED: Outcome.THROTTLED,
    Reason.UNSTORABLE: Outcome.INVALID,
    Reason.INTERNAL: Outcome.INTERNAL_ERROR,
}
_RETRYABLE = frozenset({Reason.THROTTLED, Reason.DAILY_QUOTA, Reason.STORAGE_UNAVAILABLE, Reason.OVERLOADED})


class Refusal(Exception):
    """A request refused whole. Each layer raises its own subclass (tenants: CredentialsRefused,
    billing: LimitExceeded; the gateway's decode and admission steps raise this class itself);
    the transports turn any of them into a reply in one place."""

    reason: Reason
    message: str  # shown to the sender: what went wrong and what to do about it
    retry_after_seconds: int | None  # set only for a reason that a retry can get past
    tenant_id: str | None  # whose request it was, where that is known without a principal

    def __init__(
        self, reason: Reason, message: str, *, retry_after_seconds: int | None = None, tenant_id: str | None = None
    ):
        # A message quotes what the sender sent; a lone surrogate in it could not be encoded in
        # the reply.
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_seconds = retry_after_seconds if reason.retryable else None
        self.tenant_id = tenant_id
