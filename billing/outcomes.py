"""The shared vocabulary of signals and request outcomes (limits, replies, metering, billing)."""
from __future__ import annotations

import enum


class Signal(enum.StrEnum):
    TRACES = "traces"
    METRICS = "metrics"
    LOGS = "logs"


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
