"""Load-adaptive policies (semcache.adaptive): synthetic pressure, an injected clock, no sleeps."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semcache import CacheRequest, ManualClock, PolicyError, load_policies_text
from semcache.adaptive import AdaptiveControl, Pressure, PressureTargets, pressure_of
from semcache.load import EngineLoad

ADAPTIVE = """
defaults: {threshold: 0.90, ttl_seconds: 100}
categories:
  default:
    under_load:
      enabled: true
      max_false_hit_rate: 0.10
      calibration: {score: similarity, value: 0.85, n_labelled: 1000, served: 400, false_hits: 20,
                    estimated_rate: 0.05, upper_bound: 0.07}
      step: 0.02
      ttl_factor: 3
      serve_stale_s: 50
      hysteresis: 0.5
      interval_s: 5
"""


class Dial:
    """Synthetic pressure: whatever the test sets, per model."""

    def __init__(self):
        self.value, self.failing = 0.0, False

    def __call__(self, model: str) -> Pressure:
        return Pressure(self.value, "queue", self.failing)


def control(text=ADAPTIVE, **kw):
    policies = load_policies_text(text)
    clock, dial = ManualClock(), Dial()
    ctl = AdaptiveControl(lambda: policies, clock, pressure=dial, **kw)
    return ctl, policies.default, clock, dial


def run(ctl, policy, clock, seconds, step=1.0):
    for _ in range(int(seconds / step)):
        clock.advance(step)
        ctl.effective(policy, "m")
    return ctl.effective(policy, "m")


def test_pressure_is_the_worst_signal_over_its_target():
    t = PressureTargets(max_waiting=10, ttft_s=2.0, kv_usage=0.9)
    p = pressure_of(EngineLoad(waiting=5, running=4, kv_usage=0.45, ttft_s=5.0), t)
    assert (p.value, p.signal) == (2.5, "ttft")
    assert pressure_of(EngineLoad(waiting=30), t).signal == "queue"
    assert pressure_of(EngineLoad(ttft_s=9.0), t).value == 0.0  # idle: an old window's latency is no pressure
    assert pressure_of(None, t, in_flight=32).value == pytest.approx(32 / t.max_in_flight)


def test_steps_down_one_step_per_interval_to_the_floor_and_stretches_ttl():
    ctl, policy, clock, dial = control()
    assert ctl.effective(policy, "m") == ctl.effective(policy, "m")
    assert ctl.effective(policy, "m").threshold == 0.90 and not ctl.effective(policy, "m").adaptive
    dial.value = 2.0
    seen = [round(run(ctl, policy, clock, 5).threshold, 4) for _ in range(5)]
    assert seen == [0.88, 0.86, 0.85, 0.85, 0.85]  # 0.90 - 3 * 0.02 would cross the floor 0.85
    eff = ctl.effective(policy, "m")
    assert eff.adaptive and eff.ttl_seconds == pytest.approx(300)  # ttl_factor 3 at full relaxation
    assert [e.action for e in ctl.events] == ["relax"] * 3
    assert ctl.events.snapshot()[0]["old_threshold"] == 0.90


def test_hysteresis_holds_between_the_bands_and_restores_below():
    ctl, policy, clock, dial = control()
    dial.value = 1.5
    run(ctl, policy, clock, 20)
    assert ctl.effective(policy, "m").threshold == pytest.approx(0.85)
    dial.value = 0.7  # below 1.0 but above 1.0 * (1 - 0.5): no move
    assert run(ctl, policy, clock, 60).threshold == pytest.approx(0.85)
    dial.value = 0.2
    assert run(ctl, policy, clock, 5).threshold == pytest.approx(0.86)
    eff = run(ctl, policy, clock, 60)
    assert (eff.threshold, eff.ttl_seconds, eff.adaptive) == (0.90, 100, False)
    assert [e.action for e in ctl.events][-3:] == ["restore"] * 3


def test_pressure_oscillating_around_the_target_does_not_flap():
    ctl, policy, clock, dial = control()
    for i in range(60):
        dial.value = 1.05 if i % 2 else 0.95
        clock.advance(1)
        ctl.effective(policy, "m")
    assert all(e.action == "relax" for e in ctl.events)  # never steps back inside the band


def test_without_evidence_the_threshold_never_moves_but_ttl_may_stretch():
    ctl, policy, clock, dial = control("""
categories:
  default:
    threshold: 0.90
    ttl_seconds: 100
    under_load: {enabled: true, max_false_hit_rate: 0.10, threshold_floor: 0.5, ttl_factor: 3}
""")
    dial.value = 5.0
    eff = run(ctl, policy, clock, 30)
    assert eff.threshold == 0.90 and eff.ttl_seconds == pytest.approx(300)


def test_operator_floor_stricter_than_evidence_wins():
    ctl, policy, clock, dial = control(ADAPTIVE.replace("step: 0.02", "step: 0.02\n      threshold_floor: 0.87"))
    dial.value = 3.0
    assert run(ctl, policy, clock, 60).threshold == pytest.approx(0.87)


@pytest.mark.parametrize("bad, field", [
    ("upper_bound: 0.07", "upper_bound: 0.20"),           # evidence does not meet the budget
    ("max_false_hit_rate: 0.10", "max_false_hit_rate: null"),
    ("score: similarity", "score: verifier"),
    ("step: 0.02", "step: 0"),
    ("ttl_factor: 3", "ttl_factor: 0.5"),
    ("hysteresis: 0.5", "hystersis: 0.5"),                # a typo is an error, not a default
])
def test_invalid_under_load_is_a_policy_error(bad, field):
    with pytest.raises(PolicyError) as err:
        load_policies_text(ADAPTIVE.replace(bad, field))
    assert "under_load" in str(err.value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 10), st.floats(0, 20)), min_size=1, max_size=80),
       st.floats(0.001, 0.2), st.floats(0.0, 0.95))
def test_floor_is_never_crossed_and_ttl_never_below_policy(trace, step, hysteresis):
    text = ADAPTIVE.replace("step: 0.02", f"step: {step}").replace("hysteresis: 0.5", f"hysteresis: {hysteresis}")
    ctl, policy, clock, dial = control(text)
    for value, dt in trace:
        dial.value = value
        clock.advance(dt)
        eff = ctl.effective(policy, "m")
        assert 0.85 - 1e-9 <= eff.threshold <= 0.90
        assert 100 <= eff.ttl_seconds <= 300 + 1e-6


def test_global_and_category_kill_switches_restore_at_once_and_log_it():
    ctl, policy, clock, dial = control()
    dial.value = 2.0
    run(ctl, policy, clock, 20)
    ctl.set_switches(enabled=False)
    eff = ctl.effective(policy, "m")
    assert (eff.threshold, eff.ttl_seconds, eff.serve_stale_s) == (0.90, 100, 0.0)
    assert ctl.events.snapshot()[-1]["action"] == "reset" and "global" in ctl.events.snapshot()[-1]["reason"]
    ctl.set_switches(enabled=True)
    assert run(ctl, policy, clock, 5).threshold == pytest.approx(0.88)
    ctl.set_switches(enabled=False, category="default")
    assert ctl.effective(policy, "m").threshold == 0.90
    assert "category" in ctl.events.snapshot()[-1]["reason"]
    assert ctl.snapshot()["disabled"] == ["default"]


def test_dry_run_logs_the_moves_but_serves_the_policy():
    ctl, policy, clock, dial = control(dry_run=True)
    dial.value = 2.0
    eff = run(ctl, policy, clock, 30)
    assert (eff.threshold, eff.ttl_seconds, eff.serve_stale_s, eff.adaptive) == (0.90, 100, 0.0, False)
    assert [e.dry_run for e in ctl.events] == [True] * 3
    assert ctl.snapshot()["categories"]["default"]["dry_run_level"] == 3


def test_switching_dry_run_starts_from_the_policy():
    ctl, policy, clock, dial = control()
    dial.value = 2.0
    assert run(ctl, policy, clock, 7).threshold == pytest.approx(0.86)
    ctl.set_switches(dry_run=True)
    assert run(ctl, policy, clock, 6).threshold == 0.90
    assert ctl.snapshot()["categories"]["default"]["dry_run_level"] == 1
    ctl.set_switches(dry_run=False)  # a level reached while dry must not take effect at once
    assert ctl.effective(policy, "m").threshold == 0.90
    assert [e.reason for e in ctl.events if e.action == "reset"] == ["dry run on", "dry run off"]


def test_category_follows_its_models_and_forgets_idle_ones():
    policies = load_policies_text(ADAPTIVE)
    clock = ManualClock()
    loads = {"big": Pressure(3.0, "queue"), "small": Pressure(0.0)}
    ctl = AdaptiveControl(lambda: policies, clock, pressure=lambda m: loads[m], model_memory_s=30)
    policy = policies.default
    ctl.effective(policy, "small")
    clock.advance(10)
    assert ctl.effective(policy, "small").threshold == 0.90
    assert ctl.effective(policy, "big").threshold == pytest.approx(0.88)  # the worst model sent to counts
    clock.advance(10)
    assert ctl.effective(policy, "small").threshold == pytest.approx(0.86)
    clock.advance(20)
    ctl.effective(policy, "small")
    clock.advance(11)  # "big" not seen for longer than model_memory_s, "small" just now
    ctl.tick()
    assert ctl.snapshot()["categories"]["default"]["models"] == ["small"]


def test_a_failing_model_does_not_hide_another_models_pressure():
    policies = load_policies_text(ADAPTIVE)
    loads = {"big": Pressure(3.0, "queue"), "down": Pressure(0.0, "in_flight", failing=True)}
    ctl = AdaptiveControl(lambda: policies, ManualClock(), pressure=lambda m: loads[m])
    ctl.effective(policies.default, "down")
    eff = ctl.effective(policies.default, "big")
    assert eff.threshold == pytest.approx(0.88) and eff.serve_stale_s == 50
    assert ctl.snapshot()["categories"]["default"]["pressure"] == 3.0


def test_replicas_fed_the_same_engine_metrics_reach_the_same_thresholds():
    a, policy, clock_a, dial_a = control()
    b, _, clock_b, dial_b = control()
    clock_b.advance(0.4)  # not in phase
    for value in [0.0] * 5 + [3.0] * 30 + [0.1] * 40:
        for ctl, clock, dial in ((a, clock_a, dial_a), (b, clock_b, dial_b)):
            dial.value = value
            clock.advance(1)
            ctl.effective(policy, "m")
    assert [e.new_threshold for e in a.events] == [e.new_threshold for e in b.events]


def test_a_failing_pressure_source_never_fails_the_lookup():
    policies = load_policies_text(ADAPTIVE)

    def broken(model):
        raise RuntimeError("scrape state gone")

    ctl = AdaptiveControl(lambda: policies, ManualClock(), pressure=broken)
    assert ctl.effective(policies.default, "m").threshold == 0.90


# ------------------------------------------------------------ through the cache


def chat(text, tenant="t"):
    return CacheRequest("chat", {"model": "m", "messages": [{"role": "user", "content": text}]}, tenant=tenant)


ANSWER = {"id": "x", "object": "chat.completion", "created": 1, "model": "m",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


async def put(cache, text):
    res = await cache.lookup(chat(text))
    assert (await cache.store(chat(text), res, response=ANSWER)).stored
    return res


async def test_relaxed_hit_within_the_floor_and_never_below(make_cache, clock):
    cache = await make_cache(ADAPTIVE)
    dial = Dial()
    cache.adaptive.pressure = dial
    await put(cache, "how do I reset my password")
    near = chat("how do I reset my password now please")  # similarity 0.856 (HashEmbedder)
    far = chat("reset my password")                       # 0.674: below the floor
    assert (await cache.lookup(near)).status == "miss"
    dial.value = 2.0
    for _ in range(4):
        clock.advance(5)
        res = await cache.lookup(near)
    assert res.status == "hit" and res.adaptive and res.threshold == pytest.approx(0.85)
    assert (await cache.lookup(far)).status == "miss"
    dial.value = 0.0
    for _ in range(4):
        clock.advance(5)
        res = await cache.lookup(near)
    assert res.status == "miss" and not res.adaptive and res.threshold == 0.90


async def test_entries_stored_under_load_live_longer(make_cache, clock):
    cache = await make_cache(ADAPTIVE)
    dial = Dial()
    cache.adaptive.pressure = dial
    dial.value = 2.0
    for _ in range(4):
        clock.advance(5)
        await cache.lookup(chat("warm up"))
    await put(cache, "what is semcache")
    clock.advance(250)  # past the policy TTL (100), inside the stretched one (300)
    dial.value = 0.0
    res = await cache.lookup(chat("what is semcache"))
    assert res.status == "hit" and res.stale_s is None


async def test_stale_entries_serve_only_under_overload_and_within_serve_stale_s(make_cache, clock):
    cache = await make_cache(ADAPTIVE)
    dial = Dial()
    cache.adaptive.pressure = dial
    await put(cache, "what is semcache")
    clock.advance(130)  # expired 30 s ago
    assert (await cache.lookup(chat("what is semcache"))).status == "miss"  # calm: never stale
    assert await cache.purge_expired() == 0  # kept for serve_stale_s
    dial.failing = True
    res = await cache.lookup(chat("what is semcache"))
    assert res.status == "hit" and res.stale_s == pytest.approx(30)
    dial.failing, dial.value = False, 1.2
    assert (await cache.lookup(chat("what is semcache"))).status == "hit"
    clock.advance(25)  # expired 55 s ago: past serve_stale_s even under overload
    assert (await cache.lookup(chat("what is semcache"))).status == "miss"
    assert await cache.purge_expired() == 1
    assert cache.adaptive.snapshot()["stale_hits"] == {"default": 2}


async def test_stale_is_never_served_when_the_category_does_not_allow_it(make_cache, clock):
    cache = await make_cache(ADAPTIVE.replace("serve_stale_s: 50", "serve_stale_s: 0"))
    dial = Dial()
    cache.adaptive.pressure = dial
    dial.value, dial.failing = 9.0, True
    await put(cache, "what is semcache")
    clock.advance(301)  # past even the stretched TTL of an entry stored under load
    assert (await cache.lookup(chat("what is semcache"))).status == "miss"


async def test_relaxed_threshold_still_runs_the_guards(make_cache, clock):
    # enable vs disable: cosine 0.891 (HashEmbedder), a miss at 0.90 and inside the relaxed band
    # [0.85, 0.90) under load: the negation guard must still refuse it.
    cache = await make_cache(ADAPTIVE)
    dial = Dial()
    cache.adaptive.pressure = dial
    base = "how do I {} two factor login on my work account from the settings page today"
    await put(cache, base.format("enable"))
    dial.value = 3.0
    for _ in range(4):
        clock.advance(5)
        res = await cache.lookup(chat(base.format("disable")))
    assert res.threshold == pytest.approx(0.85) and res.similarity > 0.85
    assert res.status == "miss" and res.stage == "guard"


async def test_relaxation_and_serve_stale_never_cross_tenants(make_cache, clock):
    cache = await make_cache(ADAPTIVE)
    dial = Dial()
    cache.adaptive.pressure = dial
    await put(cache, "how do I reset my password")
    dial.value, dial.failing = 3.0, True
    for _ in range(4):
        clock.advance(5)
        assert (await cache.lookup(chat("how do I reset my password now please", tenant="other"))).status == "miss"
    clock.advance(90)  # expired 10 s ago: stale-servable for its own tenant only
    assert (await cache.lookup(chat("how do I reset my password", tenant="other"))).status == "miss"
    assert (await cache.lookup(chat("how do I reset my password"))).stale_s == pytest.approx(10)


def test_live_audits_over_the_budget_stop_relaxing_and_step_back():
    from semcache.adaptive.controller import MIN_LIVE_SAMPLES

    ctl, policy, clock, dial = control()
    live = {"samples": 10, "upper": 0.5}
    ctl.live_estimate = lambda category: live
    dial.value = 2.0
    assert run(ctl, policy, clock, 10).threshold == pytest.approx(0.86)  # too few samples: calibration governs
    live.update(samples=MIN_LIVE_SAMPLES, upper=0.25)  # budget 0.10: the live bound forbids relaxing
    assert run(ctl, policy, clock, 5).threshold == pytest.approx(0.88)
    assert run(ctl, policy, clock, 5).threshold == pytest.approx(0.90)
    assert run(ctl, policy, clock, 30).threshold == pytest.approx(0.90)  # still under pressure: stays strict
    assert "live false-hit upper bound 0.250 > budget 0.100" in ctl.events.snapshot()[-1]["reason"]
    live.update(samples=200, upper=0.08)  # enough good audits: relaxing may resume
    assert run(ctl, policy, clock, 5).threshold == pytest.approx(0.88)


VERIFIED = """
defaults: {threshold: 0.70, ttl_seconds: 100}
categories:
  default:
    verifier: {enabled: true, model: trees, min_probability: 0.80}
    under_load:
      enabled: true
      max_false_hit_rate: 0.05
      calibration: {score: verifier, value: 0.62, n_labelled: 1000, served: 400, false_hits: 10,
                    estimated_rate: 0.025, upper_bound: 0.04}
      step: 0.05
      interval_s: 5
"""


def test_where_the_verifier_decides_its_cut_off_relaxes_to_its_floor_and_the_pre_filter_stays():
    ctl, policy, clock, dial = control(VERIFIED)
    eff = ctl.effective(policy, "m")
    assert (eff.threshold, eff.min_probability, eff.adaptive) == (0.70, 0.80, False)
    dial.value = 2.0
    seen = [run(ctl, policy, clock, 5) for _ in range(5)]
    assert [round(e.min_probability, 4) for e in seen] == [0.75, 0.70, 0.65, 0.62, 0.62]
    assert {e.threshold for e in seen} == {0.70} and all(e.adaptive for e in seen)
    event = next(iter(ctl.events))
    assert event.cutoff == "verifier" and "verifier min_probability 0.800 -> 0.750" in event.describe()
    cat = ctl.snapshot()["categories"]["default"]
    assert (cat["relaxes"], cat["floor"], cat["effective_min_probability"], cat["effective_threshold"]) == \
        ("verifier", 0.62, pytest.approx(0.62), 0.70)
    dial.value = 0.0
    assert run(ctl, policy, clock, 40).min_probability == pytest.approx(0.80)


def test_verifier_evidence_without_the_verifier_is_a_policy_error():
    with pytest.raises(PolicyError, match="needs verifier.enabled"):
        load_policies_text(VERIFIED.replace("enabled: true, model: trees", "enabled: false, model: trees"))
