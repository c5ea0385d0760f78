"""Cost-aware replay: refine the example bank offline, in idle time, within a token budget.

Two passes:

1. **Re-validate or regenerate.** Unvalidated examples first, then the
   lowest-utility ones (below ``low_utility``), are asked of the large model
   again while the token budget lasts. If the new answer agrees with the
   stored one (``compare`` >= ``keep_agreement``) the example is marked
   validated; otherwise its answer is replaced by the new one and its
   statistics restart (they described the old answer).
2. **Evict.** Examples with at least ``evict_min_scored`` scored uses whose
   utility per KB stays below ``evict_utility_per_kb`` are removed: they cost
   context and memory without helping. Examples not yet judged are kept.

Nothing else changes: validated, useful examples are neither re-asked nor
evicted. The large model and the comparison are callables, so the library
stays free of HTTP and of any particular embedder.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from semcache.iccache.bank import Example, ExampleBank


class ReplayConfig(BaseModel):
    """Budget and thresholds of one replay run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_budget: int = Field(default=50_000, ge=0)
    """Large-model tokens (question + answer of each re-asked example) this run may spend."""
    low_utility: float = Field(default=0.5, ge=0, le=1)
    keep_agreement: float = Field(default=0.8, ge=0, le=1)
    evict_min_scored: int = Field(default=5, ge=1)
    evict_utility_per_kb: float = Field(default=0.1, ge=0)


@dataclass(slots=True)
class ReplayReport:
    validated: list[str] = field(default_factory=list)
    regenerated: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    tokens_spent: int = 0


def _due(example: Example, config: ReplayConfig) -> bool:
    return not example.validated or example.utility() < config.low_utility


async def replay_examples(
    bank: ExampleBank,
    ask_large: Callable[[Example], Awaitable[str]],
    compare: Callable[[str, str], Awaitable[float]],
    config: ReplayConfig,
) -> ReplayReport:
    """Run both passes once over ``bank`` (see the module docstring)."""
    report = ReplayReport()
    # Unvalidated before validated-but-weak; within each, weakest first; id breaks ties.
    due = sorted((ex for ex in bank if _due(ex, config)), key=lambda e: (e.validated, e.utility(), e.id))
    for ex in due:
        if report.tokens_spent + ex.tokens > config.token_budget:
            continue  # a smaller example later may still fit
        answer = await ask_large(ex)
        report.tokens_spent += ex.tokens
        if await compare(ex.answer, answer) >= config.keep_agreement:
            ex.validated = True
            report.validated.append(ex.id)
        else:
            ex.tokens = bank.count_tokens(ex.question) + bank.count_tokens(answer)
            ex.answer, ex.validated = answer, True
            ex.uses = ex.scored = ex.accepted = 0
            ex.score_sum = 0.0
            report.regenerated.append(ex.id)
    for ex in bank:
        if ex.id in report.regenerated or ex.scored < config.evict_min_scored:
            continue
        if ex.utility() / (ex.size_bytes / 1024) < config.evict_utility_per_kb:
            bank.remove(ex.id)
            report.evicted.append(ex.id)
    return report
