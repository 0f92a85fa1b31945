"""Rate-limit budgets: one step that spends a request's budget, for the API's routes and
for the check alike, on the same counters and with the same recovery.

An API request spends one unit, counted in Redis as it is spent: one round trip, which
also answers the window's state for the RateLimit headers. The check, the hot path, takes
a lease of several units of a budget in one round trip and spends them in-process until
they run out or Redis's window rolls over (bench/README.md has what that saves).

What holds: a limit never admits more than it allows, across workers and instances,
because a unit is counted in Redis when it is leased. What it costs: a unit leased but
not spent before the window rolls over is lost, so a caller spread over many workers may
be refused a little before its limit. Leases shrink as the budget runs down (a sixteenth
of what remains), so a budget near its end, or too small to share, is spent one unit per
round trip, exactly.

A unit is taken by one Lua script, ``limits``' sliding-window acquisition on its keys
(so that counters stay those flask-limiter kept before), taking ``wanted`` units or else
one and answering the window's state, in one atomic round trip: a lease can never outlive
the window its units are counted in. When Redis fails (down, paused past the socket
timeout, out of memory), budgets are counted in this process's memory, one unit at a
time, for the routes and the check alike, and one request every RETRY_SECONDS tries
Redis again: a paused Redis costs one request per interval the socket timeout, not every
request. Without Redis at all (local use) every unit is counted in memory as it is spent.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem
from limits.storage import MemoryStorage, RedisStorage, Storage
from redis import RedisError
from redis.exceptions import OutOfMemoryError, ReadOnlyError

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
#: The words flask-limiter logged for the same event, so that one log search finds both.
FALLING_BACK = "Rate limit storage unreachable - falling back to in-memory storage"

#: limits' acquire_sliding_window.lua (limits 5), on the same keys with the same
#: roll-over, but taking ``wanted`` units or else one, and answering the window's state
#: after the hit: the lease and the window it belongs to, read atomically.
_TAKE_LEASE = """
local limit = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2]) * 1000
local wanted = tonumber(ARGV[3])

local current_ttl = tonumber(redis.call('pttl', KEYS[2]))
if current_ttl > 0 and current_ttl < expiry then
    -- Current window expired, shift it to the previous window
    redis.call('rename', KEYS[2], KEYS[1])
    redis.call('set', KEYS[2], 0, 'PX', current_ttl + expiry)
end

local previous_count = tonumber(redis.call('get', KEYS[1])) or 0
local previous_ttl = math.max(0, tonumber(redis.call('pttl', KEYS[1])) or 0)
local current_count = tonumber(redis.call('get', KEYS[2])) or 0
local weighted_count = math.floor(previous_count * previous_ttl / expiry) + current_count

local granted = 0
if weighted_count + wanted <= limit then
    granted = wanted
elseif weighted_count + 1 <= limit then
    granted = 1
end
if granted > 0 then
    if redis.call('exists', KEYS[2]) == 1 then
        redis.call('incrby', KEYS[2], granted)
    else
        redis.call('set', KEYS[2], granted, 'PX', expiry * 2)
    end
end
current_count = tonumber(redis.call('get', KEYS[2])) or 0
current_ttl = math.max(0, tonumber(redis.call('pttl', KEYS[2])) or 0)
return {granted, previous_count, previous_ttl, current_count, current_ttl}
"""


@dataclass(frozen=True, slots=True)
class Window:
    """The state of one budget as a request leaves it: what the RateLimit headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset: int  # seconds until a spent unit returns

    def headers(self) -> list[tuple[str, str]]:
        headers = [
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(self.reset)),
        ]
        if not self.allowed:
            headers.append(("Retry-After", str(max(1, self.reset))))
        return headers


@dataclass(slots=True)
class _Lease:
    units: int  # left to spend here
    remaining: int  # what Redis had left when it granted this lease
    frees_at: float  # when Redis frees its next unit (on the limiter's clock)
    ends_at: float  # when Redis's window rolls over: the lease lapses with it

    def window(self, limit: int, now: float) -> Window:
        reset = math.ceil(max(0.0, self.frees_at - now))
        return Window(True, limit, self.remaining + self.units, reset)


class LeasedLimiter:
    """Sliding-window-counter budgets on ``storage`` (flask-limiter's), counted in this
    process's memory while it is Redis and Redis fails; one of them per app, shared by
    every route it limits, so that all of them leave and return to Redis together.

    A request spends one unit counted in Redis as it is spent, or (``lease=True``, the
    hot path) from this worker's lease. RateLimit-Remaining from a lease is what Redis had
    left when this worker last took a lease of the budget, plus the units of that lease
    it has not spent: others' spending since then shows at the next lease.
    """

    def __init__(self, storage: Storage, clock: Callable[[], float] = time.monotonic) -> None:
        self._storage = storage
        self._memory = MemoryStorage()
        self._redis = storage.get_connection() if isinstance(storage, RedisStorage) else None
        self._take_lease = self._redis.register_script(_TAKE_LEASE) if self._redis else None
        self._clock = clock
        self._down = False
        self._retry_at = 0.0
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()

    def spend(self, item: RateLimitItem, *identifiers: str, lease: bool = True) -> Window:
        """Spend one unit of the budget ``item`` for ``identifiers``: from a lease of it,
        or (``lease=False``) counted in Redis as it is spent."""
        key = _key_for(item, identifiers)
        held = None
        with self._lock:
            now = self._clock()
            if lease:
                held = self._leases.pop(key, None)
                if held and held.units and now < held.ends_at:
                    held.units -= 1
                    self._keep(key, held)
                    return held.window(item.amount, now)
            ask_redis = self._redis is not None and (not self._down or now >= self._retry_at)
            if ask_redis and self._down:
                # This request tries Redis again; the others go on in memory meanwhile.
                self._retry_at = now + RETRY_SECONDS
        if ask_redis:
            size = _lease_size(held.remaining if held else item.amount) if lease else 1
            try:
                window, taken = self._lease(item, key, size, now)
            except RedisError:
                self._failed()
            else:
                with self._lock:
                    if self._down:
                        log.info("Rate limit storage recovered")
                        self._down = False
                    if taken and lease:
                        self._keep(key, self._merged(key, taken, now))
                return window
        return _counted(self._storage if self._redis is None else self._memory, item, key)

    def held(self) -> dict[str, int]:
        """The units of each lease this worker holds, by budget key."""
        with self._lock:
            return {key: lease.units for key, lease in self._leases.items()}

    def storage_state(self) -> str:
        """Whether Redis takes a write now: "ok", "refusing writes" (out of memory, a
        read-only replica) or "down"; "not configured" when budgets live in memory.

        A write, not a PING: a Redis out of memory still answers PING. Bounded by the
        storage's socket timeouts."""
        if self._redis is None:
            return "not configured"
        try:
            self._redis.set(self._storage.prefixed_key("apikeys-probe"), 1, px=1000)
        except (OutOfMemoryError, ReadOnlyError):
            return "refusing writes"
        except RedisError:
            return "down"
        return "ok"

    def _lease(
        self, item: RateLimitItem, key: str, size: int, now: float
    ) -> tuple[Window, _Lease | None]:
        """A lease of ``size`` units (or of one, when fewer remain), one of its units spent
        now; or the refusal. One atomic round trip."""
        # limits' keys for the previous and the current window, under its prefix ({key}
        # keeps the two on one node of a Redis cluster).
        windows = [f"{{{key}}}/-1", f"{{{key}}}"]
        granted, *state = self._take_lease(
            [self._storage.prefixed_key(window) for window in windows],
            [item.amount, item.get_expiry(), size],
        )
        previous, previous_ttl, current, current_ttl = state
        remaining, frees_in, ends_in = _window(
            item, previous, previous_ttl / 1000, current, current_ttl / 1000
        )
        if not granted:
            return Window(False, item.amount, 0, math.ceil(frees_in)), None
        lease = _Lease(granted - 1, remaining, now + frees_in, now + ends_in)
        return lease.window(item.amount, now), lease

    def _merged(self, key: str, lease: _Lease, now: float) -> _Lease:
        """``lease``, with the units of one another thread took meanwhile: they lapse
        together, with the earlier window."""
        held = self._leases.pop(key, None)
        if held and held.units and now < held.ends_at:
            lease.units += held.units
            lease.ends_at = min(lease.ends_at, held.ends_at)
        return lease

    def _keep(self, key: str, lease: _Lease) -> None:
        """Keep ``key``'s lease as the most recently used; drop the oldest past the bound."""
        self._leases[key] = lease
        if len(self._leases) > LEASES_KEPT:
            del self._leases[next(iter(self._leases))]

    def _failed(self) -> None:
        with self._lock:
            if not self._down:
                log.warning(FALLING_BACK)
            # Units already leased stay spendable: Redis counted them.
            self._down, self._retry_at = True, self._clock() + RETRY_SECONDS


def _lease_size(known: int) -> int:
    """A sixteenth of the ``known`` remainder, or one unit when fewer remain."""
    return max(1, min(LEASE_MAX, known // LEASE_SHARE))


@functools.lru_cache(maxsize=LEASES_KEPT)
def _key_for(item: RateLimitItem, identifiers: tuple[str, ...]) -> str:
    """``limits``' key for the budget: built once per caller, not on every spend."""
    return item.key_for(*identifiers)


def _counted(storage: Storage, item: RateLimitItem, key: str) -> Window:
    """One unit spent (or refused) in ``storage`` as it is asked for: memory has no round
    trip to save, so no lease."""
    expiry = item.get_expiry()
    allowed = storage.acquire_sliding_window_entry(key, item.amount, expiry, 1)
    remaining, frees_in, _ = _window(item, *storage.get_sliding_window(key, expiry))
    return Window(allowed, item.amount, remaining, math.ceil(frees_in))


def _window(
    item: RateLimitItem, previous: int, previous_ttl: float, current: int, current_ttl: float
) -> tuple[int, float, float]:
    """What remains, seconds until a unit is freed, and until the window rolls over.

    The first two as ``limits``' get_window_stats computes them (TTLs in seconds).
    """
    expiry = item.get_expiry()
    remaining = max(0, item.amount - math.floor(previous * previous_ttl / expiry + current))
    frees_in = min(
        previous_ttl % (expiry / previous) if previous else math.inf,
        # A window just opened has a TTL of exactly twice the expiry: a full one, not 0.
        (current_ttl % expiry or expiry) if current else math.inf,
    )
    return remaining, (0.0 if frees_in == math.inf else frees_in), max(0.0, current_ttl - expiry)
