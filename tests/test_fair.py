"""Per-tenant fair turns in front of the prepare workers (gateway.otlp.fair)."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.otlp.fair import FairTurns, NoTurn


def _wait_until(condition) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_a_tenant_with_a_backlog_takes_turns_with_the_others():
    turns, order, threads = FairTurns(1), [], []
    holding = turns.turn("noisy", timeout=1)
    holding.__enter__()
    arrivals = [("noisy", "n1"), ("noisy", "n2"), ("noisy", "n3"), ("quiet", "q1"), ("other", "o1"), ("noisy", "n4")]
    for number, (tenant, name) in enumerate(arrivals, start=1):

        def take(tenant=tenant, name=name):
            with turns.turn(tenant, timeout=10):
                order.append(name)

        thread = threading.Thread(target=take)
        thread.start()
        threads.append(thread)
        _wait_until(lambda number=number: turns.waiting == number)  # they queue in this order
    holding.__exit__(None, None, None)
    for thread in threads:
        thread.join()
    # First come, first served would be n1 n2 n3 q1 o1 n4: the quiet tenants after the backlog.
    assert order == ["n1", "q1", "o1", "n2", "n3", "n4"]


def test_no_more_than_the_slots_hold_a_turn_at_once():
    turns, lock, inside, most = FairTurns(2), threading.Lock(), [0], [0]

    def take(tenant: str):
        with turns.turn(tenant, timeout=10):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.002)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=take, args=(f"t{i % 3}",)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2 and turns.waiting == 0


def test_a_wait_that_times_out_gives_up_its_place():
    turns = FairTurns(1)
    with turns.turn("a", timeout=1):
        with pytest.raises(NoTurn):
            with turns.turn("b", timeout=0.05):
                pass
        assert turns.waiting == 0
    with turns.turn("b", timeout=0.05):  # the slot came back when "a" let go
        pass
