"""Decoding: each registered `decoding` value turns prompts into predictions through the `Predictor` method its
registration names (strategies/decoding.py), with the registered `ppl_norm` and `calibration` values deciding among
candidate scores."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property, partial

import numpy as np
from transformers import set_seed

from runners.batching import Batching
from runners.inference import OnProgress, PrefixCaches, candidate_ids, generate, prompt_text, score_candidates
from runners.models import LoadedModel
from runners.phases import Phases
from strategies.example import Example
from strategies.lookup import entry
from strategies.prompts import PromptBuilder
from strategies.scoring import CALIBRATIONS


@dataclass(frozen=True)
class Prediction:
    """What the model answered for one example: a label value, UNCERTAIN or INVALID, plus the evidence."""

    label: str
    raw_output: str
    candidate_scores: str  # JSON {answer: score} under ppl decoding (as the model gives them), "" otherwise
    prompt_tokens: int
    calibrated_scores: str = ""  # JSON {answer: score} after calibration (what the prediction took), "" without


@dataclass(frozen=True)
class DecodeSettings:
    """How to decode: the rows and tokens per forward pass, the longest completion, the seed."""

    batching: Batching
    max_new_tokens: int
    seed: int


def answer_budget(lm: LoadedModel, builder: PromptBuilder) -> int:
    """The most tokens a label-only answer needs: the longest candidate (with its end of turn) after a restatement
    of the task ("The emotion expressed in the tweet is sadness." is how a small model answers "Classify the
    emotion expressed..."): tokens past this cannot make an answer the parser would read differently."""
    longest = max(len(c) for c in candidate_ids(lm, builder.candidates()))
    return longest + len(lm.tokenizer(builder.card.task, add_special_tokens=False).input_ids)


def _scores_json(answers: Sequence[str], row: np.ndarray) -> str:
    return json.dumps({a: round(float(s), 5) for a, s in zip(answers, row)}, ensure_ascii=False)


class Predictor:
    """Predictions of one run (model, prompt builder, settings), asked for in as many chunks as the caller likes:
    what does not depend on the input (the calibration's reference scores) is computed once, on first need.

    A calibration whose reference is the run's own scores (`batch`) decides each chunk against every score of the
    run so far, this chunk's included; `so_far()` decides every prediction made again against all of them, so after
    the last chunk the run's predictions are what one call on all its examples would have given."""

    def __init__(self, lm: LoadedModel, builder: PromptBuilder, settings: DecodeSettings,
                 phases: Phases | None = None) -> None:
        self.lm, self.builder, self.settings = lm, builder, settings
        self.phases = phases or Phases()  # where the run's time goes
        self.prefixes = PrefixCaches()  # the shared prefix, computed once for every chunk that shares it
        self.decode = partial(builder.strategy.decoding_method.decode.resolve(), self)
        self.calibration = entry(CALIBRATIONS, builder.strategy.calibration, "calibration")  # "none" off ppl
        self._made: list[Prediction] = []  # every prediction of the run, in the order asked for
        self._scored: list[np.ndarray] = []  # their raw candidate scores, a [chunk, K] array per chunk (from_run)

    def __call__(self, examples: Sequence[Example], on_progress: OnProgress = lambda n: None) -> list[Prediction]:
        """Predictions for `examples` under the builder's strategy, in input order (seeded from the spec)."""
        set_seed(self.settings.seed)
        with self.phases("retrieval"):
            demos = self.builder.select_demos(examples)
        with self.phases("prompts"):
            prompts = [prompt_text(self.lm, self.builder.messages(e, d)) for e, d in zip(examples, demos)]
        with self.phases("tokenise"):
            lengths = [len(ids) for ids in self.lm.tokenizer(prompts, add_special_tokens=False).input_ids]
        made = [replace(p, prompt_tokens=n) for p, n in zip(self.decode(prompts, on_progress), lengths)]
        self._made += made
        return made

    def so_far(self) -> list[Prediction]:
        """Every prediction of the run so far, in the order asked for, as the run decides it now: under a calibration
        from the run's own scores, each against every score so far; otherwise as it was made."""
        if not self.calibration.from_run or not self._made:
            return list(self._made)
        with self.phases("calibrate"):
            raw = np.concatenate(self._scored)
            calibrated = self.calibration.adjust(raw, raw)
        reasoned = self.builder.strategy.reasoning == "on"
        return [replace(self._decided(r, c, p.raw_output if reasoned else None), prompt_tokens=p.prompt_tokens)
                for p, r, c in zip(self._made, raw, calibrated)]

    def by_generation(self, prompts: list[str], on_progress: OnProgress) -> list[Prediction]:
        """Generate an answer after each prompt (no longer than a label-only answer needs, unless it reasons first)
        and parse the label from it."""
        builder, settings = self.builder, self.settings
        limit = settings.max_new_tokens if builder.strategy.reasoning == "on" else \
            min(settings.max_new_tokens, answer_budget(self.lm, builder))
        outputs = generate(self.lm, prompts, limit, settings.batching, on_progress, self.phases, self.prefixes)
        return [Prediction(builder.parse(text), text, "", 0) for text in outputs]

    @cached_property
    def reference(self) -> np.ndarray:
        """The calibration's reference prompts' scores ([m, candidates]; no rows without calibration)."""
        messages = self.calibration.reference_prompts(self.builder)
        if not messages:
            return np.zeros((0, len(self.builder.answers)))
        with self.phases("prompts"):
            prompts = [prompt_text(self.lm, m) for m in messages]
        scores = score_candidates(self.lm, prompts, self.builder.candidates(), self.settings.batching,
                                  phases=self.phases)
        return scores.normalised(self.builder.strategy.ppl_norm)

    def by_candidate_scores(self, prompts: list[str], on_progress: OnProgress) -> list[Prediction]:
        """Score every candidate completion after the prompt; with reasoning on, first generate the reasoning and
        score each `Answer: <label>` after it (the raw output is then the generated text)."""
        builder, settings = self.builder, self.settings
        outputs = None
        if builder.strategy.reasoning == "on":
            outputs = generate(self.lm, prompts, settings.max_new_tokens, settings.batching, on_progress, self.phases,
                               self.prefixes)
            prompts = [p + f"{r}\n" if (r := builder.reasoning_of(text)) else p for p, text in zip(prompts, outputs)]
            on_progress = lambda n: None  # noqa: E731 - progress was reported while generating
        scores = score_candidates(self.lm, prompts, builder.candidates(), settings.batching, on_progress,
                                  self.phases, self.prefixes)
        raw = scores.normalised(builder.strategy.ppl_norm)
        if self.calibration.from_run:
            self._scored.append(raw)
        reference = np.concatenate(self._scored) if self.calibration.from_run else self.reference
        with self.phases("calibrate"):
            calibrated = self.calibration.adjust(raw, reference) if len(reference) else [None] * len(raw)
        return [self._decided(r, c, outputs[i] if outputs else None) for i, (r, c) in enumerate(zip(raw, calibrated))]

    def _decided(self, raw: np.ndarray, calibrated: np.ndarray | None, output: str | None) -> Prediction:
        """One example's prediction from its candidate scores (the calibrated ones decide, where there are any); the
        raw output is the generated text when there is one (`output`), else the chosen answer."""
        answers = self.builder.answers
        best = answers[int((raw if calibrated is None else calibrated).argmax())]
        return Prediction(self.builder.label_of_answer(best), best if output is None else output,
                          _scores_json(answers, raw), 0,
                          "" if calibrated is None else _scores_json(answers, calibrated))
