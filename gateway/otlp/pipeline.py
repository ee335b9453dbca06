"""The one ingestion pipeline both transports call:
authenticate -> decode -> admit -> flatten -> protect -> encode -> store -> reply (flatten to
encode in worker processes when there are any: gateway.otlp.prepare),
with every request's outcome metered in the usage table."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from django.db import DatabaseError, close_old_connections
from google.protobuf.message import Message

from billing.admission import Admission
from billing.metering import usage_batch
from billing.outcomes import Outcome, Signal
from gateway.otlp import decode
from gateway.otlp.errors import IngestError, Reason
from gateway.otlp.prepare import PreparePool, prepare
from storage.batcher import Batcher
from storage.clickhouse import StorageUnavailable
from tenants.authentication import Principal, authenticate
from tenants.encryption import key_ring, sensitive_keys

log = logging.getLogger(__name__)

_PARTIAL_FIELD = {
    Signal.TRACES: "rejected_spans",
    Signal.METRICS: "rejected_data_points",
    Signal.LOGS: "rejected_log_records",
}
_UNAVAILABLE = "storage is temporarily unavailable; nothing from this request was stored, retry later"


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
    def __init__(self, batcher: Batcher, config: PipelineConfig, admission: Admission | None = None,
                 workers: PreparePool | None = None):
        self.batcher = batcher
        self.config = config
        self.admission = admission
        self.workers = workers  # None: flatten, protect and encode in the request's thread

    def stop(self) -> None:
        """Store what is queued and stop the writer and the prepare workers."""
        if self.workers is not None:
            self.workers.stop()
        self.batcher.stop()

    def run(
        self,
        *,
        signal: Signal,
        api_key: str | None,
        read_body: Callable[[], bytes],
        encoding: decode.Encoding = decode.Encoding.PROTOBUF,
        content_encoding: str | None = None,
        client_cert_sha256: str | None = None,
    ) -> ExportResult:
        """One OTLP Export from credentials (an API key and/or the fingerprint of the verified
        TLS client certificate) to reply. `read_body` is called only once the sender is known.
        Raises IngestError (with `.principal` set when known) for a refused request; every
        request, refused or not, is metered."""
        principal, body, items = None, b"", 0
        try:
            principal = self.authenticate(api_key, signal, client_cert_sha256=client_cert_sha256)
            body = read_body()
            if self.admission is not None:
                self.admission.check_size(principal, len(body))
            data = decode.decompress(body, content_encoding, limit=self.config.max_decompressed_bytes)
            request = decode.parse(signal, data, encoding)
            items = decode.item_count(signal, request)
            if self.admission is not None:
                self.admission.admit(principal, signal, items=items, body_bytes=len(body))
            # The protobuf bytes go to a prepare worker as they came; JSON is sent as protobuf.
            protobuf = data if encoding is decode.Encoding.PROTOBUF else None
            return self._store(principal, signal, request, protobuf, items=items, body_bytes=len(body))
        except IngestError as exc:
            exc.principal = principal
            tenant_id = principal.tenant_id if principal else exc.tenant_id
            self.batcher.write_later([usage_batch(tenant_id=tenant_id, signal=signal, outcome=exc.reason.outcome,
                                                  items=items, items_accepted=0, body_bytes=len(body))])
            raise

    def _store(self, principal: Principal, signal: Signal, request: Message, protobuf: bytes | None, *,
               items: int, body_bytes: int) -> ExportResult:
        ring, sensitive = key_ring(principal.tenant_id), sensitive_keys(principal.sensitive_attribute_keys)
        timeout = self.config.store_timeout_seconds
        try:
            # While this request's rows are being prepared, an INSERT about to be written waits
            # for them (up to the linger); a request alone is written at once.
            with self.batcher.expecting() as expectation:
                if self.workers is not None:
                    prepared = self.workers.prepare(
                        signal, request.SerializeToString() if protobuf is None else protobuf,
                        tenant_id=principal.tenant_id, retention_days=principal.retention_days, ring=ring,
                        sensitive=sensitive, timeout=timeout,
                    )
                else:
                    prepared = prepare(signal, request, tenant_id=principal.tenant_id,
                                       retention_days=principal.retention_days, ring=ring, sensitive=sensitive,
                                       encode=self.batcher.encode)
                outcome = Outcome.PARTIALLY_ACCEPTED if prepared.rejected else Outcome.ACCEPTED
                usage = usage_batch(tenant_id=principal.tenant_id, signal=signal, outcome=outcome, items=items,
                                    items_accepted=prepared.accepted, body_bytes=body_bytes)
                # The usage row travels with the data, so accepted usage matches the stored rows.
                self.batcher.write_encoded([*prepared.blocks, *self.batcher.encode([usage])], timeout=timeout,
                                           expectation=expectation)
        except StorageUnavailable as exc:
            log.error("tenant %s %s export not stored: %s", principal.tenant_slug, signal, exc)
            raise IngestError(Reason.STORAGE_UNAVAILABLE, _UNAVAILABLE,
                              retry_after_seconds=self.config.retry_after_seconds) from exc
        response = decode.RESPONSE_TYPES[signal]()
        if prepared.rejected:
            partial = response.partial_success
            setattr(partial, _PARTIAL_FIELD[signal], prepared.rejected)
            partial.error_message = f"{prepared.rejected} {signal} item(s) rejected: {prepared.rejection_message}"
        return ExportResult(principal, signal, outcome, prepared.accepted, prepared.rejected, response)

    def authenticate(self, api_key: str | None, signal: Signal, *,
                     client_cert_sha256: str | None = None) -> Principal:
        """First step of every request, before its body is read or decompressed."""
        # Transport threads (gRPC pool, gunicorn threads) reuse database connections; drop stale ones.
        close_old_connections()
        try:
            return authenticate(api_key, signal, client_cert_sha256=client_cert_sha256)
        except DatabaseError as exc:
            log.error("cannot check an API key, the database is unavailable: %s", exc)
            raise IngestError(Reason.STORAGE_UNAVAILABLE, "the gateway cannot check API keys right now; retry later",
                              retry_after_seconds=self.config.retry_after_seconds) from exc
