"""Decoding methods: each registered `decoding` value turns prompts into predictions."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transformers import set_seed

from runners.batching import Batching
from runners.inference import OnProgress, candidate_ids, generate, prompt_text, score_candidates
from runners.models import LoadedModel
from strategies.example import Example
from strategies.prompts import PromptBuilder


@dataclass(frozen=True)
class Prediction:
    """What the model answered for one example: a label value, UNCERTAIN or INVALID, plus the evidence."""

    label: str
    raw_output: str
    candidate_scores: str  # JSON {answer: score} under ppl decoding, "" otherwise
    prompt_tokens: int


@dataclass(frozen=True)
class DecodeSettings:
    """How to decode: the rows and tokens per forward pass, the longest completion, the seed."""

    batching: Batching
    max_new_tokens: int
    seed: int


Decoder = Callable[[LoadedModel, PromptBuilder, Sequence[str], DecodeSettings, OnProgress], list[tuple[str, str, str]]]


def answer_budget(lm: LoadedModel, builder: PromptBuilder) -> int:
    """The most tokens a label-only answer needs: the longest candidate (with its end of turn) after a restatement
    of the task ("The emotion expressed in the tweet is sadness." is how a small model answers "Classify the
    emotion expressed..."): tokens past this cannot make an answer the parser would read differently."""
    longest = max(len(c) for c in candidate_ids(lm, builder.candidates()))
    return longest + len(lm.tokenizer(builder.card.task, add_special_tokens=False).input_ids)


def _decode_generate(lm, builder, prompts, settings, on_progress):
    limit = settings.max_new_tokens if builder.strategy.reasoning == "on" else \
        min(settings.max_new_tokens, answer_budget(lm, builder))
    outputs = generate(lm, prompts, limit, settings.batching, on_progress)
    return [(builder.parse(text), text, "") for text in outputs]


def _decode_ppl(lm, builder, prompts, settings, on_progress):
    """Score every candidate completion after the prompt; with reasoning on, first generate the reasoning and score
    each `Answer: <label>` after it (the raw output is then the generated text)."""
    outputs = None
    if builder.strategy.reasoning == "on":
        outputs = generate(lm, prompts, settings.max_new_tokens, settings.batching, on_progress)
        reasonings = [builder.reasoning_of(text) for text in outputs]
        prompts = [p + f"{r}\n" if r else p for p, r in zip(prompts, reasonings)]
        on_progress = lambda n: None  # noqa: E731 - progress was reported while generating
    scores = score_candidates(lm, prompts, builder.candidates(), settings.batching, on_progress)
    table = scores.normalised(builder.strategy.ppl_norm)
    rows = []
    for i, row in enumerate(table):
        best = builder.answers[int(row.argmax())]
        evidence = json.dumps({a: round(float(s), 5) for a, s in zip(builder.answers, row)}, ensure_ascii=False)
        rows.append((builder.label_of_answer(best), outputs[i] if outputs else best, evidence))
    return rows


DECODERS: dict[str, Decoder] = {"generate": _decode_generate, "ppl": _decode_ppl}


def predict(lm: LoadedModel, builder: PromptBuilder, examples: Sequence[Example], settings: DecodeSettings,
            on_progress: OnProgress = lambda n: None) -> list[Prediction]:
    """Predictions for `examples` under the builder's strategy, in input order (seeded from the spec)."""
    set_seed(settings.seed)
    prompts = [prompt_text(lm, builder.messages(e)) for e in examples]
    lengths = [len(ids) for ids in lm.tokenizer(prompts, add_special_tokens=False).input_ids]
    decoded = DECODERS[builder.strategy.decoding](lm, builder, prompts, settings, on_progress)
    return [Prediction(label, raw, scores, n) for (label, raw, scores), n in zip(decoded, lengths)]
