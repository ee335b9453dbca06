"""Billing's access to this process's ClickHouse store."""
from __future__ import annotations

from billing.invoicing import VolumeFn
from billing.usage import accepted_volume


def current_store():
    from gateway.otlp import runtime

    return runtime.get_pipeline().batcher.store


def accepted_volume_fn() -> VolumeFn:
    store = current_store()
    return lambda tenant_id, since, until: accepted_volume(store, tenant_id, since=since, until=until)
