"""The local engine (llama.cpp) as the proxy uses it: concurrent streams do not cut each other off."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from proxy.upstream.local_llm import MODEL_ALIAS

pytestmark = pytest.mark.slow


async def test_a_second_stream_does_not_interrupt_the_first(local_llm):
    """llama-cpp-python's server interrupts a running stream when a new request arrives unless told
    not to: a proxy forwarding two concurrent misses would relay a truncated answer."""

    async def stream(client: httpx.AsyncClient, question: str) -> str:
        body = {"model": MODEL_ALIAS, "messages": [{"role": "user", "content": question}], "max_tokens": 24,
                "temperature": 0.0, "stream": True}
        async with client.stream("POST", local_llm + "/chat/completions", json=body) as r:
            return "".join([line async for line in r.aiter_lines()])

    async with httpx.AsyncClient(timeout=300) as client:
        first = asyncio.create_task(stream(client, "Count from one to twenty."))
        await asyncio.sleep(0.5)  # the first is generating when the second arrives
        second = asyncio.create_task(stream(client, "Name three colours."))
        answers = await asyncio.gather(first, second)
    assert all(a.rstrip().endswith("data: [DONE]") for a in answers)
