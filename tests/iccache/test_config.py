"""Config validation and the library boundary (no HTTP libraries in semcache.iccache)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from semcache.iccache import ICCacheConfig, SelectionConfig
from tests.iccache.helpers import config


def test_typos_and_missing_roles_are_errors():
    with pytest.raises(ValidationError, match="max_exampels"):
        SelectionConfig.model_validate({"max_exampels": 3})
    with pytest.raises(ValidationError, match="exactly one model"):
        ICCacheConfig.model_validate({"models": [{"name": "a", "role": "large"}]})


def test_categories_override_the_default_selection():
    cfg = config(categories={"code": {"enabled": False}}, selection={"max_examples": 4})
    assert cfg.selection_for("code").enabled is False
    assert cfg.selection_for("other").max_examples == 4
    assert cfg.role_of("big") == "large" and cfg.role_of("nope") is None


def test_the_library_imports_no_http_framework():
    code = "import sys, semcache.iccache; print(sorted(m for m in ('fastapi', 'httpx', 'starlette') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_shipped_example_config_loads_and_errors_name_the_field(tmp_path):
    from pathlib import Path

    from semcache.errors import ConfigError
    from semcache.iccache import load_iccache_config

    example = Path(__file__).resolve().parents[2] / "policies" / "iccache.example.yaml"
    config = load_iccache_config(example)
    assert config.model("large").name == "large" and not config.selection_for("code").enabled
    bad = tmp_path / "bad.yaml"
    bad.write_text(example.read_text().replace("max_examples: 3", "max_exemples: 3"))
    with pytest.raises(ConfigError, match=r"bad.yaml.*selection.max_exemples"):
        load_iccache_config(bad)
