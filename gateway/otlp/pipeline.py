"""The one ingestion pipeline both transports call:
authenticate -> decode -> admit -> flatten -> protect -> store -> reply."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import close_old_connections
from google.protobuf.message import Message

from billing.outcomes import Outcome, Signal
from gateway.otlp import decode
from gateway.otlp.errors import IngestError, Reason
from storage.batcher import Batcher
from storage.clickhouse import StorageUnavailable
from storage.flatten import FLATTENERS
from tenants.authentication import Principal, authenticate

log = logging.getLogger(__name__)

_PARTIAL_FIELD = {
    Signal.TRACES: "rejected_spans",
    Signal.METRICS: "rejected_data_points",
    Signal.LOGS: "rejected_log_records",
}


@dataclass(frozen=True)
class ExportResult:
    principal: Principal
    signal: Signal
    outcome: Outcome
    accepted: int
    rejected: int
    response: Message  # the Export*ServiceResponse to send back


@dataclass(frozen=True)
class PipelineConfig:
    max_decompressed_bytes: int
    store_timeout_seconds: float
    retry_after_seconds: int


class Pipeline:
    def __init__(self, batcher: Batcher, config: PipelineConfig):
        self.batcher = batcher
        self.config = config

    def export(
        self,
        *,
        principal: Principal,
        signal: Signal,
        body: bytes,
        encoding: decode.Encoding = decode.Encoding.PROTOBUF,
        content_encoding: str | None = None,
    ) -> ExportResult:
        """Run one OTLP Export for an authenticated sender. Raises IngestError for a request
        refused as a whole."""
        data = decode.decompress(body, content_encoding, limit=self.config.max_decompressed_bytes)
        request = decode.parse(signal, data, encoding)
        # Admission (rate limits, quotas) plugs in here, before anything is flattened or stored.
        flattened = FLATTENERS[signal](
            request, tenant_id=principal.tenant_id, retention_days=principal.retention_days
        )
        # Protection (encryption of the tenant's sensitive attribute values) plugs in here.
        try:
            self.batcher.write(flattened.batches, timeout=self.config.store_timeout_seconds)
        except StorageUnavailable as exc:
            log.error("tenant %s %s export not stored: %s", principal.tenant_slug, signal, exc)
            raise IngestError(
                Reason.STORAGE_UNAVAILABLE,
                "storage is temporarily unavailable; nothing from this request was stored, retry later",
                retry_after_seconds=self.config.retry_after_seconds,
            ) from exc
        response = decode.RESPONSE_TYPES[signal]()
        if flattened.rejected:
            partial = response.partial_success
            setattr(partial, _PARTIAL_FIELD[signal], flattened.rejected)
            partial.error_message = f"{flattened.rejected} {signal} item(s) rejected: {flattened.rejection_message}"
        outcome = Outcome.PARTIALLY_ACCEPTED if flattened.rejected else Outcome.ACCEPTED
        return ExportResult(principal, signal, outcome, flattened.accepted, flattened.rejected, response)

    @staticmethod
    def authenticate(api_key: str | None, signal: Signal) -> Principal:
        """First step of every request, before its body is read or decompressed."""
        # Transport threads (gRPC pool, gunicorn threads) reuse database connections; drop stale ones.
        close_old_connections()
        return authenticate(api_key, signal)
