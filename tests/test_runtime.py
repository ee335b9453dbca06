"""What a serving process keeps between requests: its start-up heap out of the collector's
way, and each request thread's database connection."""

from __future__ import annotations

import gc
import threading

import pytest
from django.db import connection

from gateway.heap import settle_heap
from vocabulary import Signal


def test_settle_heap_freezes_what_start_up_left():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


@pytest.mark.django_db(transaction=True)
def test_a_request_thread_keeps_its_database_connection(pipeline, tenant):
    """Pipeline.authenticate runs close_old_connections() first on every request; with SQLite's
    CONN_MAX_AGE the thread's connection survives it instead of being reopened each time."""
    seen = []

    def two_requests():
        try:
            for _ in range(2):
                pipeline.authenticate(tenant.key, Signal.TRACES)
                seen.append(connection.connection)  # the object itself: an id could be reused
        finally:
            connection.close()

    thread = threading.Thread(target=two_requests)
    thread.start()
    thread.join()
    assert len(seen) == 2 and seen[0] is seen[1]
