"""The training dimensions: how a model is trained, and with which prompt strategy its training data is rendered.

A `TrainStrategy` is one point of the training space: `method` (SFT, SFT then RL, RL alone), `rl_algo`, and the
prompt dimensions that shape the training prompts (demos inside them, definitions, numeric labels, the uncertain
label, reasoning, the wording's template), and, for reasoning-on SFT, where the targets' reasonings come from.
Decoding is an inference-only choice, so it is not a training dimension. Pure Python.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from strategies.lookup import Implementation, entry
from strategies.registry import DIMENSIONS, Dimension, Strategy, Value, normalise, value_tags
from strategies.templates import DEFAULT_TEMPLATE


@dataclass(frozen=True)
class Advantages:
    """How an RL algorithm that runs on TRL's GRPOTrainer computes its advantages: the estimator, a tensor function
    `(AdvantageInputs) -> advantages`, and whether the KL penalty is folded into them (they then need the policy's
    and the reference's token log-probabilities) rather than added to the loss."""

    estimator: Implementation
    kl_in_reward: bool


@dataclass(frozen=True)
class RLAlgorithm:
    """A registered RL algorithm: its doc, the code that builds its TRL trainer, `(this registration, common TRL
    arguments, RLSettings, **trainer arguments) -> trainer`, and its advantages where it takes them from an
    estimator of ours."""

    doc: str
    trainer: Implementation
    advantages: Advantages | None = None


_ON_ESTIMATOR = Implementation("runners.rl:estimator_trainer")

RL_ALGOS: dict[str, RLAlgorithm] = {
    "grpo": RLAlgorithm(
        "GRPO: advantage = (reward - group mean) / group std over the completions of one prompt; KL as a loss",
        _ON_ESTIMATOR, Advantages(Implementation("runners.advantages:grpo"), kl_in_reward=False)),
    "reinforce_pp_baseline": RLAlgorithm(
        "REINFORCE++-baseline: reward - group mean, then whitened across the whole batch; KL as a loss (OpenRLHF "
        "reinforce_baseline)",
        _ON_ESTIMATOR, Advantages(Implementation("runners.advantages:reinforce_pp_baseline"), kl_in_reward=False)),
    "reinforce_pp": RLAlgorithm(
        "REINFORCE++: KL penalty folded into the per-token reward, no group baseline, returns whitened across the "
        "batch (OpenRLHF reinforce)",
        _ON_ESTIMATOR, Advantages(Implementation("runners.advantages:reinforce_pp"), kl_in_reward=True)),
    "rloo": RLAlgorithm("RLOO: leave-one-out group baseline, KL in the reward (TRL RLOOTrainer)",
                        Implementation("runners.rl:rloo_trainer")),
}

PROMPT_DIMENSIONS = ("icl", "definitions", "uncertain", "labels", "reasoning", "template")


@dataclass(frozen=True)
class TrainMethod:
    """A registered training method: its doc, and its stages: an SFT stage, an RL stage after it (the SFT stage is
    then a warm-up the RL stage starts from), or both."""

    doc: str
    sft: bool
    rl: bool

    def label(self, name: str, rl_algo: str) -> str:
        """The method's part of a run name: `sft`, `sft+grpo`, `grpo`."""
        return f"sft+{rl_algo}" if self.sft and self.rl else rl_algo if self.rl else name


TRAIN_METHODS: dict[str, TrainMethod] = {
    "sft": TrainMethod("supervised fine-tuning on the gold completion (loss on the completion only)", True, False),
    "sft+rl": TrainMethod("SFT warm-up, then RL with the exact-match reward from the SFT model", True, True),
    "rl": TrainMethod("RL with the exact-match reward straight from the base model (no warm-up)", False, True),
}

TRAIN_DIMENSIONS: dict[str, Dimension] = {
    "method": Dimension(
        "method",
        "how the model is trained",
        tuple(Value(name, method.doc, name) for name, method in TRAIN_METHODS.items()),
        default="sft",
    ),
    "rl_algo": Dimension(
        "rl_algo",
        "the RL policy-gradient estimator",
        tuple(Value(name, algorithm.doc, name) for name, algorithm in RL_ALGOS.items()),
        default="grpo",
        applies=lambda t: t.has_rl,
    ),
    **{name: DIMENSIONS[name] for name in PROMPT_DIMENSIONS},
    "reasoning_source": Dimension(
        "reasoning_source",
        "where the reasonings in reasoning-on SFT targets come from (two-stage reasoning, arXiv 2507.00214)",
        (
            Value("none", "no reasoning in the SFT target: the 'Answer:' line alone"),
            Value("rgen", "a reasoning generator (R-Gen), fine-tuned on (question, answer) -> reasoning corpora, "
                  "writes one for every training example: Q -> R, A", "rgen"),
            Value("self", "the base model, untrained, writes them for (Q, A): the ablation that shows what R-Gen's "
                  "training buys", "self-r"),
        ),
        default="none",
        applies=lambda t: t.has_sft and t.reasoning == "on",
    ),
}


@dataclass(frozen=True)
class TrainStrategy:
    """One training recipe: method, RL estimator (`"none"` without RL) and the training prompt's dimensions."""

    method: str = "sft"
    rl_algo: str = "grpo"
    icl: str = "zero"
    definitions: str = "off"
    uncertain: str = "off"
    labels: str = "names"
    reasoning: str = "off"
    template: str = DEFAULT_TEMPLATE
    reasoning_source: str = "none"

    @property
    def training_method(self) -> TrainMethod:
        return entry(TRAIN_METHODS, self.method, "training method")

    @property
    def has_sft(self) -> bool:
        return self.training_method.sft

    @property
    def has_rl(self) -> bool:
        return self.training_method.rl

    @property
    def prompt(self) -> Strategy:
        """The prompt strategy training data is rendered with (always generated answers)."""
        return normalise(Strategy(**{name: getattr(self, name) for name in PROMPT_DIMENSIONS}))

    def warmup(self) -> TrainStrategy | None:
        """The SFT recipe an SFT+RL recipe starts from (same prompt), else None."""
        if not (self.has_sft and self.has_rl):
            return None
        return normalise(TrainStrategy(**(asdict(self) | {"method": "sft"})), TRAIN_DIMENSIONS)

    def tag(self) -> str:
        """Readable name such as `sft+grpo` or `sft(similar-3+defs)` (training prompt in parentheses if not zero)."""
        method = self.training_method.label(self.method, self.rl_algo)
        prompt = "+".join([self.icl, *value_tags(self, TRAIN_DIMENSIONS, skip=("method", "rl_algo", "icl"))])
        return method if prompt == "zero" else f"{method}({prompt})"


assert [f.name for f in fields(TrainStrategy)] == list(TRAIN_DIMENSIONS), "TrainStrategy must mirror TRAIN_DIMENSIONS"
