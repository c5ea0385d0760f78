"""session and prefix routing: sticky sessions that move little, prefixes that stay home unless it is busy."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.upstream.pool import Upstream, UpstreamRouter
from proxy.upstream.routing import Balancer, PrefixAffinity, SessionAffinity
from proxy.upstream.routing.prefix import PrefixTable
from proxy.upstream.routing.prompt import block_hashes, rendered_prompt, session_key
from proxy.upstream.routing.session import rendezvous

SYSTEM = "You are the support assistant of ACME. " * 40  # ~1,600 characters


def _ups(n: int) -> list[Upstream]:
    return [Upstream(base_url=f"http://engine-{i}:8000/v1") for i in range(n)]


def _chat(*turns: tuple[str, str], user: str | None = None) -> dict:
    body = {"model": "m", "messages": [{"role": r, "content": c} for r, c in turns]}
    if user is not None:
        body["user"] = user
    return body


class Queues:
    """Engine queues as the scrapes would report them (other proxies' requests included)."""

    def __init__(self, **by_url: float):
        self.by_url = by_url

    def queue(self, upstream: Upstream) -> float | None:
        return self.by_url.get(upstream.base_url)


# -- session ------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 16), gone=st.integers(0, 15), seed=st.integers(0, 10_000))
def test_a_replica_leaving_moves_only_its_own_sessions(n, gone, seed):
    gone %= n
    nodes = [f"http://engine-{i}:8000/v1" for i in range(n)]
    keys = [f"open:{seed}-{k}" for k in range(600)]
    before = [nodes[rendezvous(k, nodes)] for k in keys]
    rest = nodes[:gone] + nodes[gone + 1:]
    after = [rest[rendezvous(k, rest)] for k in keys]
    moved = [b != a for b, a in zip(before, after, strict=True)]
    assert all(b == nodes[gone] for b, m in zip(before, moved, strict=True) if m)  # only the leaver's move
    assert sum(moved) == before.count(nodes[gone])
    assert sum(moved) <= len(keys) / n * 1.6 + 25  # ~1/N of the sessions


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 15), seed=st.integers(0, 10_000))
def test_a_replica_joining_takes_sessions_only_for_itself(n, seed):
    nodes = [f"http://engine-{i}:8000/v1" for i in range(n)]
    grown = [*nodes, "http://engine-new:8000/v1"]
    keys = [f"open:{seed}-{k}" for k in range(400)]
    for k in keys:
        old, new = nodes[rendezvous(k, nodes)], grown[rendezvous(k, grown)]
        assert new in (old, "http://engine-new:8000/v1")


def test_every_turn_of_a_conversation_has_the_same_session_key():
    first = _chat(("system", SYSTEM), ("user", "Where is my order?"))
    later = _chat(("system", SYSTEM), ("user", "Where is my order?"), ("assistant", "In transit."),
                  ("user", "When will it arrive?"))
    other = _chat(("system", SYSTEM), ("user", "How do I return a toaster?"))
    assert session_key(first, 4096) == session_key(later, 4096) != session_key(other, 4096)
    assert session_key({**other, "user": "alice"}, 4096) == session_key({**first, "user": "alice"}, 4096)


def test_session_routing_is_sticky_and_gives_way_under_imbalance():
    ups = _ups(4)
    strategy = SessionAffinity(Balancer(abs_threshold=4, rel_threshold=1.5))
    turns = [_chat(("system", SYSTEM), ("user", "Where is my order?"), *[("user", f"turn {i}")] * i)
             for i in range(6)]
    home = strategy.choose(ups, turns[0])
    assert all(strategy.choose(ups, t) is home for t in turns)
    home.in_flight = 9  # others idle: imbalanced
    assert strategy.choose(ups, turns[1]) is not home
    home.in_flight = 2  # not imbalanced: home again
    assert strategy.choose(ups, turns[1]) is home


# -- prefix -------------------------------------------------------------------------------------
def test_rendered_prompt_blocks_share_a_leading_run_exactly_as_long_as_the_shared_turns():
    q1, q2 = "first question " * 20, "second question " * 20
    a = block_hashes(rendered_prompt(_chat(("system", SYSTEM), ("user", q1)), 65536), 64)
    b = block_hashes(rendered_prompt(_chat(("system", SYSTEM), ("user", q2)), 65536), 64)
    c = block_hashes(rendered_prompt(_chat(("system", "Other. " + SYSTEM), ("user", q1)), 65536), 64)
    shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    differ_at = len("system\x1f" + SYSTEM + "\x1euser\x1f")  # the first character of the user turn
    assert shared == differ_at // 64  # every full block before the turns differ, nothing after
    assert len(a) > shared + 3
    assert a[0] != c[0]
    assert len(rendered_prompt(_chat(("user", "x" * 10_000)), 1000)) == 1000  # bounded


def test_prefix_routing_returns_a_prompt_to_the_replica_that_holds_its_prefix():
    ups = _ups(4)
    strategy = PrefixAffinity(Balancer())
    first = strategy.choose(ups, _chat(("system", SYSTEM), ("user", "question one")))
    first.in_flight = 1  # busier than the others, but it holds ~95% of the prompt
    for q in ("question two", "question three"):
        assert strategy.choose(ups, _chat(("system", SYSTEM), ("user", q))) is first
    # an unrelated prompt goes to the least-loaded replica, not to the busy holder
    assert strategy.choose(ups, _chat(("system", "Different bot. " * 50), ("user", "hi"))) is not first


def test_prefix_routing_falls_back_to_least_loaded_under_imbalance():
    ups = _ups(2)
    strategy = PrefixAffinity(Balancer(abs_threshold=4, rel_threshold=1.5))
    holder = strategy.choose(ups, _chat(("system", SYSTEM), ("user", "q1")))
    other = next(u for u in ups if u is not holder)
    holder.in_flight = 6
    assert strategy.choose(ups, _chat(("system", SYSTEM), ("user", "q2"))) is other
    # the scraped engine queue counts too: other proxies keep the holder busy
    holder.in_flight = 0
    strategy.balancer.engines = Queues(**{holder.base_url: 12.0})
    assert strategy.choose(ups, _chat(("system", SYSTEM), ("user", "q3"))) is other


def test_prefix_score_weighs_match_against_load():
    ups = _ups(2)
    strategy = PrefixAffinity(Balancer(abs_threshold=100), beta=0.5)
    holder = strategy.choose(ups, _chat(("system", SYSTEM), ("user", "q1")))
    other = next(u for u in ups if u is not holder)
    holder.in_flight, other.in_flight = 3, 2
    # matched ~0.95 - 0.5 * 3/3 = 0.45 beats 0 - 0.5 * 2/3
    assert strategy.choose(ups, _chat(("system", SYSTEM), ("user", "q2"))) is holder
    # a short shared prefix (the system prompt is a small part of a long prompt) loses to load:
    # ~0.18 - 0.5 * 4/4 < 0 - 0.5 * 1/4
    holder.in_flight, other.in_flight = 4, 1
    long_tail = "Please read this document carefully. " * 200
    assert strategy.choose(ups, _chat(("system", SYSTEM), ("user", long_tail))) is other


def test_prefix_table_forgets_the_least_recently_sent_blocks():
    table = PrefixTable(capacity_blocks=4)
    a, b = block_hashes("a" * 128, 64), block_hashes("b" * 192, 64)
    table.record("r", a)
    table.record("r", b)
    assert table.matched("r", b) == 3 and table.matched("r", a) == 0  # a's first block was evicted
    assert table.matched("other", b) == 0


async def test_router_uses_the_per_model_strategy_and_route_awaits_like_choose():
    ups = [Upstream(base_url="http://e1/v1", model="big"), Upstream(base_url="http://e2/v1", model="big"),
           Upstream(base_url="http://e3/v1", model="small")]
    balancer = Balancer()
    sticky = SessionAffinity(balancer)
    router = UpstreamRouter(ups, PrefixAffinity(balancer), {"big": sticky}, balancer)
    body = {**_chat(("user", "hello")), "model": "big"}
    chosen = router.choose(body)
    assert chosen is await router.route(body) and chosen.model == "big"
    assert (await router.route({**body, "model": "small"})).base_url == "http://e3/v1"
