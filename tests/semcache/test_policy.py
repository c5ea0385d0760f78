"""Policy files: the shipped ones load; bad ones fail naming file, field and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from semcache import PolicyError, load_policies, load_policies_text

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "policies").glob("*.yaml") if p.stem != "iccache.example"))
def test_shipped_policies_load(name):
    policies = load_policies(REPO / "policies" / f"{name}.yaml")
    assert policies.names[-1] == "default"
    assert all(-1 <= p.threshold <= 1 for p in policies)


def test_defaults_merge_into_categories_and_nested_maps_merge():
    p = load_policies_text("""
defaults: {threshold: 0.8, guards: {entities: true}}
categories:
  a: {guards: {numbers: false}, match: {keywords: [x]}}
  default: {threshold: 0.95}
""")
    assert p["a"].threshold == 0.8 and p["default"].threshold == 0.95
    assert p["a"].guards.entities and not p["a"].guards.numbers and p["a"].guards.negation


@pytest.mark.parametrize("text,expected", [
    ("categories: {default: {threshold: 1.5}}", "categories.default.threshold: Input should be less than or equal to 1"),
    ("categories: {default: {treshold: 0.9}}", "categories.default.treshold: Extra inputs are not permitted"),
    ("categories: {default: {eviction: fifo}}", "categories.default.eviction: Input should be 'lru' or 'lfu'"),
    ("categories: {default: {quota: {max_entries: 0}}}", "categories.default.quota.max_entries"),
    ("categories: {code: {match: {patterns: ['(']}}, default: {}}", "categories.code.match.patterns"),
    ("categories: {code: {}}", "a 'default' category is required"),
    ("defaults: {ttl: 5}\ncategories: {default: {}}", "defaults.ttl: Extra inputs are not permitted"),
    ("categories: [a, b]", "categories: Input should be a valid dictionary"),
    ("just a string", "expected a mapping"),
    ("categories: {default: {threshold: [}", "invalid YAML"),
    ("categories: {'Bad Name': {}, default: {}}", "categories.Bad Name.name: String should match pattern"),
])
def test_bad_policy_names_field_and_problem(text, expected):
    with pytest.raises(PolicyError) as err:
        load_policies_text(text, source="bad.yaml")
    message = str(err.value)
    assert message.startswith("bad.yaml: ")
    assert expected in message


def test_unsafe_yaml_tags_are_rejected():
    with pytest.raises(PolicyError, match="invalid YAML"):
        load_policies_text("categories: !!python/object/apply:os.system ['echo pwned']")


def test_missing_file_is_a_policy_error(tmp_path):
    with pytest.raises(PolicyError, match="cannot read"):
        load_policies(tmp_path / "nope.yaml")


def test_default_category_is_evaluated_last():
    p = load_policies_text("categories: {default: {}, code: {match: {keywords: [x]}}}")
    assert p.names == ["code", "default"]
