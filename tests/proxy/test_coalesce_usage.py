"""Units: coalescing (non-streamed and fanned-out streams), usage handling, complete answers."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.api.coalesce import Coalescer, StreamFlight
from proxy.api.sse import unfinished
from proxy.api.usage import asking_usage, estimate, for_caller


async def test_a_waiter_leaving_does_not_cancel_the_work_another_waits_for():
    started, release = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        started.set()
        await release.wait()
        return "answer"

    c: Coalescer[str] = Coalescer()
    first = asyncio.ensure_future(c.run("k", work))
    await started.wait()
    second = asyncio.ensure_future(c.run("k", work))
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert await second == ("answer", True)


async def test_the_last_waiter_leaving_cancels_the_work():
    cancelled = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    c: Coalescer[str] = Coalescer()
    waiters = [asyncio.ensure_future(c.run("k", work)) for _ in range(2)]
    await asyncio.sleep(0.01)
    for w in waiters:
        w.cancel()
    await asyncio.wait_for(cancelled.wait(), 1)
    assert len(c) == 0


async def _collect(frames) -> bytes:
    return b"".join([f async for f in frames])


async def test_a_late_subscriber_gets_every_frame_from_the_first():
    flight = StreamFlight()
    gate = asyncio.Event()

    async def produce() -> None:
        flight.publish(b"a")
        flight.publish(b"b")
        await gate.wait()
        flight.publish(b"c")
        flight.close()

    flight.start(produce())
    early = asyncio.ensure_future(_collect(flight.subscribe()))
    await asyncio.sleep(0.01)
    late = asyncio.ensure_future(_collect(flight.subscribe()))  # joins after a and b went out
    await asyncio.sleep(0.01)
    gate.set()
    assert await early == await late == b"abc"
    assert await _collect(flight.subscribe()) == b"abc"  # even after the end


async def test_the_last_subscriber_leaving_cancels_the_producer():
    flight = StreamFlight()
    cancelled = asyncio.Event()

    async def produce() -> None:
        flight.publish(b"a")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    flight.start(produce())
    one, two = flight.subscribe(), flight.subscribe()
    assert await one.__anext__() == b"a" and await two.__anext__() == b"a"
    await one.aclose()
    await asyncio.sleep(0.01)
    assert not cancelled.is_set()  # one still listens
    await two.aclose()
    await asyncio.wait_for(cancelled.wait(), 1)


def test_usage_is_asked_for_streams_only_and_only_when_the_caller_did_not():
    body = {"model": "m", "stream": True, "stream_options": {"other": 1}}
    assert asking_usage(body) == {**body, "stream_options": {"other": 1, "include_usage": True}}
    assert body["stream_options"] == {"other": 1}  # the caller's body is not changed
    asked = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    assert asking_usage(asked) is asked
    plain = {"model": "m"}
    assert asking_usage(plain) is plain


def test_a_caller_who_did_not_ask_sees_no_usage():
    assert for_caller({"choices": [], "usage": {"total_tokens": 3}}) is None
    chunk = {"id": "x", "choices": [{"index": 0}], "usage": None}
    assert for_caller(chunk) == {"id": "x", "choices": [{"index": 0}]}
    plain = {"id": "x", "choices": [{"index": 0}]}
    assert for_caller(plain) is plain


def test_counted_usage_says_it_is_an_estimate():
    body = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": [{"type": "text", "text": "Hi there!"}]}]}
    answer = {"choices": [{"message": {"content": "Hello, you."}, "finish_reason": "stop"}]}
    assert estimate(body, answer, "chat") == {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10,
                                              "estimated": True}
    assert estimate({"prompt": "a b"}, {"choices": [{"text": "c"}]}, "completions")["total_tokens"] == 3


@pytest.mark.parametrize("choices, complete", [
    ([{"index": 0, "finish_reason": "stop"}], True),
    ([{"index": 0, "finish_reason": "length"}], True),  # complete; whether it is stored is the policy's call
    ([{"index": 0, "finish_reason": None}], False),
    ([{"index": 0, "finish_reason": "stop"}, {"index": 1}], False),
    ([], False),
])
def test_an_answer_is_complete_only_when_every_choice_finished(choices, complete):
    assert (unfinished({"choices": choices}) is None) is complete


@given(st.lists(st.sampled_from(["stop", "length", None, ""]), min_size=1, max_size=4))
def test_any_choice_without_a_reason_makes_the_answer_incomplete(reasons):
    answer = {"choices": [{"index": i, "finish_reason": r} for i, r in enumerate(reasons)]}
    assert (unfinished(answer) is None) == all(reasons)
