"""The built-in int8-vs-fp32 check that gates ``backend="auto"``.

It embeds a fixed set of 64 varied sentences (questions, commands, code, long
and short, several languages) with both precisions and compares them row by
row. It is fast (well under a second) and runs once, when the int8 model is
exported; the verdict is stored next to the model. The full check on labelled
pair data is :mod:`gpu_embed.quality`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from pydantic import BaseModel

# Pass when the average probe vector keeps cosine >= MEAN_COSINE with its fp32
# twin and none falls below MIN_COSINE. Measured on MiniLM (AVX-512 VNNI,
# per-channel weights): mean 0.993, min 0.963 (on "ok thanks": very short
# inputs move most); a broken recipe (per-tensor weights, or 7-bit weights on
# this CPU) gives mean 0.97 / 0.90 and min 0.93 / 0.80 and fails. The verdict
# on labelled pairs is the job of gpu_embed.quality.
MIN_COSINE = 0.95
MEAN_COSINE = 0.99

PROBE_SENTENCES: tuple[str, ...] = (
    "How do I reset my password?",
    "What is the capital of Australia?",
    "Write a haiku about autumn leaves.",
    "Explain quantum entanglement to a ten-year-old.",
    "Translate 'good morning' into Spanish.",
    "What's the difference between a list and a tuple in Python?",
    "def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "SELECT name, COUNT(*) FROM orders GROUP BY name HAVING COUNT(*) > 3;",
    "My order #48213 hasn't arrived yet, can you check the status?",
    "I want to cancel my subscription.",
    "Is it safe to eat raw cookie dough?",
    "Summarise the plot of Hamlet in two sentences.",
    "Why is the sky blue?",
    "How many calories are in a banana?",
    "Recommend a good science fiction novel.",
    "What are the symptoms of vitamin D deficiency?",
    "How does a transformer neural network work?",
    "Give me a recipe for vegan lasagna.",
    "hi",
    "ok thanks",
    "?",
    "The quick brown fox jumps over the lazy dog.",
    "Can you help me write a cover letter for a data analyst position?",
    "What is 17 times 23?",
    "Solve for x: 3x + 7 = 22.",
    "Who won the FIFA World Cup in 2018?",
    "How do I center a div in CSS?",
    "What's the best way to learn a new language as an adult?",
    "Describe the water cycle.",
    "List five uses of baking soda around the house.",
    "Wie spät ist es in Tokio?",
    "Quelle est la meilleure façon de cuire des pâtes ?",
    "¿Cuál es la montaña más alta del mundo?",
    "東京の人口は何人ですか？",
    "What does HTTP status code 503 mean?",
    "git rebase vs git merge: which should I use?",
    "Convert 100 degrees Fahrenheit to Celsius.",
    "Write a limerick about a cat who loves lasagna.",
    "What are the main causes of inflation?",
    "How do vaccines train the immune system?",
    "Tell me a joke about programmers.",
    "What's the weather usually like in Lisbon in March?",
    "How can I improve my sleep quality?",
    "Explain the difference between TCP and UDP.",
    "What is the time complexity of quicksort in the worst case?",
    "Draft a polite email declining a meeting invitation.",
    "Which is heavier, a kilogram of feathers or a kilogram of steel?",
    "Who painted the Mona Lisa?",
    "How do I make my houseplants grow faster?",
    "What is the meaning of life, the universe and everything?",
    "Refund request: the item arrived broken and the box was crushed.",
    "Generate a list of names for a coffee shop.",
    "Is coffee bad for your heart?",
    "How do I install numpy on Windows?",
    "Why does my Python script raise KeyError when reading the config?",
    "Compare the economies of Germany and Japan after 1945.",
    "In the following passage, identify the main argument and any logical "
    "fallacies the author commits, then suggest how the argument could be "
    "strengthened with evidence from peer-reviewed research.",
    "You are a helpful assistant. Answer concisely. Question: what is the boiling "
    "point of water at the top of Mount Everest?",
    "A train leaves Chicago at 3 pm travelling at 60 mph; another leaves New York "
    "at 4 pm at 80 mph. When do they meet?",
    "Rewrite this sentence in the passive voice: the committee approved the budget.",
    "What are good stretches for lower back pain?",
    "How long should I boil an egg for a runny yolk?",
    "Can dogs eat grapes?",
    "What is the population of Canada?",
)
assert len(PROBE_SENTENCES) == 64


class ProbeVerdict(BaseModel):
    """Result of the built-in check; stored as JSON next to the int8 model."""

    passed: bool
    min_cosine: float
    mean_cosine: float
    sentences: int
    min_required: float = MIN_COSINE
    mean_required: float = MEAN_COSINE


def run_probe(
    reference: Callable[[Sequence[str]], np.ndarray],
    candidate: Callable[[Sequence[str]], np.ndarray],
    sentences: Sequence[str] = PROBE_SENTENCES,
) -> ProbeVerdict:
    """Compare ``candidate`` rows with ``reference`` rows (both unit vectors)."""
    ref = np.asarray(reference(sentences), dtype=np.float32)
    cand = np.asarray(candidate(sentences), dtype=np.float32)
    cos = np.sum(ref * cand, axis=1)
    min_cos, mean_cos = float(cos.min()), float(cos.mean())
    return ProbeVerdict(
        passed=bool(min_cos >= MIN_COSINE and mean_cos >= MEAN_COSINE),
        min_cosine=min_cos,
        mean_cosine=mean_cos,
        sentences=len(sentences),
    )
