"""The index's readers-writer lock: shared reads, exclusive writes, writers preferred."""

from __future__ import annotations

import threading
import time

from semcache.index.rwlock import ReadWriteLock


def _started(target) -> threading.Thread:
    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t


def test_readers_share_and_a_writer_waits_for_them():
    lock = ReadWriteLock()
    events: list[str] = []
    with lock.read():
        with lock.read():  # a second reader (another thread in real use) is not blocked
            events.append("two readers")

        def writer():
            with lock.write():
                events.append("write")

        t = _started(writer)
        t.join(0.2)
        assert t.is_alive(), "the writer must wait while a reader holds the lock"
        events.append("reader leaves")
    t.join(5)
    assert not t.is_alive()
    assert events == ["two readers", "reader leaves", "write"]


def test_a_waiting_writer_blocks_new_readers():
    lock = ReadWriteLock()
    order: list[str] = []
    first_reader_in = threading.Event()
    release_first = threading.Event()

    def first_reader():
        with lock.read():
            first_reader_in.set()
            release_first.wait(5)
            order.append("reader 1 out")  # still inside: the writer cannot have run yet

    def writer():
        with lock.write():
            order.append("write")

    def second_reader():
        with lock.read():
            order.append("reader 2 in")

    r1 = _started(first_reader)
    assert first_reader_in.wait(5)
    w = _started(writer)
    deadline = time.monotonic() + 5
    while not lock._writers_waiting and time.monotonic() < deadline:
        time.sleep(0.001)
    r2 = _started(second_reader)
    r2.join(0.2)
    assert r2.is_alive(), "a new reader must not overtake a waiting writer"
    release_first.set()
    for t in (r1, w, r2):
        t.join(5)
    assert order == ["reader 1 out", "write", "reader 2 in"]


def test_writers_exclude_each_other():
    lock = ReadWriteLock()
    inside, peak = 0, 0
    guard = threading.Lock()

    def writer():
        nonlocal inside, peak
        for _ in range(200):
            with lock.write():
                with guard:
                    inside += 1
                    peak = max(peak, inside)
                with guard:
                    inside -= 1

    threads = [_started(writer) for _ in range(4)]
    for t in threads:
        t.join(10)
    assert peak == 1
