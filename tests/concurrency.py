"""Running things at once: forked processes released together, a pool held busy."""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from collections.abc import Callable, Sequence
from typing import Any

from apikeys import db


def run_concurrently(target: Callable, calls: Sequence[tuple]) -> list[tuple[str, Any]]:
    """``target(*args)`` in one forked process per call, all released at once.

    Returns ``("ok", result)`` or ``("error", "Type: message")`` per process.
    """
    # A connection inherited across fork would be shared with the children.
    if db.database.obj is not None:
        db.close_all()
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(calls))
    outcomes = context.Queue()
    processes = [
        context.Process(target=_released, args=(barrier, outcomes, target, args)) for args in calls
    ]
    for process in processes:
        process.start()
    results = [outcomes.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    return results


def _released(barrier, outcomes, target: Callable, args: tuple) -> None:
    try:
        barrier.wait(timeout=30)
        outcomes.put(("ok", target(*args)))
    except BaseException as error:  # reported to the parent, which asserts on it
        outcomes.put(("error", f"{type(error).__name__}: {error}"))


@contextlib.contextmanager
def every_connection_busy():
    """Another thread holds the pool's only connection (PostgreSQL) for the duration."""
    held, release = threading.Event(), threading.Event()

    def hold_the_only_connection():
        with db.database.connection_context():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    try:
        held.wait(10)
        yield
    finally:
        release.set()
        holder.join()
