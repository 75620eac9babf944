"""`TrainSpec`: the frozen, hashable record of one training job, and the hyperparameter records it holds.

A trained model is identified by its TrainSpec hash: the adapter cache folder, the MLflow tag of the training run,
and part of the hash of every evaluation that uses it. Every RunSpec that shares a TrainSpec reuses one trained
model; an SFT+RL spec names its SFT warm-up spec, so the warm-up is trained once for all RL algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import BaseModel, ConfigDict, Field

from bench.datasets import DatasetConfig
from bench.hashing import stable_hash
from strategies.reasoning import RGEN_INSTRUCTION
from strategies.registry import NOT_APPLICABLE
from strategies.training import TRAIN_DIMENSIONS, TrainStrategy

TRAIN_SCHEMA = 1  # bump when the meaning of a training field changes
TRAIN_HASH_TAG = "genclsbench.train_hash"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoraSettings(_Settings):
    """The adapter every stage trains (RL always trains a LoRA adapter: its reference policy is the adapter off)."""

    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    full_finetune: bool = False  # SFT only: train every weight instead of an adapter


class SFTSettings(_Settings):
    epochs: float = Field(default=1.0, gt=0)
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    batch_size: int = Field(default=8, ge=1)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)  # fraction of the steps
    max_length: int = Field(default=1024, ge=16)


class RLSettings(_Settings):
    steps: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0, le=1)
    prompts_per_step: int = Field(default=4, ge=1)
    num_generations: int = Field(default=4, ge=2)
    kl_coef: float = Field(default=0.01, ge=0)
    clip_epsilon: float = Field(default=0.2, gt=0, lt=1)
    temperature: float = Field(default=1.0, gt=0)
    max_completion_length: int = Field(default=8, ge=1)
    reasoning_max_completion_length: int = Field(default=128, ge=1)
    format_reward: float = Field(default=0.0, ge=0)  # weight of +1 for a strictly parseable answer


class RelabelSettings(_Settings):
    """GenCLS++'s uncertain label: the `fraction` of training examples the scorers are least sure of become
    "uncertain" in the SFT data. `scorers`: model refs, `base` = the model being trained (zero-shot probabilities)."""

    fraction: float = Field(default=0.1, gt=0, lt=1)
    scorers: tuple[str, ...] = Field(default=("base",), min_length=1)


class RGenSettings(_Settings):
    """Two-stage reasoning (recipes with reasoning_source rgen or self): the reasoning generator R-Gen is trained
    on `per_corpus` rows of each corpus (bundled name or a question/answer/reasoning file), then writes a reasoning
    of at most `max_new_tokens` for every training example; `mask_labels` hides category names in them."""

    corpora: tuple[str, ...] = Field(default=("cose", "esnli", "gsm8k"), min_length=1)
    per_corpus: int = Field(default=64, ge=1)
    model: str | None = None  # the base model R-Gen is trained from; default: the classifier's own model
    sft: SFTSettings = SFTSettings(max_length=512)
    max_new_tokens: int = Field(default=64, ge=1)
    mask_labels: bool = False
    skip_invalid: bool = False  # skip (and count) empty or over-long corpus rows instead of stopping


@dataclass(frozen=True)
class RGenSpec:
    """Stage 1: the reasoning generator's training job ((question, answer) -> reasoning SFT on a corpus mixture)."""

    model: str
    corpora: tuple[tuple[str, str], ...]  # (reference, identity)
    per_corpus: int
    sft: SFTSettings
    lora: LoraSettings
    skip_invalid: bool
    seed: int
    dtype: str

    def key(self) -> str:
        return stable_hash({
            "schema": TRAIN_SCHEMA, "kind": "rgen", "model": self.model, "corpora": [i for _, i in self.corpora],
            "per_corpus": self.per_corpus, "sft": self.sft.model_dump(), "lora": self.lora.model_dump(),
            "skip_invalid": self.skip_invalid, "seed": self.seed, "dtype": self.dtype, "prompt": RGEN_INSTRUCTION,
        })

    @property
    def run_name(self) -> str:
        return f"rgen {self.model} ({'+'.join(ref for ref, _ in self.corpora)})"

    def params(self) -> dict[str, object]:
        return {
            "model": self.model, "seed": self.seed, "dtype": self.dtype,
            "rgen.corpora": ",".join(ref for ref, _ in self.corpora), "rgen.per_corpus": self.per_corpus,
            "rgen.skip_invalid": self.skip_invalid, **{f"sft.{k}": v for k, v in self.sft.model_dump().items()},
            **{f"lora.{k}": v for k, v in self.lora.model_dump().items()}, "hash": self.key(),
        }


@dataclass(frozen=True)
class ReasonerSpec:
    """Who writes the training reasonings: `rgen` (the model R-Gen trained) or `self` (the base model as it is).
    Its hash keys the reasoning cache, with the dataset and the example id."""

    source: str
    model: str
    dtype: str
    rgen: RGenSpec | None
    max_new_tokens: int

    def key(self) -> str:
        return stable_hash({"schema": TRAIN_SCHEMA, "source": self.source, "model": self.model, "dtype": self.dtype,
                            "rgen": self.rgen.key() if self.rgen else None, "max_new_tokens": self.max_new_tokens,
                            "prompt": RGEN_INSTRUCTION})


@dataclass(frozen=True)
class TrainSpec:
    """One training job: (dataset, base model, recipe, hyperparameters, n_train, seed)."""

    dataset: DatasetConfig
    dataset_name: str
    dataset_identity: str
    model: str
    strategy: TrainStrategy
    n_train: int
    lora: LoraSettings
    sft: SFTSettings | None
    rl: RLSettings | None
    relabel: RelabelSettings | None
    seed: int
    dtype: str
    reasoner: ReasonerSpec | None = None  # two-stage reasoning: who writes the reasonings of the SFT targets
    mask_labels: bool = False  # category names in those reasonings replaced by a mask

    def key(self) -> str:
        """A stable hash of everything that can change the trained weights (keys added by two-stage reasoning are
        left out when unused, so earlier specs keep their hashes)."""
        strategy = {k: v for k, v in self.strategy.as_dict().items()
                    if k != "reasoning_source" or v != NOT_APPLICABLE}
        identity = {
            "schema": TRAIN_SCHEMA,
            "dataset": self.dataset_identity,
            "dataset_options": self.dataset.options(),
            "model": self.model,
            "strategy": strategy,
            "n_train": self.n_train,
            **{name: part.model_dump() if (part := getattr(self, name)) else None
               for name in ("lora", "sft", "rl", "relabel")},
            "seed": self.seed,
            "dtype": self.dtype,
        }
        if self.reasoner:
            identity |= {"reasoner": self.reasoner.key(), "mask_labels": self.mask_labels}
        return stable_hash(identity)

    def warmup(self) -> TrainSpec | None:
        """The SFT spec an SFT+RL spec starts from (equal to the grid's plain SFT spec with the same prompt)."""
        strategy = self.strategy.warmup()
        return replace(self, strategy=strategy, rl=None) if strategy else None

    @property
    def run_name(self) -> str:
        return f"train {self.dataset_name}/{self.model}/{self.strategy.tag()}"

    def params(self) -> dict[str, object]:
        """`train.*` params (unprefixed here); see `train_params`."""
        return {
            "method": self.strategy.method,
            **{k: v for k, v in self.strategy.as_dict().items() if k != "method"},
            "n_train": self.n_train,
            **{f"lora.{k}": v for k, v in self.lora.model_dump().items()},
            **{f"sft.{k}": getattr(self.sft, k, None) for k in SFTSettings.model_fields},
            **{f"rl.{k}": getattr(self.rl, k, None) for k in RLSettings.model_fields},
            "relabel.fraction": self.relabel.fraction if self.relabel else None,
            "relabel.scorers": ",".join(self.relabel.scorers) if self.relabel else None,
            "hash": self.key(),
            "warmup_hash": warmup.key() if (warmup := self.warmup()) else None,
            "reasoner_hash": self.reasoner.key() if self.reasoner else None,
            "rgen.hash": self.reasoner.rgen.key() if self.reasoner and self.reasoner.rgen else None,
            "rgen.max_new_tokens": self.reasoner.max_new_tokens if self.reasoner else None,
            "rgen.mask_labels": self.mask_labels if self.reasoner else None,
        }


_UNTRAINED_KEYS = tuple(TRAIN_DIMENSIONS) + ("n_train",) + tuple(f"lora.{k}" for k in LoraSettings.model_fields) \
    + tuple(f"sft.{k}" for k in SFTSettings.model_fields) + tuple(f"rl.{k}" for k in RLSettings.model_fields) \
    + ("relabel.fraction", "relabel.scorers", "hash", "warmup_hash", "reasoner_hash", "rgen.hash",
       "rgen.max_new_tokens", "rgen.mask_labels")


def train_params(spec: TrainSpec | None) -> dict[str, object]:
    """The `train.*` params of a run: the same keys whether or not it was trained (None where not applicable)."""
    values = spec.params() if spec else {}
    return {f"train.{k}": values.get(k) for k in _UNTRAINED_KEYS}
