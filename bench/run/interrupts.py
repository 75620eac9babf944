"""Ctrl-C (and the SIGTERM a worker turns into it) between database writes, never inside one.

A KeyboardInterrupt raised in the middle of an SQLite write can leave that connection holding the database's write
lock, so the cleanup that follows (the runs ended KILLED, the job given back) waits on it and fails: "database is
locked". Every MLflow call of the recorder and every job-store transaction therefore runs with these signals held
back, and a signal that came meanwhile takes effect as soon as the write has ended.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

HELD = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Run the block with SIGINT and SIGTERM held back, then hand each that came to the handler it had (Python's
    default SIGINT handler raises KeyboardInterrupt). Only the main thread receives signals: elsewhere, and for a
    signal ignored or left to the system's default, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {s: h for s in HELD if callable(h := signal.getsignal(s))}
    came: list[int] = []
    for signum in handlers:
        signal.signal(signum, lambda number, frame: came.append(number))
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    for signum in dict.fromkeys(came):
        handlers[signum](signum, None)


def uninterrupted(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method`, run whole (`held_signals`)."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        with held_signals():
            return method(*args, **kwargs)

    return call


class UninterruptedClient:
    """An MlflowClient whose every call runs whole (`held_signals`)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        return uninterrupted(attribute) if callable(attribute) else attribute
