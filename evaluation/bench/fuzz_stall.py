"""Fuzz a live proxy for a time budget: no answer may be a 5xx, and ``/healthz`` must stay fast meanwhile.

Two phases share the budget: schemathesis cases drawn from the proxy's own
OpenAPI schema (every operation in turn), then hypothesis-generated raw
bodies (random bytes, arbitrary and deeply nested JSON, chat/completion
bodies with hostile texts, policy documents) sent to the POST/PUT routes. A
prober polls ``/healthz`` every 10 ms from this process throughout and
records its worst latency. Failures are collected, not shrunk, so the run
keeps its time budget.

    python -m evaluation.bench.fuzz_stall --seconds 600      # starts the engine simulator and a proxy
    python -m evaluation.bench.fuzz_stall --url http://127.0.0.1:8080 --admin-token T --seconds 60

``tests/adversarial/test_fuzz.py`` runs a short bounded version in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaluation.bench.stall_harness import HealthProber

HOSTILE_CHARS = ["a", "(", ")", "[", "{", " ", "\n", "é", "\u200b", "\x00", "9", "-", "``", "foo()"]


@dataclass
class FuzzReport:
    cases: Counter = field(default_factory=Counter)      # phase -> requests sent
    statuses: Counter = field(default_factory=Counter)   # HTTP status -> count
    failures: list[str] = field(default_factory=list)    # 5xx answers and transport errors
    healthz_max_s: float = 0.0
    healthz_p99_s: float = 0.0
    healthz_over_100ms: int = 0
    healthz_probes: int = 0
    healthz_failures: int = 0
    during_worst_probe: list[str] = field(default_factory=list)  # requests in flight during the slowest probe
    gc_pauses: dict[str, int] = field(default_factory=dict)  # the proxy's GC pauses: "all", "over 20 ms", "over 100 ms"
    _spans: list[tuple[float, float, str]] = field(default_factory=list)

    def record(self, phase: str, what: str, status: int | None, detail: str = "", started: float = 0.0) -> None:
        self._spans.append((started, time.perf_counter(), f"{what} -> {status}"))
        self.cases[phase] += 1
        self.statuses[status if status is not None else "error"] += 1
        if status is None or status >= 500:
            if len(self.failures) < 50:
                self.failures.append(f"{phase} {what}: {status} {detail[:300]}")

    def summary(self) -> str:
        return (f"{sum(self.cases.values())} requests ({dict(self.cases)}), statuses {dict(sorted(self.statuses.items(), key=str))}, "
                f"{len(self.failures)} failures; /healthz: {self.healthz_probes} probes, p99 {self.healthz_p99_s * 1000:.0f} ms, "
                f"max {self.healthz_max_s * 1000:.0f} ms, {self.healthz_over_100ms} over 100 ms, "
                f"{self.healthz_failures} failed; in flight at the slowest probe: "
                f"{self.during_worst_probe}; the proxy's GC pauses: {self.gc_pauses or 'not exported'}")

    def blame(self, window: tuple[float, float]) -> None:
        """Note the requests in flight while the slowest probe waited."""
        self.during_worst_probe = [what for t0, t1, what in self._spans if t0 < window[1] and t1 > window[0]][:5]


def _json_values():
    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
                        max_leaves=30)


def _hostile_text():
    repeated = st.builds(lambda c, n: c * n, st.sampled_from(HOSTILE_CHARS), st.integers(0, 60_000))
    return st.one_of(st.text(max_size=200), repeated, st.builds(lambda a, b: a + b, repeated, st.text(max_size=50)))


def _bodies():
    """(method, path, content bytes, content type) tuples."""
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool"]) | st.text(max_size=8),
                                     "content": _hostile_text() | _json_values()})
    chat = st.fixed_dictionaries({"model": st.sampled_from(["sim-model", "coder-7b", ""]) | st.text(max_size=300),
                                  "messages": st.lists(message, min_size=0, max_size=3)},
                                 optional={"stream": st.booleans(), "max_tokens": st.integers(-5, 10),
                                           "temperature": st.floats(allow_nan=False) | st.text(max_size=5),
                                           "n": st.integers(-1, 3), "metadata": _json_values()})
    completion = st.fixed_dictionaries({"model": st.just("sim-model"), "prompt": _hostile_text() | _json_values()},
                                       optional={"max_tokens": st.integers(0, 8), "stream": st.booleans()})
    nested = st.builds(lambda c, n: c[0] * n + c[1] * n, st.sampled_from([("[", "]"), ("{\"a\":", "}")]),
                       st.integers(1, 200_000))
    payload = st.one_of(chat.map(json.dumps), completion.map(json.dumps), _json_values().map(json.dumps), nested,
                        st.binary(max_size=2000).map(lambda b: b.decode("latin-1")))
    post = st.tuples(st.just("POST"), st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]),
                     payload, st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"]))
    policy = st.one_of(_hostile_text(), nested, _json_values().map(json.dumps),
                       st.builds(lambda n: "a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(n)), st.integers(1, 3000)))
    put = st.tuples(st.just("PUT"), st.just("/admin/policies"), policy, st.just("application/yaml"))
    return st.one_of(post, post, post, put)


def _run_for(seconds: float, test: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        test()


def _schema_test(operation, url: str, auth: dict[str, str], report: FuzzReport, options) -> Callable[[], None]:
    @options
    @given(data=st.data())
    def schema_case(data):
        case = data.draw(operation.as_strategy())
        started = time.perf_counter()
        try:
            response = case.call(base_url=url, headers=auth, timeout=120)
            report.record("schema", f"{case.method} {case.path}", response.status_code, response.text, started)
        except Exception as exc:  # a transport error is a finding too
            report.record("schema", f"{case.method} {case.path}", None, repr(exc), started)

    return schema_case


def fuzz(url: str, seconds: float, admin_token: str, *, batch: int = 25) -> FuzzReport:
    """Fuzz the proxy at ``url`` for about ``seconds`` (half schema, half raw bodies)."""
    import schemathesis

    report = FuzzReport()
    auth = {"authorization": f"Bearer {admin_token}"}
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    options = settings(max_examples=batch, deadline=None, suppress_health_check=list(HealthCheck), database=None)

    with HealthProber(url) as probe, httpx.Client(base_url=url, timeout=120, headers=auth) as client:
        per_operation = seconds / 2 / max(1, len(operations))
        for operation in operations:
            _run_for(per_operation, _schema_test(operation, url, auth, report, options))

        @options
        @given(request=_bodies())
        def raw_case(request):
            method, path, content, content_type = request
            started = time.perf_counter()
            try:
                response = client.request(method, path, content=content.encode("utf-8", "surrogatepass"),
                                          headers={"content-type": content_type})
                report.record("raw", f"{method} {path} [{len(content)} chars: {content[:40]!r}]", response.status_code,
                              response.text, started)
            except Exception as exc:
                report.record("raw", f"{method} {path} [{len(content)} chars: {content[:40]!r}]", None, repr(exc), started)

        _run_for(seconds / 2, raw_case)
    report.healthz_max_s, report.healthz_probes, report.healthz_failures = probe.max_s, probe.count, probe.failures
    report.healthz_p99_s = probe.percentile(0.99)
    report.healthz_over_100ms = sum(latency > 0.1 for latency in probe.latencies)
    report.blame(probe.worst_window)
    report.gc_pauses = gc_pauses(url)
    return report


def gc_pauses(url: str) -> dict[str, int]:
    """The proxy's garbage-collector pauses from ``semcache_gc_pause_seconds`` (empty if not exported)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = httpx.get(url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "semcache_gc_pause_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    if not buckets:
        return {}
    total = buckets[float("inf")]
    return {"all": int(total), "over 20 ms": int(total - buckets.get(0.02, total)),
            "over 100 ms": int(total - buckets.get(0.1, total))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="time budget (default 600)")
    parser.add_argument("--url", help="a running proxy; default: start the engine simulator and a proxy")
    parser.add_argument("--admin-token", default="fuzz-admin")
    parser.add_argument("--keep-logs", type=Path, help="keep the proxy's and simulator's logs in this folder")
    args = parser.parse_args(argv)
    if args.url:
        report = fuzz(args.url.rstrip("/"), args.seconds, args.admin_token)
    else:
        from evaluation.bench.stall_harness import proxy_process
        from evaluation.replay.systems import Process

        with tempfile.TemporaryDirectory() as tmp:
            work = args.keep_logs or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            sim = Process([sys.executable, "-m", "evaluation.engine_sim", "--port", "{port}", "--prefill-ms-per-token",
                           "0", "--decode-ms-per-token", "0.2"], "/v1/models", work / "sim.log")
            env = {"SEMCACHE_ADMIN_TOKEN": args.admin_token, "SEMCACHE_PERSIST_POLICY_RELOADS": "false"}
            with sim, proxy_process(sim.url + "/v1", work / "proxy", env=env) as proxy:
                report = fuzz(proxy.url, args.seconds, args.admin_token)
    print(report.summary())
    for failure in report.failures:
        print("  ", failure)
    return 1 if report.failures or report.healthz_failures else 0


if __name__ == "__main__":
    sys.exit(main())
