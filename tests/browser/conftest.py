"""A real headless browser: Debian's chromium driven by Playwright (installed by ``.ci/setup --dev``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from evaluation.engine_sim import SimSettings
from evaluation.engine_sim import create_app as create_sim_app
from proxy.app import create_app
from tests.proxy.conftest import BagOfWordsEmbedder, make_settings

DOCS = Path(__file__).resolve().parents[2] / "docs"

CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # This machine has no network: without these chromium keeps dialling out.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Module-scoped on purpose: Playwright's sync API runs an asyncio loop in the main thread
    while it is open, and pytest-asyncio cannot start its own loop until it is closed again."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.fail("chromium not found: run bash .ci/setup --dev")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def shot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: ``docs/`` with ``SEMCACHE_SCREENSHOTS=docs``, else the test's tmp dir."""
    target = DOCS if os.environ.get("SEMCACHE_SCREENSHOTS") == "docs" else tmp_path
    target.mkdir(exist_ok=True)
    return target


@contextmanager
def proxy_over_sim(live_server, tmp_path: Path, policy_text: str, **overrides) -> Iterator:
    """A real proxy (uvicorn) in front of the engine simulator, under ``policy_text``."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy_text)
    with live_server(create_sim_app(SimSettings(model="sim-model", decode_ms_per_token=0.5))) as sim:
        settings = make_settings(tmp_path, policy_file, upstreams=[f"{sim.url}/v1"], **overrides)
        with live_server(create_app(settings, embedder=BagOfWordsEmbedder())) as server:
            server.policy_file = policy_file
            yield server
