"""GenCLS++'s uncertain label: score each training example's gold label with a scorer model's zero-shot candidate
probabilities, and relabel the least confident fraction as "uncertain" in the SFT data."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from runners.batching import Batching
from runners.inference import prompt_text, score_candidates
from runners.models import LoadedModel
from strategies.example import Example, TaskCard
from strategies.prompts import UNCERTAIN, PromptBuilder
from strategies.registry import Strategy


def gold_confidence(lm: LoadedModel, card: TaskCard, examples: Sequence[Example], batching: Batching) -> list[float]:
    """P(gold | prompt) among the candidate labels (softmax of total log-likelihoods) under the zero-shot prompt."""
    builder = PromptBuilder(card, Strategy(decoding="ppl"), [], 0)
    prompts = [prompt_text(lm, builder.messages(e)) for e in examples]
    scores = score_candidates(lm, prompts, builder.candidates(), batching).logprob_sum
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    gold = [builder.answers.index(builder.completion(e.label)) for e in examples]
    return [float(probs[i, g]) for i, g in enumerate(gold)]


def uncertain_labels(examples: Sequence[Example], confidence: Sequence[float], fraction: float) -> list[str]:
    """The gold labels, with the ceil(fraction x n) least confident examples (ties: by id) set to UNCERTAIN."""
    n = math.ceil(fraction * len(examples))
    order = sorted(range(len(examples)), key=lambda i: (confidence[i], examples[i].id))
    relabelled = set(order[:n])
    return [UNCERTAIN if i in relabelled else e.label for i, e in enumerate(examples)]
