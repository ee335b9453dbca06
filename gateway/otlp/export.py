"""What both transports do around the pipeline, written once: time the request, take the API
key from the headers, run the pipeline (or refuse when it cannot be built), count the request
in the metrics. A transport only reads the request and writes the reply this returns."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.conf import settings

from gateway import metrics
from gateway.metrics import Transport
from gateway.otlp.pipeline import ExportResult, Pipeline
from storage.clickhouse import StorageUnavailable
from tenants.authentication import credentials_from_headers
from vocabulary import Reason, Refusal, Signal

log = logging.getLogger(__name__)


def storage_unavailable() -> Refusal:
    return Refusal(
        Reason.STORAGE_UNAVAILABLE,
        "storage is temporarily unavailable; nothing from this request was stored, retry later",
        retry_after_seconds=settings.GATEWAY_RETRY_AFTER_SECONDS,
    )


def internal_error() -> Refusal:
    return Refusal(Reason.INTERNAL, "internal error; the gateway's operators have the details")


def export(
    transport: Transport,
    signal: Signal,
    *,
    get_pipeline: Callable[[], Pipeline],
    authorization: str | None,
    x_api_key: str | None,
    read_body: Callable[[], bytes],
    **options,
) -> ExportResult:
    """One Export over `transport`; `options` go to Pipeline.run."""
    started = time.perf_counter()
    api_key = credentials_from_headers(authorization, x_api_key)
    try:
        pipeline = get_pipeline()
    except StorageUnavailable as exc:
        log.error("storage is not available: %s", exc)
        result = ExportResult.refused(signal, storage_unavailable())
    else:
        try:
            result = pipeline.run(signal=signal, api_key=api_key, read_body=read_body, **options)
        except Exception:  # Pipeline.run ends every failure in a result; this is the net under it
            log.exception("OTLP %s %s export failed outside the pipeline", transport, signal)
            result = ExportResult.refused(signal, internal_error())
    metrics.record_export(transport, result, started=started)
    return result


def refused_on_arrival(
    transport: Transport, signal: Signal, refusal: Refusal, *, get_pipeline: Callable[[], Pipeline]
) -> None:
    """Count and meter a request refused before it reached the pipeline (the gRPC server's
    admission: no key, or too many calls in flight)."""
    metrics.record_export(transport, ExportResult.refused(signal, refusal), started=time.perf_counter())
    try:
        get_pipeline().meter_refusal(signal, refusal)
    except StorageUnavailable:
        pass  # no storage yet to meter into; the refusal is still counted in the metrics
