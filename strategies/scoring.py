"""How candidate log-likelihoods become a decision under perplexity decoding: the length normalisation
(`ppl_norm`) and the calibration against content-free prompts (`calibration`). Each value is one registration
carrying its behaviour; numpy only, so the registry stays free of torch.

Calibration (both cited in docs/grids.md):
- `contextual`, Zhao et al. 2021, "Calibrate Before Use": the label distribution the model gives content-free
  inputs ("N/A", "", "[MASK]" in the input's place, the same instructions and demos) estimates its label bias;
  each prediction's label probabilities are divided by it: log p(label | x) - log mean_cf p(label | cf).
- `pmi`, Holtzman et al. 2021, "Surface Form Competition": domain-conditional PMI, the candidate's log-likelihood
  after the prompt minus its log-likelihood after the domain premise alone (the answer marker, "Answer:"), so a
  label the model likes to say anywhere gains nothing for it.
The reference prompts do not depend on the input, so they are scored once per run, not once per example.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _contextual_inputs(builder: PromptBuilder) -> list[list[Message]]:
    return [builder.messages(Example(f"content-free-{i}", text, "")) for i, text in enumerate(CONTENT_FREE_INPUTS)]


def _contextual(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    bias = np.exp(_log_softmax(reference)).mean(axis=0)  # the label distribution of a content-free input
    return _log_softmax(scores) - np.log(bias)[None, :]


def _premise(builder: PromptBuilder) -> list[list[Message]]:
    return [[{"role": "user", "content": builder.template.answer_marker}]]


@dataclass(frozen=True)
class Calibration:
    """A calibration of candidate scores: the reference prompts it scores once per run (chat messages built from
    the run's prompt builder) and how the reference adjusts every example's scores ([n, K], [m, K] -> [n, K])."""

    doc: str
    reference_prompts: Callable[[PromptBuilder], list[list[Message]]]
    adjust: Callable[[np.ndarray, np.ndarray], np.ndarray]
    tag: str = ""


CALIBRATIONS: dict[str, Calibration] = {
    "none": Calibration("the scores as the model gives them", lambda builder: [], lambda scores, reference: scores),
    "contextual": Calibration(
        "contextual calibration (Zhao et al. 2021): divide each label's probability by its mean probability for the "
        "content-free inputs 'N/A', '' and '[MASK]' under the same prompt", _contextual_inputs, _contextual, "cc"),
    "pmi": Calibration(
        "domain-conditional PMI (Holtzman et al. 2021): subtract each label's score after the domain premise alone "
        "(the answer marker, 'Answer:')", _premise, lambda scores, reference: scores - reference[0][None, :], "pmi"),
}
