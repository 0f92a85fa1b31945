"""A request's deadline, as the server that answers it and the transaction that writes for
it agree on it.

Past its deadline, apikeys.serving answers 503 "retry shortly" while the app's thread goes
on (a thread cannot be stopped). A write that committed after that answer would be a
change its client was told did not happen: a key whose secret no one saw, or a roll that
ended the old secret while the new one never arrived. So the two meet at one point, under
one lock:

- the server *gives up* on the request (``give_up``): from then on the request's COMMIT is
  refused (``Abandoned``, and the transaction rolls back), unless its COMMIT has begun;
  then the server waits for the app's own answer instead, which tells what happened;
- the database (apikeys.db) calls ``begin_commit`` right before a transaction's COMMIT;
  once one has begun, the request has changed something, and its answer must say so.
  Writes on the side (``aside``) are not the request's change and do not count.

A thread with no deadline (the CLI, the start-up, a test's client) commits freely.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from apikeys.errors import ServiceUnavailable


class Abandoned(ServiceUnavailable):
    """The request was answered 503 by its deadline before its transaction committed."""


class Deadline:
    """One request's: given up by the server, or committed by the app, whichever is first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._given_up = self._committing = False
        #: A COMMIT of the request's failed: whether it took effect is unknown.
        self.commit_failed = False

    def give_up(self) -> bool:
        """True when the request will now commit nothing; False when its commit has begun."""
        with self._lock:
            self._given_up = not self._committing
            return self._given_up

    def begin_commit(self) -> None:
        with self._lock:
            if self._given_up:
                raise Abandoned()
            self._committing = True


_current: ContextVar[Deadline | None] = ContextVar("deadline", default=None)


@contextmanager
def bound(deadline: Deadline) -> Iterator[None]:
    """The block's commits are ``deadline``'s to allow."""
    token = _current.set(deadline)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def aside() -> Iterator[None]:
    """Writes a request makes on the side (its key's last use, the audit log's pruning):
    not the change its answer reports, so the deadline neither refuses their commit nor,
    once they have committed, waits for the request's answer."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


def begin_commit() -> None:
    """Before a COMMIT: raises Abandoned if the request has been given up on."""
    deadline = _current.get()
    if deadline is not None:
        deadline.begin_commit()


def commit_failed() -> None:
    """A COMMIT raised after it was sent: the server may have committed (PostgreSQL, the
    connection cut or the server stopped on the way), so the change's outcome is unknown."""
    deadline = _current.get()
    if deadline is not None:
        deadline.commit_failed = True


def outcome_unknown() -> bool:
    """Whether a COMMIT of this request's failed, so that its error must not say "retry"."""
    deadline = _current.get()
    return deadline is not None and deadline.commit_failed
