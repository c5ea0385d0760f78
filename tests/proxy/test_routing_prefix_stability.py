"""IC-Cache's examples and prefix routing agree on what the prompt's prefix is."""

from __future__ import annotations

from proxy.upstream.pool import Upstream
from proxy.upstream.routing import Balancer, PrefixAffinity
from proxy.upstream.routing.prompt import block_hashes, rendered_prompt
from semcache.iccache.prompt import with_examples
from tests.iccache.helpers import example, unit

SYSTEM = "You answer questions about the ACME router firmware. " * 30


def _blocks(messages: list[dict]) -> list[bytes]:
    return block_hashes(rendered_prompt({"model": "m", "messages": messages}, 65536), 64)


def test_examples_keep_the_system_prompt_blocks_first_and_identical():
    caller = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "How do I reset it?"}]
    shots = [example("e1", unit(1)), example("e2", unit(0, 1))]
    rewritten = with_examples(caller, shots)
    plain, ic = _blocks(caller), _blocks(rewritten)
    system_blocks = len("system\x1f" + SYSTEM) // 64
    assert ic[:system_blocks] == plain[:system_blocks]
    # the same context (same examples, same question) renders to the same prefix, byte for byte
    assert _blocks(with_examples(caller, shots)) == ic
    # the next turn of the conversation extends that prefix: all of the earlier prompt's blocks are reused
    turn2 = [*rewritten, {"role": "assistant", "content": "Hold the button."},
             {"role": "user", "content": "For how long?"}]
    assert _blocks(turn2)[:len(ic) - 1] == ic[:-1]


def test_prefix_routing_sends_an_example_rewritten_request_where_its_system_prompt_went():
    ups = [Upstream(base_url=f"http://small-{i}:8000/v1") for i in range(4)]
    strategy = PrefixAffinity(Balancer())
    caller = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "How do I reset it?"}]
    home = strategy.choose(ups, {"model": "m", "messages": caller})
    home.in_flight = 1
    rewritten = with_examples(caller, [example("e1", unit(1))])
    assert strategy.choose(ups, {"model": "m", "messages": rewritten}) is home
