"""Export*ServiceRequest -> column batches for the signal's tables, TenantId on every row."""
from __future__ import annotations

from billing.outcomes import Signal
from storage.flatten.common import Flattened, TableBatch
from storage.flatten.logs import flatten_logs
from storage.flatten.metrics import flatten_metrics
from storage.flatten.traces import flatten_traces

FLATTENERS = {
    Signal.TRACES: flatten_traces,
    Signal.METRICS: flatten_metrics,
    Signal.LOGS: flatten_logs,
}

__all__ = ["FLATTENERS", "Flattened", "TableBatch"]
