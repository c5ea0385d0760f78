"""The command line: commands, help, settings precedence, plugin commands."""

from __future__ import annotations

import argparse

import pytest

from evaluation.engine_sim.cli import register, settings_from_args
from proxy.cli import build_parser, main
from proxy.settings import load_settings
from semcache.errors import ConfigError


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("serve", "local-llm", "embed-server"))


def test_serve_help_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    assert "semcache serve --upstream http://localhost:8000/v1 --port 8080" in capsys.readouterr().out


def test_flags_beat_env_beat_config_file(tmp_path, monkeypatch):
    config = tmp_path / "semcache.yaml"
    config.write_text("port: 7000\nhost: 0.0.0.0\nstore: redis\n")
    monkeypatch.setenv("SEMCACHE_PORT", "7100")
    s = load_settings({"host": "127.0.0.2"}, config)
    assert (s.port, s.host, s.store) == (7100, "127.0.0.2", "redis")
    assert "upstreams" not in s.model_fields_set  # so `serve` starts the local engine


def test_config_typo_is_an_error_naming_it(tmp_path):
    config = tmp_path / "semcache.yaml"
    config.write_text("prot: 7000\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings({}, config)
    with pytest.raises(ConfigError, match="http"):
        load_settings({"upstreams": ["localhost:8000"]})


def test_engine_sim_registers_as_a_plugin_command():
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["engine-sim", "--model", "big", "--port", "9001", "--max-batch", "4"])
    s = settings_from_args(args)
    assert (s.model, s.port, s.max_batch) == ("big", 9001, 4) and args.handler.__name__ == "run"


def test_the_local_engine_keeps_the_speculation_setting(monkeypatch):
    """'auto' already skips llama.cpp (no vLLM metrics; see test_proxy_live); an explicit choice stays."""
    from proxy.cli import with_local_engine

    s = with_local_engine(load_settings({}, None), "http://127.0.0.1:9/v1")
    assert s.upstreams == ["http://127.0.0.1:9/v1"] and s.speculative_forward == "auto"
    monkeypatch.setenv("SEMCACHE_SPECULATIVE_FORWARD", "true")
    assert with_local_engine(load_settings({}, None), "http://127.0.0.1:9/v1").speculative_forward is True
    monkeypatch.setenv("SEMCACHE_SPECULATIVE_FORWARD", "false")
    assert with_local_engine(load_settings({}, None), "http://127.0.0.1:9/v1").speculative_forward is False