"""Per-tenant fair queuing in front of a limited resource (the prepare workers).

Requests wait for a turn; when more wait than there are turns, the next turn goes to the
tenant that has waited longest since its last turn (round robin over the tenants waiting,
first come first served within one). A tenant that sends ten times its share then waits
behind itself, while another tenant's request waits for at most one turn of each tenant
ahead of it, not for the whole backlog.

While more than one tenant is active (asked for a turn within `window` seconds), a tenant
holds at most its share of the slots, even when more are free: all but one for each other
active tenant, and at least one (two slots and two tenants: one each; eight slots and two
tenants: seven). A request of another tenant then finds a worker free instead of waiting for
a job of the busy tenant's in progress, and on a machine whose cores the workers would fill
that worker's CPU stays for the writer every request waits for (docs/BENCHMARKS.md, "A noisy
neighbour"). A tenant alone has every slot.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator

# How often a waiting request looks again whether its tenant's share has grown (another
# tenant stopped being active).
_RECHECK_SECONDS = 0.05


class NoTurn(Exception):
    """No turn came within the timeout."""


class FairTurns:
    """At most `slots` holders at once, taken in turn across tenants, each tenant within its
    share while others are active."""

    def __init__(self, slots: int, *, window: float = 1.0, clock: Callable[[], float] = time.monotonic):
        if slots < 1:
            raise ValueError("FairTurns needs at least one slot")
        self.slots = slots
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._free = slots
        self._waiting: OrderedDict[str, deque[threading.Event]] = OrderedDict()
        self._holding: dict[str, int] = {}
        self._seen: dict[str, float] = {}  # tenant -> when it last asked for a turn

    @property
    def waiting(self) -> int:
        with self._lock:
            return sum(len(queue) for queue in self._waiting.values())

    def share(self, tenant: str) -> int:
        """The slots `tenant` may hold now."""
        with self._lock:
            self._forget_inactive(self._clock())
            return self._share(tenant)

    def _forget_inactive(self, now: float) -> None:
        for tenant, at in list(self._seen.items()):
            if now - at > self.window and not self._holding.get(tenant) and tenant not in self._waiting:
                del self._seen[tenant]

    def _share(self, tenant: str) -> int:
        others = len(self._seen) - (tenant in self._seen)
        return max(1, self.slots - others)

    @contextlib.contextmanager
    def turn(self, tenant: str, *, timeout: float) -> Iterator[None]:
        """Hold one of the slots for the block; raises NoTurn after `timeout` seconds without one."""
        deadline = time.monotonic() + timeout
        event = threading.Event()
        with self._lock:
            self._seen[tenant] = self._clock()
            self._waiting.setdefault(tenant, deque()).append(event)
            self._dispatch()
        while not event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not event.wait(min(remaining, _RECHECK_SECONDS)):
                with self._lock:
                    if event.is_set():  # given one meanwhile
                        break
                    if time.monotonic() >= deadline:  # stop waiting
                        queue = self._waiting[tenant]
                        queue.remove(event)
                        if not queue:
                            del self._waiting[tenant]
                        raise NoTurn(f"no turn within {timeout:g}s")
                    self._dispatch()  # the tenant's share may have grown
        try:
            yield
        finally:
            with self._lock:
                self._holding[tenant] -= 1
                if not self._holding[tenant]:
                    del self._holding[tenant]
                self._free += 1
                self._dispatch()

    def _dispatch(self) -> None:
        """Give the free slots to the tenants waiting, in turn, each within its share (lock held)."""
        if not self._free or not self._waiting:
            return
        self._forget_inactive(self._clock())
        given = True
        while self._free and self._waiting and given:
            given = False
            for tenant in list(self._waiting):
                if not self._free:
                    return
                if self._holding.get(tenant, 0) >= self._share(tenant):
                    continue
                queue = self._waiting[tenant]
                event = queue.popleft()
                if queue:
                    self._waiting.move_to_end(tenant)  # its next request waits for the others' turns
                else:
                    del self._waiting[tenant]
                self._holding[tenant] = self._holding.get(tenant, 0) + 1
                self._free -= 1
                event.set()
                given = True
