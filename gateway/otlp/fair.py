"""Per-tenant fair queuing in front of a limited resource (the prepare workers).

Requests wait for a turn; when more wait than there are turns, the next turn goes to the
tenant that has waited longest since its last turn (round robin over the tenants waiting,
first come first served within one). A tenant that sends ten times its share then waits
behind itself, while another tenant's request waits for at most one turn of each tenant
ahead of it, not for the whole backlog.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import Iterator


class NoTurn(Exception):
    """No turn came within the timeout."""


class FairTurns:
    """At most `slots` holders at once, taken in turn across tenants."""

    def __init__(self, slots: int):
        if slots < 1:
            raise ValueError("FairTurns needs at least one slot")
        self.slots = slots
        self._lock = threading.Lock()
        self._free = slots
        self._waiting: OrderedDict[str, deque[threading.Event]] = OrderedDict()

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(queue) for queue in self._waiting.values())

    @contextlib.contextmanager
    def turn(self, tenant: str, *, timeout: float) -> Iterator[None]:
        """Hold one of the slots for the block; raises NoTurn after `timeout` seconds without one."""
        event = None
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
            else:
                event = threading.Event()
                self._waiting.setdefault(tenant, deque()).append(event)
        if event is not None and not event.wait(timeout):
            with self._lock:
                if not event.is_set():  # not given one meanwhile: stop waiting
                    queue = self._waiting[tenant]
                    queue.remove(event)
                    if not queue:
                        del self._waiting[tenant]
                    raise NoTurn(f"no turn within {timeout:g}s")
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            if not self._waiting:
                self._free += 1
                return
            tenant, queue = next(iter(self._waiting.items()))
            event = queue.popleft()
            if queue:
                self._waiting.move_to_end(tenant)  # its next request waits for the others' turns
            else:
                del self._waiting[tenant]
            event.set()  # the slot passes to it
