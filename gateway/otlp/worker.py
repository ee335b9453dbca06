"""Start-up of a prepare worker process (gateway.otlp.prepare). This module imports nothing of
Django or of the project: a new process loads it before Django is set up."""

from __future__ import annotations

import signal


def init_worker() -> None:
    # The owner decides when workers stop (its shutdown, or the pipe closing when it dies); an
    # interrupt from the terminal goes to the whole process group and would only add tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import django

    django.setup()  # the flatteners and KeyRing import Django models; no database is opened
    from gateway.heap import settle_heap

    settle_heap()
