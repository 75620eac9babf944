"""Text for two-stage reasoning (arXiv 2507.00214): the reasoning generator's prompt, the question a classification
example poses to it, and what is measured of the reasonings it writes (length, label leakage) and the optional
masking of label words. Pure Python.

Stage 1 teaches a model to write a reasoning R for a (question Q, answer A) pair; stage 2 asks it for R on every
training example (Q = the task and the input, A = the gold category's name), and the classifier learns Q -> R, A.
"""

from __future__ import annotations

import hashlib
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from strategies.example import Example, TaskCard
from strategies.prompts import Message

RGEN_INSTRUCTION = "Explain in one or two sentences why the answer is correct. Do not repeat the question."
RGEN_REVISION = 1  # bump when the reasoning generator's prompt is assembled differently


def rgen_format() -> str:
    """A fingerprint of the reasoning generator's prompt (part of R-Gen's and every reasoner's identity)."""
    return hashlib.sha256(f"{RGEN_REVISION}:{RGEN_INSTRUCTION}".encode()).hexdigest()[:12]
LABEL_MASK = "[label]"


@dataclass(frozen=True)
class ReasoningExample:
    """One (question, answer, reasoning) triple of a reasoning corpus; `where` is its file and line."""

    id: str
    where: str
    question: str
    answer: str
    reasoning: str


def rgen_messages(question: str, answer: str) -> list[Message]:
    """The reasoning generator's prompt: the question and its known answer; the completion is the reasoning."""
    content = f"Question: {question.strip()}\nAnswer: {answer.strip()}\n\n{RGEN_INSTRUCTION}"
    return [{"role": "user", "content": content}]


def classification_question(card: TaskCard, example: Example) -> str:
    """What a classification example asks, as R-Gen sees it: the task and the input."""
    return f"{card.task}\n{card.input_name}: {example.text}"


def category_name(card: TaskCard, label: str) -> str:
    """The readable name of a stored label value (the answer R-Gen is told)."""
    return next(c.name for c in card.categories if c.value == label)


def _word(name: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(name)}(?!\w)", re.IGNORECASE)


def states_label(reasoning: str, name: str) -> bool:
    """The reasoning names the label verbatim (case-insensitive, as a whole word): the answer leaks into R."""
    return bool(_word(name).search(reasoning))


def mask_label_words(reasoning: str, names: Sequence[str]) -> str:
    """Every category name in the reasoning replaced by LABEL_MASK (longest names first, so 'very happy' goes
    before 'happy'), so that R argues from the input without handing the classifier its answer."""
    for name in sorted(names, key=len, reverse=True):
        reasoning = _word(name).sub(LABEL_MASK, reasoning)
    return reasoning


def reasoning_stats(reasonings: Sequence[str], gold_names: Sequence[str]) -> dict[str, float]:
    """Length distribution (words) of the reasonings, the empty rate, and the leakage rate (R names its gold)."""
    lengths = sorted(len(r.split()) for r in reasonings)
    n = len(lengths)
    if not n:
        return {}
    return {
        "n": float(n),
        "words_mean": statistics.fmean(lengths),
        "words_p10": float(lengths[int(0.1 * (n - 1))]),
        "words_p50": float(statistics.median(lengths)),
        "words_p90": float(lengths[int(0.9 * (n - 1))]),
        "words_max": float(lengths[-1]),
        "empty_rate": sum(length == 0 for length in lengths) / n,
        "leakage_rate": sum(states_label(r, g) for r, g in zip(reasonings, gold_names)) / n,
    }
