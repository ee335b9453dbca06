"""Export*ServiceRequest -> column batches for the signal's tables, TenantId on every row."""

from __future__ import annotations

from storage.flatten.common import Flattened, TableBatch
from storage.flatten.logs import flatten_logs
from storage.flatten.metrics import flatten_metrics
from storage.flatten.traces import flatten_traces
from storage.schema import LOGS_TABLE, METRIC_TABLES, TRACES_TABLE
from vocabulary import Signal

FLATTENERS = {
    Signal.TRACES: flatten_traces,
    Signal.METRICS: flatten_metrics,
    Signal.LOGS: flatten_logs,
}
# The tables each signal's rows can go to.
TABLES = {
    Signal.TRACES: (TRACES_TABLE,),
    Signal.METRICS: METRIC_TABLES,
    Signal.LOGS: (LOGS_TABLE,),
}

__all__ = ["FLATTENERS", "TABLES", "Flattened", "TableBatch"]
