"""The serve-time answer check: does a small answer follow the examples it was shown?"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from semcache.iccache.config import SelectionConfig
from semcache.iccache.quality import follows_examples


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_the_closest_example_answer_counts():
    answer = unit(1, 0, 0)
    examples = np.stack([unit(0, 1, 0), unit(1, 1, 0)])
    assert follows_examples(answer, examples) == pytest.approx(float(unit(1, 1, 0)[0]))
    assert follows_examples(answer, np.stack([unit(1, 0, 0)])) == pytest.approx(1.0)


def test_no_examples_scores_below_any_threshold():
    assert follows_examples(unit(1, 0), np.zeros((0, 2), dtype=np.float32)) == -1.0


def test_the_threshold_is_off_by_default_and_validated():
    assert SelectionConfig().min_answer_agreement is None
    assert SelectionConfig(min_answer_agreement=0.75).min_answer_agreement == 0.75
    with pytest.raises(ValidationError):
        SelectionConfig(min_answer_agreement=1.5)


# ---------------------------------------------------------------- calibration (AnswerCheck)
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from semcache.iccache.answer_check import NEVER, AnswerCheck  # noqa: E402


def _fill(check: AnswerCheck, n: int, seed: int = 0, bad_above: float = 0.03, bad_below: float = 0.6) -> None:
    """Scores uniform in [0.3, 1]; answers above 0.7 rarely disagree, below often."""
    rng = np.random.default_rng(seed)
    for s in rng.uniform(0.3, 1.0, n):
        bad = rng.random() < (bad_above if s >= 0.7 else bad_below)
        check.record("support", float(s), not bad)


def test_without_a_target_the_configured_threshold_applies():
    check = AnswerCheck()
    _fill(check, 500)
    assert check.threshold("support", SelectionConfig(min_answer_agreement=0.75)) == 0.75
    assert check.threshold("support", SelectionConfig()) is None
    assert not check.wants_score(SelectionConfig())
    assert check.wants_score(SelectionConfig(answer_check_max_bad=0.1))


def test_the_calibrated_threshold_meets_the_target_and_respects_the_floor():
    check = AnswerCheck(recalibrate_every=1)
    config = SelectionConfig(answer_check_max_bad=0.1, answer_check_min_samples=100)
    _fill(check, 99)
    assert check.threshold("support", config) is None  # too few samples: the configured value (off)
    _fill(check, 1500, seed=1)
    t = check.threshold("support", config)
    assert 0.55 < t < 0.75  # loosens into the mixed zone only as far as the target allows
    state = check.state("support", config)
    assert state.point.upper_bound <= 0.1 and state.samples == 1599
    floored = SelectionConfig(answer_check_max_bad=0.1, answer_check_min_samples=100, min_answer_agreement=0.8)
    assert check.threshold("support", floored) >= 0.8
    assert check.threshold("other", config) is None  # per category


def test_a_category_whose_small_answers_keep_disagreeing_stops_serving_them():
    check = AnswerCheck()
    config = SelectionConfig(answer_check_max_bad=0.1, answer_check_min_samples=20)
    for s in np.linspace(0.3, 1.0, 40):
        check.record("support", float(s), False)
    assert check.threshold("support", config) == NEVER


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), target=st.sampled_from([0.05, 0.1, 0.2]))
def test_on_its_own_samples_the_served_bad_rate_is_below_the_target(seed, target):
    check = AnswerCheck(recalibrate_every=1)
    _fill(check, 800, seed=seed, bad_above=0.02, bad_below=0.5)
    config = SelectionConfig(answer_check_max_bad=target, answer_check_min_samples=50)
    t = check.threshold("support", config)
    point = check.state("support", config).point
    if t == NEVER:
        assert point.value is None
        return
    assert point.upper_bound <= target and point.estimated_rate <= target
