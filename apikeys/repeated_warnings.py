"""Warnings that an outage would repeat on every request, written once in a while instead."""

from __future__ import annotations

import logging
import threading
import time


class Throttled:
    """A warning written the first time, then at most once every ``seconds``, saying how
    many like it were held back meanwhile (each of those requests still has its request
    line): a database outage is one line every 10 s, not one per failed request."""

    def __init__(self, logger: logging.Logger, seconds: float = 10.0) -> None:
        self.logger, self.seconds = logger, seconds
        self._lock = threading.Lock()
        self._next, self._held = 0.0, 0

    def warning(self, message: str, *args: object) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._next:
                self._held += 1
                return
            held, self._held, self._next = self._held, 0, now + self.seconds
        if held:
            message += f" (and {held} more like it since the last such line)"
        self.logger.warning(message, *args)
