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

Units are taken by a small Lua script of this module's own (``BUDGET_SCRIPT``: a sliding
window counter in one hash per budget and window length, whatever the amount, so that a
changed limit is judged by what its window has counted; on Redis's clock), which takes
a lease or else one unit and answers the window's state in one atomic round trip: a
lease can never outlive the window its units are counted in. When Redis fails (down,
paused past the socket timeout, out of memory), budgets are counted in this process's
memory, one unit at a time, for the routes and the check alike, and one request every
RETRY_SECONDS tries Redis again: a paused Redis costs one request per interval the
socket timeout, not every request. Without Redis at all (local use) every unit is
counted in memory as it is spent, by ``limits``, which counts a changed limit from zero.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from limits import RateLimitItem
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import SlidingWindowCounterRateLimiter
from redis import Redis, RedisError
from redis.exceptions import OutOfMemoryError, ReadOnlyError

from apikeys import metrics

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
#: The words flask-limiter logged for the same event, so that one log search finds both;
#: "unreachable" becomes "refusing writes" for a Redis that answers but takes no write,
#: and the line ends with Redis's own reason.
FALLING_BACK = "Rate limit storage %s - falling back to in-memory storage: %s"

#: One budget's sliding window, in one hash of its own: the current window's start (on
#: Redis's clock, in ms) and count, and the previous window's count, which weighs in as
#: much as the sliding window still covers of it. Takes the ``wanted`` units, or else
#: one, or none; answers what it granted and the window's state after it, atomically:
#: {granted, remaining, ms until a spent unit frees, ms until the current window ends}.
BUDGET_SCRIPT = """
local limit, window, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local state = redis.call('HMGET', KEYS[1], 'start', 'current', 'previous')
local start = tonumber(state[1])
local current, previous = tonumber(state[2]) or 0, tonumber(state[3]) or 0
if start == nil or now >= start + 2 * window then
    start, current, previous = now, 0, 0
elseif now >= start + window then
    start, current, previous = start + window, 0, current
end

local left = start + window - now
local weighted = math.floor(previous * left / window)
local granted = 0
if weighted + current + wanted <= limit then
    granted = wanted
elseif weighted + current + 1 <= limit then
    granted = 1
end
if granted > 0 then
    current = current + granted
    redis.call('HSET', KEYS[1], 'start', start, 'current', current, 'previous', previous)
    redis.call('PEXPIRE', KEYS[1], left + window)
end

-- A unit frees when the previous window's weighted count drops by one, or (at the
-- earliest) when the current window ends.
local frees = 0
if weighted > 0 then
    frees = left - weighted * window / previous
end
if current > 0 and (weighted == 0 or left < frees) then
    frees = left
end
return {granted, math.max(0, limit - weighted - current), math.ceil(frees), left}
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
        self._redis = (
            cast(Redis, storage.get_connection()) if isinstance(storage, RedisStorage) else None
        )
        self._take = self._redis.register_script(BUDGET_SCRIPT) if self._redis else None
        # Memory: the storage itself without Redis, or else the fallback while it fails.
        self._in_memory = SlidingWindowCounterRateLimiter(
            MemoryStorage() if self._redis else storage
        )
        self._clock = clock
        self._down = False
        self._retry_at = 0.0
        self._leases: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self._state = ("ok", 0.0)  # the storage's last known state, until when it holds

    def spend(self, item: RateLimitItem, *identifiers: str, lease: bool = True) -> Window:
        """Spend one unit of the budget ``item`` for ``identifiers``: from a lease of it,
        or (``lease=False``) counted in Redis as it is spent; in memory while Redis fails."""
        key, counter = _names(item, identifiers)
        with self._lock:
            now = self._clock()
            held = self._leases.pop(key, None) if lease else None
            if held and held.units and now < held.ends_at:
                held.units -= 1
                self._keep(key, held)
                return held.window(item.amount, now)
            ask_redis = self._may_ask_redis(now)
        if ask_redis:
            size = _lease_size(held.remaining if held else item.amount) if lease else 1
            window = self._from_redis(item, key, counter, size, now, keep=lease)
            if window:
                return window
        return _counted(self._in_memory, item, identifiers)

    def held(self) -> dict[str, int]:
        """The units of each lease this worker holds, by budget key."""
        with self._lock:
            return {key: lease.units for key, lease in self._leases.items()}

    def storage_state(self) -> str:
        """Whether Redis takes a write: "ok", "refusing writes" (out of memory, a read-only
        replica) or "down"; "not configured" when budgets live in memory.

        A write, not a PING: a Redis out of memory still answers PING. Asked at most once
        every RETRY_SECONDS, so that readiness probes and scrapes, like requests, wait on a
        hung Redis (up to the socket timeout) once per interval, not each time."""
        if self._redis is None:
            return "not configured"
        state, expires = self._state
        now = self._clock()
        if now < expires:
            return state
        self._state = (state, now + RETRY_SECONDS)  # others answer the last state meanwhile
        try:
            probe = cast(RedisStorage, self._storage).prefixed_key("apikeys-probe")
            self._redis.set(probe, 1, px=1000)
            state = "ok"
        except (OutOfMemoryError, ReadOnlyError):
            state = "refusing writes"
        except RedisError:
            state = "down"
        self._state = (state, now + RETRY_SECONDS)
        return state

    def _may_ask_redis(self, now: float) -> bool:
        """Whether this request asks Redis: always while it answers; while it fails, one
        request every RETRY_SECONDS tries it again and the others go on in memory."""
        if self._redis is None:
            return False
        if not self._down:
            return True
        if now < self._retry_at:
            return False
        self._retry_at = now + RETRY_SECONDS
        return True

    def _from_redis(
        self, item: RateLimitItem, key: str, counter: str, size: int, now: float, keep: bool
    ) -> Window | None:
        """A unit spent in Redis (the rest of a lease of ``size`` kept if ``keep``); None
        if Redis failed, which falls back to memory until the next attempt."""
        try:
            window, taken = self._lease(item, counter, size, now)
        except RedisError as error:
            self._failed(error)
            return None
        with self._lock:
            if self._down:
                log.info("Rate limit storage recovered")
                self._down = False
            if taken and keep:
                self._keep(key, self._merged(key, taken, now))
        return window

    def _lease(
        self, item: RateLimitItem, counter: str, size: int, now: float
    ) -> tuple[Window, _Lease | None]:
        """A lease of ``size`` units (or of one, when fewer remain) of the budget counted
        under ``counter``, one of its units spent now; or the refusal. One atomic round trip."""
        assert self._take is not None  # only asked while there is Redis
        granted, remaining, frees_in, ends_in = self._take(
            [cast(RedisStorage, self._storage).prefixed_key(counter)],
            [item.amount, item.get_expiry() * 1000, size],
        )
        if not granted:
            return Window(False, item.amount, 0, math.ceil(frees_in / 1000)), None
        lease = _Lease(granted - 1, remaining, now + frees_in / 1000, now + ends_in / 1000)
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

    def _failed(self, error: RedisError) -> None:
        with self._lock:
            if not self._down:
                refusing = isinstance(error, (OutOfMemoryError, ReadOnlyError))
                state = "refusing writes" if refusing else "unreachable"
                reason = str(error).partition("\n")[0] or type(error).__name__
                log.warning(FALLING_BACK, state, reason)
                metrics.count_fallback()
            # Units already leased stay spendable: Redis counted them.
            self._down, self._retry_at = True, self._clock() + RETRY_SECONDS


def _lease_size(known: int) -> int:
    """A sixteenth of the ``known`` remainder, or one unit when fewer remain."""
    return max(1, min(LEASE_MAX, known // LEASE_SHARE))


@functools.lru_cache(maxsize=LEASES_KEPT)
def _names(item: RateLimitItem, identifiers: tuple[str, ...]) -> tuple[str, str]:
    """The budget's two names, built once per caller, not on every spend: its lease's,
    ``limits``' own, which holds the limit's amount, so that a changed limit takes a new
    lease at once; and its counter's in Redis, which holds only the window, so that a
    changed amount is judged by what the window has counted already (a lowered limit
    binds on the next request, rather than after the window)."""
    return item.key_for(*identifiers), counter_name(item, *identifiers)


def counter_name(item: RateLimitItem, *identifiers: str) -> str:
    """The name of the Redis hash that counts ``item``'s window for ``identifiers``
    (under the storage's prefix): one per window length, whatever the amount."""
    return "/".join(("budget", *identifiers, f"{item.get_expiry()}s"))


def _counted(
    limiter: SlidingWindowCounterRateLimiter, item: RateLimitItem, identifiers: tuple[str, ...]
) -> Window:
    """One unit spent (or refused) in memory as it is asked for, by limits' own sliding
    window counter: memory has no round trip to save, so no lease."""
    allowed = limiter.hit(item, *identifiers)
    reset_at, remaining = limiter.get_window_stats(item, *identifiers)
    return Window(allowed, item.amount, remaining, max(0, math.ceil(reset_at - time.time())))
