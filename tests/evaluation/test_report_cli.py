"""``semcache report --from``: a live proxy (``/v1`` URL or root) and every way it can fail, as clear errors."""

from __future__ import annotations

import json

import pytest

from proxy.app import create_app
from proxy.cli import main
from tests.proxy.conftest import ADMIN_TOKEN, TEST_POLICIES, BagOfWordsEmbedder, make_settings


@pytest.fixture(scope="module")
def proxies(tmp_path_factory, engine_sim, live_server):
    """Two live proxies over the engine simulator: one with the admin API, one without."""
    tmp = tmp_path_factory.mktemp("report")
    policy = tmp / "p.yaml"
    policy.write_text(TEST_POLICIES)
    upstream = [engine_sim.url + "/v1"]
    with_admin = create_app(make_settings(tmp / "a", policy, upstreams=upstream), embedder=BagOfWordsEmbedder())
    without = create_app(make_settings(tmp / "b", policy, upstreams=upstream, admin_token=None),
                         embedder=BagOfWordsEmbedder())
    with live_server(with_admin) as a, live_server(without) as b:
        yield a.url, b.url


def _report(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["report", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_live_report_from_the_v1_base_url(proxies, tmp_path, capsys, monkeypatch):
    """Regression (#13 item 10): the ``/v1`` URL clients use asked /v1/admin/stats and crashed."""
    monkeypatch.setenv("SEMCACHE_ADMIN_TOKEN", ADMIN_TOKEN)  # the documented env fallback
    rc, out, err = _report(capsys, "--from", proxies[0] + "/v1", "--out", str(tmp_path / "r"))
    assert rc == 0 and "report.html" in out and err == ""
    assert (tmp_path / "r" / "report.html").stat().st_size > 1000 and (tmp_path / "r" / "live_stats.png").exists()


@pytest.mark.parametrize(("which", "token", "expected"), [
    (0, None, "give --admin-token or set SEMCACHE_ADMIN_TOKEN"),
    (0, "wrong", "admin token was rejected (401)"),
    (1, ADMIN_TOKEN, "admin API is off"),
])
def test_live_report_errors_name_the_cause(proxies, tmp_path, capsys, monkeypatch, which, token, expected):
    """Regression (#13 item 10): no token, a wrong one or a proxy without admin API gave a traceback."""
    monkeypatch.delenv("SEMCACHE_ADMIN_TOKEN", raising=False)
    argv = ["--from", proxies[which], "--out", str(tmp_path / "r")] + (["--admin-token", token] if token else [])
    rc, out, err = _report(capsys, *argv)
    assert rc == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_report_errors_for_unreachable_proxy_and_bad_files(tmp_path, capsys):
    from tests.conftest import free_port

    rc, _, err = _report(capsys, "--from", f"http://127.0.0.1:{free_port()}/v1", "--admin-token", "t",
                         "--out", str(tmp_path / "r"))
    assert rc == 2 and "cannot reach the proxy" in err
    rc, _, err = _report(capsys, "--from", str(tmp_path / "missing.json"), "--out", str(tmp_path / "r"))
    assert rc == 2 and "missing.json: cannot read" in err
    (tmp_path / "other.json").write_text(json.dumps({"some": "thing"}))
    rc, _, err = _report(capsys, "--from", str(tmp_path / "other.json"), "--out", str(tmp_path / "r"))
    assert rc == 2 and "not a replay result" in err
