"""The command line: commands, help, settings precedence, plugin commands."""

from __future__ import annotations

import argparse
import functools
import re
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from evaluation.engine_sim.cli import register, settings_from_args
from proxy.cli import build_parser, main
from proxy.flags import settings_overrides
from proxy.settings import ProxySettings, load_settings
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

README = Path(__file__).resolve().parents[2] / "README.md"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _all_flags(parser: argparse.ArgumentParser) -> set[str]:
    """A command's flags, with those of its own subcommands (``semcache eval pairs --compare``)."""
    flags = {o for a in parser._actions for o in a.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                flags |= _all_flags(child)
    return flags


def _leaf_fields(model, prefix: str = ""):
    """(dest, env variable) of every setting, nested models flattened as the flags and env are."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _leaf_fields(field.annotation, prefix + name + "__")
        else:
            yield prefix + name, f"SEMCACHE_{prefix}{name}".upper()


def test_every_setting_is_a_serve_flag_showing_its_env_variable():
    """Regression (#13 item 11): --coalesce, --max-body-bytes, ... were settings without a flag."""
    serve = _subcommands(build_parser())["serve"]
    actions = {a.dest: a for a in serve._actions}
    help_text = serve.format_help()
    for dest, env in _leaf_fields(ProxySettings):
        assert dest in actions, f"setting {dest} has no flag"
        assert env in " ".join(help_text.split()), f"--help does not name {env}"


def test_the_flags_the_issue_names_reach_the_settings(monkeypatch):
    monkeypatch.setenv("SEMCACHE_EMBEDDER__LRU_SIZE", "7")  # env still fills what the flags leave out
    args = build_parser().parse_args(
        ["serve", "--no-coalesce", "--max-body-bytes", "2048", "--speculative-forward", "true",
         "--upstream-read-timeout", "5", "--no-verify-keys", "--embedder-backend", "onnx-fp32",
         "--upstream", "http://a:1/v1", "--upstream", "big=http://b:2/v1", "--persist-policy-reloads"])
    s = load_settings(settings_overrides(args, ProxySettings))
    assert (s.coalesce, s.max_body_bytes, s.speculative_forward, s.upstream_read_timeout, s.verify_keys) == (
        False, 2048, True, 5.0, False)
    assert (s.embedder.backend, s.embedder.lru_size, s.persist_policy_reloads) == ("onnx-fp32", 7, True)
    assert s.upstreams == ["http://a:1/v1", "big=http://b:2/v1"]
    untouched = load_settings(settings_overrides(build_parser().parse_args(["serve"]), ProxySettings))
    assert "upstreams" not in untouched.model_fields_set and untouched.coalesce is True
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--speculative-forward", "maybe"])


def test_readme_settings_table_matches_the_settings_and_its_flags_exist():
    """Docs and code cannot drift: the Configuration table lists every setting and only settings,
    and every flag the README shows after `semcache COMMAND` is a flag of that command."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {name for cell in rows for name in re.findall(r"`(\w+)`", cell)}
    assert documented == set(ProxySettings.model_fields), "README's settings table and ProxySettings differ"

    commands = _subcommands(build_parser())
    flags_of = {name: _all_flags(p) for name, p in commands.items()}
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)  # fenced blocks are Python, not commands
    spans = re.findall(r"`([^`]+)`", prose) + re.findall(r"^ {4}(.+)$", prose, re.MULTILINE)
    checked = 0
    for span in spans:
        for m in re.finditer(r"\bsemcache ([a-z][\w-]*)([^#\n`]*(?:\n[^#\n`]*)*)", span):
            assert m[1] in commands, f"README shows a command that does not exist: semcache {m[1]}"
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", m[2].split(" semcache ")[0]):
                assert flag in flags_of[m[1]], f"README shows semcache {m[1]} {flag}: no such flag"
                checked += 1
        if span.startswith("--"):
            flag = span.split()[0]
            assert any(flag in flags for flags in flags_of.values()), f"README shows {flag}: no such flag"
            checked += 1
    assert checked >= 10  # the parse found the README's commands


def test_readme_header_table_lists_every_status():
    """Regression (#13 item 11): ``X-Semcache-Status: denied`` (tests/proxy/test_keycheck.py) was missing."""
    rows = [line for line in README.read_text(encoding="utf-8").splitlines()
            if line.startswith("| `X-Semcache-Status")]
    documented = {s for row in rows for s in re.findall(r"`(\w+)`", row.split("|")[2])}
    assert {"hit", "miss", "bypass", "denied"} <= documented and any(": ic`" in row for row in rows)


def _strategy(annotation):
    """Values of one scalar setting type (None for the types this property leaves to the tests above)."""
    import typing

    from hypothesis import strategies as st

    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    literals = [v for a in args if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)]
    others = [a for a in args if typing.get_origin(a) is not typing.Literal]
    simple = {int: st.integers(0, 10**7), float: st.floats(0, 1e6, allow_nan=False).map(lambda x: round(x, 3)),
              bool: st.booleans(),
              # argparse (3.11) drops a value that is exactly "--": a quirk of the parser, not of the settings
              str: st.text("abcXYZ019_-./:", min_size=1, max_size=12).filter(lambda t: t != "--")}
    if not others:
        return st.sampled_from(literals)
    if len(others) == 1 and others[0] in simple:
        return st.one_of(simple[others[0]], *([st.sampled_from(literals)] if literals else []))
    return None


def _as_flag(flag: str, value) -> list[str]:
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [f"{flag}={value}"]  # '=' also for values that start with '-'


@functools.cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _scalar_settings() -> list[tuple[str, ...]]:
    """Paths (``("port",)``, ``("embedder", "lru_size")``) of the settings with a scalar type."""
    from gpu_embed.settings import EmbedderSettings

    top = [(n,) for n, f in ProxySettings.model_fields.items() if _strategy(f.annotation) is not None]
    return top + [("embedder", n) for n, f in EmbedderSettings.model_fields.items()
                  if _strategy(f.annotation) is not None]


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_any_scalar_setting_given_as_a_flag_comes_back_unchanged(data):
    """Property: for every scalar setting (nested ones too), ``--flag=VALUE`` yields that value."""
    from pydantic import ValidationError

    path = data.draw(st.sampled_from(_scalar_settings()))
    model = ProxySettings.model_fields["embedder"].annotation if len(path) == 2 else ProxySettings
    annotation = model.model_fields[path[-1]].annotation
    value = data.draw(_strategy(annotation))
    init = {path[0]: {path[1]: value}} if len(path) == 2 else {path[0]: value}
    try:
        built = ProxySettings(**init)
    except ValidationError:
        assume(False)
    expected = getattr(getattr(built, path[0]), path[1]) if len(path) == 2 else getattr(built, path[0])
    flag = "--" + "-".join(path).replace("_", "-")
    if isinstance(value, bool) and annotation is not bool:
        argv = [f"{flag}={str(value).lower()}"]  # bool | Literal settings take true/false as words
    else:
        argv = _as_flag(flag, value)
    got = load_settings(settings_overrides(_parser().parse_args(["serve", *argv]), ProxySettings))
    got_value = getattr(getattr(got, path[0]), path[1]) if len(path) == 2 else getattr(got, path[0])
    assert got_value == expected and path[0] in got.model_fields_set


def test_a_ctrl_c_dropped_during_the_start_is_still_noted():
    """A KeyboardInterrupt raised in a finalizer is printed and dropped by Python; the start checks the note."""
    import os
    import signal

    from proxy.cli import _noting_ctrl_c

    before = signal.getsignal(signal.SIGINT)
    with _noting_ctrl_c() as interrupted:
        assert not interrupted()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs at the next bytecode boundary
                pass
        except KeyboardInterrupt:
            pass  # as a finalizer would: reported, then dropped
        assert interrupted()
    assert signal.getsignal(signal.SIGINT) is before
