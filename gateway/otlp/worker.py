"""Start-up of a prepare worker process (gateway.otlp.prepare). This module imports nothing of
Django or of the project: a new process loads it first. A worker never sets Django up either:
what it runs (decode, storage.flatten, tenants.protect and tenants.keyring, the Native encoder)
needs neither models nor settings, and leaving Django out keeps each worker ~30 MB smaller."""

from __future__ import annotations

import signal


def init_worker() -> None:
    # The owner decides when workers stop (its shutdown, or the pipe closing when it dies); an
    # interrupt from the terminal goes to the whole process group and would only add tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from gateway.heap import settle_heap

    settle_heap()
