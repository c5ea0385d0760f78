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
