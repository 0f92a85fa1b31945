"""Rate limits for the hot path: a worker spends a caller's budget from a lease of it.

flask-limiter asks Redis twice on every request (the hit, then the window for the
headers), which costs the check more than all the rest of its work (bench/README.md).
Here a worker takes a lease of several units of a budget in one hit, with ``limits``'
own ``cost`` argument on flask-limiter's own counters and keys, and spends the units
in-process until they run out or Redis's window rolls over. The API's routes, still
limited by flask-limiter, and the checks spend one budget.

What holds: a limit never admits more than it allows, across workers and instances,
because a unit is counted in Redis when it is leased. What it costs: a unit leased but
not spent before the window rolls over is lost, so a caller spread over many workers may
be refused a little before its limit. Leases shrink as the budget runs down (a sixteenth
of what remains), so a budget near its end, or too small to share, is spent one unit per
round trip, exactly. RateLimit-Remaining counts what Redis has left plus this worker's lease.

When Redis does not answer, budgets are counted in this process's memory, one unit at a
time, and Redis is asked again every few seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from limits import RateLimitItem
from limits.storage import MemoryStorage, Storage
from limits.strategies import SlidingWindowCounterRateLimiter
from redis import RedisError

log = logging.getLogger(__name__)

#: A lease takes at most this fraction of what remains of a budget, so that several
#: workers can hold one and the units they leave unspent stay few.
LEASE_SHARE = 16
#: Units in one lease, at most.
LEASE_MAX = 100
#: Leases a worker keeps (the most recently used): a bound on memory with many callers.
LEASES_KEPT = 10_000
#: Seconds between attempts to reach Redis again after it failed.
RETRY_SECONDS = 2.0


#: flask-limiter's words, so that one log search finds both.
FALLING_BACK = "Rate limit storage unreachable - falling back to in-memory storage"


@dataclass(frozen=True, slots=True)
class Window:
    """The state of one budget as a request leaves it: what the RateLimit headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until a spent unit returns

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset))
        return headers


@dataclass(slots=True)
class _Lease:
    units: int  # left to spend here
    remaining: int  # what Redis had left once this lease was taken
    frees_at: float  # when Redis frees its next unit (time.time())
    ends_at: float  # when Redis's current window rolls over and the lease lapses

    def window(self, limit: int, now: float) -> Window:
        reset = math.ceil(max(0.0, self.frees_at - now))
        return Window(True, limit, self.remaining + self.units, reset)


class LeasedLimiter:
    """Sliding-window-counter limits on ``storage`` (Redis, or memory without Redis),
    spent from this worker's leases."""

    def __init__(self, storage: Storage) -> None:
        self._shared = SlidingWindowCounterRateLimiter(storage)
        self._memory = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._down = False
        self._retry_at = 0.0
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    def spend(self, item: RateLimitItem, *identifiers: str) -> Window:
        """Spend one unit of the budget ``item`` for ``identifiers`` (flask-limiter's)."""
        key = item.key_for(*identifiers)
        now = time.time()
        with self._lock:
            lease = self._leases.get(key)
            if lease and lease.units and now < lease.ends_at:
                lease.units -= 1
                return lease.window(item.amount, now)
        known = lease.remaining if lease else item.amount
        size = max(1, min(LEASE_MAX, known // LEASE_SHARE))
        window, lease = self._ask(item, identifiers, size, now)
        with self._lock:
            self._leases.pop(key, None)  # re-inserted last: the most recently used
            if lease:
                self._leases[key] = lease
                if len(self._leases) > LEASES_KEPT:
                    del self._leases[next(iter(self._leases))]
        return window

    def _ask(
        self, item: RateLimitItem, identifiers: tuple[str, ...], size: int, now: float
    ) -> tuple[Window, _Lease | None]:
        """Ask Redis (or, while it is down, memory) for a lease of ``size`` units."""
        if not self._down or now >= self._retry_at:
            try:
                answer = _lease(self._shared, item, identifiers, size, now)
            except RedisError:
                if not self._down:
                    log.warning(FALLING_BACK)
                self._down, self._retry_at = True, now + RETRY_SECONDS
            else:
                if self._down:
                    log.info("Rate limit storage recovered")
                self._down = False
                return answer
        # No lease from memory: its units would outlive the outage uncounted in Redis.
        window, _ = _lease(self._memory, item, identifiers, 1, now)
        return window, None


def _lease(
    strategy: SlidingWindowCounterRateLimiter,
    item: RateLimitItem,
    identifiers: tuple[str, ...],
    size: int,
    now: float,
) -> tuple[Window, _Lease | None]:
    """A lease of ``size`` units, or of one when fewer remain, one of them spent now;
    or the refusal when none remains."""
    for units in dict.fromkeys((size, 1)):
        if strategy.hit(item, *identifiers, cost=units):
            break
    else:
        units = 0
    remaining, frees_in, ends_in = _window(strategy.storage, item, identifiers)
    if not units:
        return Window(False, item.amount, 0, math.ceil(frees_in)), None
    lease = _Lease(units - 1, remaining, now + frees_in, now + ends_in)
    return lease.window(item.amount, now), lease


def _window(
    storage: Storage, item: RateLimitItem, identifiers: tuple[str, ...]
) -> tuple[int, float, float]:
    """What remains, seconds until a unit is freed, and until the window rolls over.

    The first two as ``limits``' get_window_stats computes them; the roll-over comes from
    the same round trip, which get_window_stats does not return.
    """
    expiry = item.get_expiry()
    previous, previous_ttl, current, current_ttl = storage.get_sliding_window(
        item.key_for(*identifiers), expiry
    )
    remaining = max(0, item.amount - math.floor(previous * previous_ttl / expiry + current))
    frees_in = min(
        previous_ttl % (expiry / previous) if previous else math.inf,
        # A window just opened has a TTL of exactly twice the expiry: a full one, not 0.
        (current_ttl % expiry or expiry) if current else math.inf,
    )
    return remaining, (0.0 if frees_in == math.inf else frees_in), max(0.0, current_ttl - expiry)
