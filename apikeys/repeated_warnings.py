"""Warnings that an outage would repeat on every request, written once in a while instead."""

from __future__ import annotations

import logging
import threading
import time


class Throttled:
    """A warning written the first time, then at most once every ``seconds``: the last one
    held back meanwhile, saying how many more came with it (each of those requests still
    has its request line). A database outage is one line every 10 s, not one per failed
    request, and its last seconds are written when their interval ends, even if the
    outage ends with them and no warning comes after."""

    def __init__(self, logger: logging.Logger, seconds: float = 10.0) -> None:
        self.logger, self.seconds = logger, seconds
        self._lock = threading.Lock()
        self._next, self._held = 0.0, 0
        self._last: tuple[str, tuple[object, ...]] = ("", ())
        self._timer: threading.Timer | None = None

    def warning(self, message: str, *args: object) -> None:
        with self._lock:
            now = time.monotonic()
            if now >= self._next and self._timer is None:
                self._next = now + self.seconds
            else:
                # Held back; its interval's timer writes the last one held (even one that
                # came after the interval, while the timer ran late).
                self._held += 1
                self._last = (message, args)
                if self._timer is None:
                    self._timer = threading.Timer(self._next - now, self._write_held)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self.logger.warning(message, *args)

    def _write_held(self) -> None:
        with self._lock:
            (message, args), more = self._last, self._held - 1
            self._held, self._timer, self._next = 0, None, time.monotonic() + self.seconds
        if more:
            message += f" (and {more} more like it since the last such line)"
        self.logger.warning(message, *args)
