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
            if now < self._next:
                self._held += 1
                self._last = (message, args)
                if self._timer is None:
                    self._timer = threading.Timer(self._next - now, self._write_held)
                    self._timer.daemon = True
                    self._timer.start()
                return
            # Its interval has ended: written now, with the count of any its timer has not
            # written yet (a timer may run late on a busy machine).
            more, self._held, self._next = self._held, 0, now + self.seconds
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        self._write(message, args, more)

    def _write_held(self) -> None:
        with self._lock:
            if self._timer is not threading.current_thread():
                return  # cancelled once it had started: a warning after it wrote them
            self._timer = None
            (message, args), more = self._last, self._held - 1
            self._held, self._next = 0, time.monotonic() + self.seconds
        self._write(message, args, more)

    def _write(self, message: str, args: tuple[object, ...], more: int) -> None:
        if more:
            message += f" (and {more} more like it since the last such line)"
        self.logger.warning(message, *args)
