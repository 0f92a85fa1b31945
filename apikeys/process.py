"""This process's id, read once and again in a forked child only.

``os.getpid()`` is a system call, and every request asks for the id several times: its
request line names the worker, and each metric it counts checks that it is still in the
process that opened the metric's file.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def process_id() -> int:
    """This process's id."""
    return _pid
