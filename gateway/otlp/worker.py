"""Start-up of a prepare worker process (gateway.otlp.prepare). This module imports nothing of
Django or of the project: a new process loads it first. A worker never sets Django up either:
what it runs (decode, storage.flatten, tenants.protect and tenants.keyring, the Native encoder)
needs neither models nor settings, and leaving Django out keeps each worker ~30 MB smaller."""

from __future__ import annotations

import os
import signal
import threading
import time

# How often a worker looks whether the process that started it is still there.
PARENT_CHECK_SECONDS = 1.0


def init_worker() -> None:
    # The owner decides when workers stop (its shutdown, or its death); an interrupt from the
    # terminal goes to the whole process group and would only add tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with(os.getppid())
    from gateway.heap import settle_heap

    settle_heap()


def _exit_with(parent: int) -> None:
    """Exit once `parent` is gone (kill -9, a crash). The pool's task pipe does not tell: every
    worker holds its writing end too, so a worker whose owner died would wait on it for ever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
