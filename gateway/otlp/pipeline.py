"""The one ingestion pipeline both transports call:
authenticate -> decompress -> count -> admit -> prepare (parse, flatten, protect, encode; in
worker processes when there are any: gateway.otlp.prepare) -> store -> reply, with every
request's outcome metered in the usage table. A request is parsed in full once, in prepare;
protobuf is counted before, without a full parse (gateway.otlp.count); OTLP/JSON is counted
where it is parsed and admitted after prepare."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections
from google.protobuf.message import Message

from billing.admission import Admission
from billing.metering import refusal_batch, usage_batch
from gateway.otlp import decode
from gateway.otlp.count import count_items
from gateway.otlp.prepare import PreparePool, prepare
from storage.batcher import Batcher
from storage.clickhouse import StorageError
from storage.flatten.common import DEFAULT_FUTURE_GRACE_SECONDS, TimeWindow
from tenants.authentication import Principal, authenticate, check_origin, presented_prefix
from tenants.encryption import key_ring, sensitive_keys
from vocabulary import Outcome, Reason, Refusal, Signal

log = logging.getLogger(__name__)

_PARTIAL_FIELD = {
    Signal.TRACES: "rejected_spans",
    Signal.METRICS: "rejected_data_points",
    Signal.LOGS: "rejected_log_records",
}
_UNAVAILABLE = "storage is temporarily unavailable; nothing from this request was stored, retry later"
_MAYBE_STORED = (
    "storage did not confirm this request; some or all of it may be stored already: retry later, "
    "nothing is stored twice"
)


@dataclass(frozen=True)
class ExportResult:
    """How one Export ended: stored (`response` is the Export*ServiceResponse to send back) or
    refused whole (`refusal` says why; nothing of it was stored)."""

    signal: Signal
    outcome: Outcome
    principal: Principal | None = None  # None when the sender was not authenticated
    body_bytes: int = 0  # as received (before decompression); 0 when it was not read
    accepted: int = 0
    rejected: int = 0
    response: Message | None = None
    refusal: Refusal | None = None

    @classmethod
    def refused(
        cls, signal: Signal, refusal: Refusal, *, principal: Principal | None = None, body_bytes: int = 0
    ) -> ExportResult:
        return cls(signal, refusal.reason.outcome, principal, body_bytes, refusal=refusal)


class _Meter:
    """A request's usage, written exactly once when the request ends: by its stored rows, which
    carry it into the usage table (`recorded_with_the_data`; storage.requests), or as a record
    of its own (`record`) when it stores no row: refused, or with nothing to store."""

    def __init__(self, batcher: Batcher, signal: Signal):
        self.batcher, self.signal = batcher, signal
        self.principal: Principal | None = None
        self.key_prefix = ""  # of the key presented, known or not (never the key itself)
        self.items = self.body_bytes = 0
        self.done = False

    def recorded_with_the_data(self) -> None:
        self.done = True

    def refused(self, refusal: Refusal) -> ExportResult:
        self.record(refusal.reason.outcome, tenant_id=refusal.tenant_id, refusal=refusal)
        return ExportResult.refused(self.signal, refusal, principal=self.principal, body_bytes=self.body_bytes)

    def record(self, outcome: Outcome, *, tenant_id: str | None = None, refusal: Refusal | None = None) -> None:
        if self.done:
            return
        self.done = True
        tenant_id = self.principal.tenant_id if self.principal else tenant_id
        batches = [
            usage_batch(
                tenant_id=tenant_id,
                signal=self.signal,
                outcome=outcome,
                items=self.items,
                items_accepted=0,
                body_bytes=self.body_bytes,
            )
        ]
        if refusal is not None:
            key_prefix = self.principal.key_prefix if self.principal else self.key_prefix
            batches.append(
                refusal_batch(
                    tenant_id=tenant_id,
                    signal=self.signal,
                    refusal=refusal,
                    key_prefix=key_prefix,
                    items=self.items,
                    body_bytes=self.body_bytes,
                )
            )
        self.batcher.write_later(batches)


def _is_cache_outage(exc: Exception) -> bool:
    """A connection error of the shared cache (Redis) that holds rate limits and quotas."""
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:
        return False
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError))


@dataclass(frozen=True)
class PipelineConfig:
    max_decompressed_bytes: int
    store_timeout_seconds: float
    retry_after_seconds: int
    future_grace_seconds: int = DEFAULT_FUTURE_GRACE_SECONDS


class Pipeline:
    def __init__(
        self,
        batcher: Batcher,
        config: PipelineConfig,
        admission: Admission | None = None,
        workers: PreparePool | None = None,
    ):
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
        encoding: decode.Encoding | None = decode.Encoding.PROTOBUF,
        content_type: str | None = None,
        content_encoding: str | None = None,
        client_cert_sha256: str | None = None,
        origin: str | None = None,
        gateway_origins: tuple[str, ...] | None = None,
    ) -> ExportResult:
        """One OTLP Export from credentials (an API key and/or the fingerprint of the verified
        TLS client certificate) to reply. `read_body` is called only once the sender is known.
        `encoding` None: chosen from `content_type` once the sender is known (so an unsupported
        one is metered to its tenant). Whatever goes wrong ends in a refused ExportResult, never
        an exception; every request, refused or not, is metered exactly once, when it ends.
        `origin`: a browser's Origin header, which must be one of the tenant's allowed origins
        and of `gateway_origins` (a browser may have cached a preflight from before its origin
        was removed there)."""
        meter = _Meter(self.batcher, signal)
        meter.key_prefix = presented_prefix(api_key)
        try:
            principal = self.authenticate(api_key, signal, client_cert_sha256=client_cert_sha256)
            meter.principal = principal
            if origin is not None:
                check_origin(principal, origin, gateway_allows=gateway_origins)
            if encoding is None:
                encoding = decode.encoding_for(content_type)
            body = read_body()
            meter.body_bytes = len(body)
            if self.admission is not None:
                self.admission.check_size(principal, len(body))
                self.admission.admit_bytes(principal, signal, len(body))
            data = decode.decompress(body, content_encoding, limit=self.config.max_decompressed_bytes)
            if encoding is decode.Encoding.PROTOBUF:
                # Counted without a full parse (the one full parse is in prepare), so that a
                # request over its limits costs no more than this.
                meter.items = count_items(signal, data)
                self._admit(principal, signal, items=meter.items, body_bytes=len(body))
            result = self._store(principal, signal, data, encoding, meter)
            meter.recorded_with_the_data()
            return result
        except Refusal as exc:
            return meter.refused(exc)
        except Exception as exc:
            return meter.refused(self._unexpected(exc, meter, signal))
        finally:
            meter.record(Outcome.INTERNAL_ERROR)  # only if nothing above did (an interrupt, say)

    def meter_refusal(self, signal: Signal, refusal: Refusal) -> None:
        """Meter a request refused before it reached `run` (the gRPC server's admission)."""
        _Meter(self.batcher, signal).refused(refusal)

    def _unexpected(self, exc: Exception, meter: _Meter, signal: Signal) -> Refusal:
        """The reply for a failure that is not a refusal: a database or cache that cannot be
        reached can succeed later; anything else is a fault of ours, logged with a reference."""
        who = meter.principal.tenant_slug if meter.principal else "an unauthenticated sender"
        if isinstance(exc, (OperationalError, InterfaceError)) or _is_cache_outage(exc):
            what = "database" if isinstance(exc, DatabaseError) else "rate-limit store"
            log.error("%s export from %s refused: the %s is unreachable: %s", signal, who, what, exc)
            return Refusal(
                Reason.STORAGE_UNAVAILABLE,
                f"the gateway cannot reach its {what} right now; nothing from this request was stored, retry later",
                retry_after_seconds=self.config.retry_after_seconds,
            )
        reference = uuid.uuid4().hex[:12]
        log.exception("%s export from %s failed with an internal error (reference %s)", signal, who, reference)
        return Refusal(
            Reason.INTERNAL,
            f"internal error (reference {reference}); nothing from this request "
            "was stored; the gateway's operators have the details",
        )

    def _admit(self, principal: Principal, signal: Signal, *, items: int, body_bytes: int) -> None:
        if self.admission is not None:
            self.admission.admit(principal, signal, items=items, body_bytes=body_bytes)

    def _store(
        self, principal: Principal, signal: Signal, data: bytes, encoding: decode.Encoding, meter: _Meter
    ) -> ExportResult:
        """Prepare the rows (parse, flatten, protect, encode) and store them with the request's
        usage row. OTLP/JSON is counted where it is parsed, so it is admitted here, once its
        rows are prepared (protobuf was admitted before)."""
        body_bytes = meter.body_bytes
        ring, sensitive = key_ring(principal.tenant_id), sensitive_keys(principal.sensitive_attribute_keys)
        timeout = self.config.store_timeout_seconds
        window = TimeWindow.now(
            retention_days=principal.retention_days, future_grace_seconds=self.config.future_grace_seconds
        )
        try:
            # While this request's rows are being prepared, an INSERT about to be written waits
            # for them (up to the linger); a request alone is written at once.
            with self.batcher.expecting() as expectation:
                if self.workers is not None:
                    prepared = self.workers.prepare(
                        signal,
                        data,
                        encoding,
                        tenant_id=principal.tenant_id,
                        retention_days=principal.retention_days,
                        ring=ring,
                        sensitive=sensitive,
                        timeout=timeout,
                        body_bytes=body_bytes,
                        window=window,
                        isolation=principal.isolation.value,
                    )
                else:
                    prepared = prepare(
                        signal,
                        data,
                        encoding,
                        tenant_id=principal.tenant_id,
                        retention_days=principal.retention_days,
                        ring=ring,
                        sensitive=sensitive,
                        encode=self.batcher.encode,
                        body_bytes=body_bytes,
                        window=window,
                        isolation=principal.isolation.value,
                    )
                if encoding is not decode.Encoding.PROTOBUF:
                    meter.items = prepared.items
                    self._admit(principal, signal, items=prepared.items, body_bytes=body_bytes)
                outcome = Outcome.PARTIALLY_ACCEPTED if prepared.rejected else Outcome.ACCEPTED
                if prepared.blocks:
                    # The rows carry the request's usage: the usage views count what is stored.
                    self.batcher.write_encoded(prepared.blocks, timeout=timeout, expectation=expectation)
                else:
                    # Nothing to store (an empty request, or every item rejected): its usage
                    # record is all there is to write.
                    meter.items = prepared.items
                    meter.record(outcome)
        except StorageError as exc:
            log.error("tenant %s %s export not stored: %s", principal.tenant_slug, signal, exc)
            if not exc.retryable:
                raise Refusal(
                    Reason.UNSTORABLE, f"the rows of this request cannot be stored, and would not be on a retry: {exc}"
                ) from exc
            raise Refusal(
                Reason.STORAGE_UNAVAILABLE,
                _MAYBE_STORED if exc.partial else _UNAVAILABLE,
                retry_after_seconds=self.config.retry_after_seconds,
            ) from exc
        response = decode.RESPONSE_TYPES[signal]()
        if prepared.rejected:
            partial = response.partial_success
            setattr(partial, _PARTIAL_FIELD[signal], prepared.rejected)
            partial.error_message = f"{prepared.rejected} {signal} item(s) rejected: {prepared.rejection_message}"
        return ExportResult(signal, outcome, principal, body_bytes, prepared.accepted, prepared.rejected, response)

    def authenticate(self, api_key: str | None, signal: Signal, *, client_cert_sha256: str | None = None) -> Principal:
        """First step of every request, before its body is read or decompressed."""
        # Transport threads (gRPC pool, gunicorn threads) reuse database connections; drop stale ones.
        close_old_connections()
        try:
            return authenticate(api_key, signal, client_cert_sha256=client_cert_sha256)
        except DatabaseError as exc:
            log.error("cannot check an API key, the database is unavailable: %s", exc)
            raise Refusal(
                Reason.STORAGE_UNAVAILABLE,
                "the gateway cannot check API keys right now; retry later",
                retry_after_seconds=self.config.retry_after_seconds,
            ) from exc
