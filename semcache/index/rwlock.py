"""A small readers-writer lock (writers preferred) for the vector indexes."""

from __future__ import annotations

import threading
from contextlib import contextmanager


class _ReadSide:
    """``with lock.read():`` as a plain object: a search takes this on every lookup,
    and a generator-based context manager costs several times more per use."""

    __slots__ = ("_owner",)

    def __init__(self, owner: ReadWriteLock) -> None:
        self._owner = owner

    def __enter__(self) -> None:
        owner = self._owner
        with owner._mutex:  # the condition's own lock, taken without the Python-level wrapper
            while owner._writer or owner._writers_waiting:
                owner._cond.wait()
            owner._readers += 1

    def __exit__(self, *exc: object) -> None:
        owner = self._owner
        with owner._mutex:
            owner._readers -= 1
            # Only writers ever wait for readers to leave.
            if owner._readers == 0 and owner._writers_waiting:
                owner._cond.notify_all()


class ReadWriteLock:
    """Many concurrent readers or one writer; a waiting writer blocks new readers."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cond = threading.Condition(self._mutex)
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._read_side = _ReadSide(self)

    def read(self) -> _ReadSide:
        """Context manager holding the lock shared (reentrant use is not supported)."""
        return self._read_side

    @contextmanager
    def write(self):
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
