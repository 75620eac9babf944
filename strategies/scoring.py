"""How candidate log-likelihoods become a decision under perplexity decoding: the length normalisation
(`ppl_norm`) and the calibration against label bias (`calibration`). Each value is one registration carrying its
behaviour; numpy only, so the registry stays free of torch.

Calibration (all cited in docs/grids.md):
- `contextual`, Zhao et al. 2021, "Calibrate Before Use": the label distribution the model gives content-free
  inputs ("N/A", "", "[MASK]" in the input's place, the same instructions and demos) estimates its label bias;
  each prediction's label probabilities are divided by it: log p(label | x) - log mean_cf p(label | cf).
- `domain`, Fei et al. 2023, "Mitigating Label Biases for In-context Learning": the same division, but the
  content-free inputs are random in-domain words: DOMAIN_DRAWS texts of words drawn from the demonstration pool,
  each as long as the pool's mean text, seeded from the run, so the estimate carries the domain's label bias too.
- `pmi`, Holtzman et al. 2021, "Surface Form Competition": domain-conditional PMI, the candidate's log-likelihood
  after the prompt minus its log-likelihood after the domain premise alone (the answer marker, "Answer:"), so a
  label the model likes to say anywhere gains nothing for it.
- `batch`, Zhou et al. 2024, "Batch Calibration": no reference prompt; the label bias is the mean, over the
  evaluation set, of each label's log-probability, subtracted from every example's: log p(label | x) -
  mean_x' log p(label | x'). Its reference is the run's own scores, so it is decided once they are in (see
  runners/predict.py for a run predicted in rounds).
Reference prompts do not depend on the input, so they are scored once per run, not once per example.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from strategies.example import Example

if TYPE_CHECKING:
    from strategies.prompts import Message, PromptBuilder


@dataclass(frozen=True)
class PplNorm:
    """A length normalisation: (summed log-likelihoods [prompts, candidates], candidate lengths) -> scores."""

    doc: str
    normalise: Callable[[np.ndarray, np.ndarray], np.ndarray]
    tag: str = ""


PPL_NORMS: dict[str, PplNorm] = {
    "mean": PplNorm("mean log-likelihood per token (= lowest perplexity); the default, fair to long labels",
                    lambda total, lengths: total / lengths[None, :]),
    "sum": PplNorm("total log-likelihood (favours short labels)", lambda total, lengths: total, "sum"),
}

CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")  # Zhao et al. 2021's content-free inputs, averaged
DOMAIN_DRAWS = 20  # Fei et al. 2023 average over 20 random in-domain texts
_CJK = "\u3400-\u9fff\uf900-\ufaff"
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")  # a CJK character (no spaces between words), or a spaced word
_CJK_CHARACTER = re.compile(rf"[{_CJK}]")


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _contextual_inputs(builder: PromptBuilder) -> list[list[Message]]:
    return [builder.messages(Example(f"content-free-{i}", text, "")) for i, text in enumerate(CONTENT_FREE_INPUTS)]


def _contextual(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    bias = np.exp(_log_softmax(reference)).mean(axis=0)  # the label distribution of a content-free input
    return _log_softmax(scores) - np.log(bias)[None, :]


def _joined(words: Sequence[str]) -> str:
    """Words as text: spaced, but CJK characters side by side, as the language writes them."""
    text = words[0]
    for before, word in zip(words, words[1:]):
        text += ("" if _CJK_CHARACTER.fullmatch(before) and _CJK_CHARACTER.fullmatch(word) else " ") + word
    return text


def domain_texts(pool: Sequence[Example], seed: int, draws: int = DOMAIN_DRAWS) -> list[str]:
    """Fei et al.'s random in-domain texts: `draws` texts of words drawn at random from the pool's texts (as often
    as they occur there), each as many words as the pool's mean text, seeded by `seed`."""
    words = [w for e in pool for w in _WORD.findall(e.text)]
    if not words:
        raise ValueError("domain calibration draws its words from the demonstration pool, which has no text")
    length = max(1, round(len(words) / len(pool)))
    rng = random.Random(f"domain:{seed}")
    return [_joined(rng.choices(words, k=length)) for _ in range(draws)]


def _domain_inputs(builder: PromptBuilder) -> list[list[Message]]:
    texts = domain_texts(builder.pool, builder.seed)
    return [builder.messages(Example(f"domain-{i}", text, "")) for i, text in enumerate(texts)]


def _batch(scores: np.ndarray, run: np.ndarray) -> np.ndarray:
    """Each label's mean log-probability over the run's examples (`run`, [m, K]) subtracted from every example's."""
    return _log_softmax(scores) - _log_softmax(run).mean(axis=0)[None, :]


def _premise(builder: PromptBuilder) -> list[list[Message]]:
    return [[{"role": "user", "content": builder.template.answer_marker}]]


@dataclass(frozen=True)
class Calibration:
    """A calibration of candidate scores: the reference prompts it scores once per run (chat messages built from
    the run's prompt builder) and how the reference adjusts every example's scores ([n, K], [m, K] -> [n, K]).
    `from_run`: the reference is instead the run's own scores (every example scored so far), so predictions made in
    rounds are decided again once more are in. `seeded`: the run's seed changes the reference prompts."""

    doc: str
    reference_prompts: Callable[[PromptBuilder], list[list[Message]]]
    adjust: Callable[[np.ndarray, np.ndarray], np.ndarray]
    tag: str = ""
    from_run: bool = False
    seeded: bool = False


CALIBRATIONS: dict[str, Calibration] = {
    "none": Calibration("the scores as the model gives them", lambda builder: [], lambda scores, reference: scores),
    "contextual": Calibration(
        "contextual calibration (Zhao et al. 2021): divide each label's probability by its mean probability for the "
        "content-free inputs 'N/A', '' and '[MASK]' under the same prompt", _contextual_inputs, _contextual, "cc"),
    "pmi": Calibration(
        "domain-conditional PMI (Holtzman et al. 2021): subtract each label's score after the domain premise alone "
        "(the answer marker, 'Answer:')", _premise, lambda scores, reference: scores - reference[0][None, :], "pmi"),
    "batch": Calibration(
        "batch calibration (Zhou et al. 2024): subtract each label's mean log-probability over the evaluation set "
        "(over what is scored so far while a search's rounds run)", lambda builder: [], _batch, "bc", from_run=True),
    "domain": Calibration(
        f"domain-context calibration (Fei et al. 2023): as contextual, but the content-free inputs are {DOMAIN_DRAWS} "
        "texts of random words from the demonstration pool, each as long as its mean text (seeded)",
        _domain_inputs, _contextual, "dc", seeded=True),
}
