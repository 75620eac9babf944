"""The frozen records of every job a grid runs, and their identities.

A record's hash (`key`) is its identity everywhere: the claim and resume key in the job store, the MLflow tag of its
run, the cache folder of its output, and part of the hash of every job that depends on it. It is derived from the
record's fields (`bench.plan.identity`): a field at its default does not count, so adding a setting keeps old hashes;
the contents of the data, the model's revision and the prompt templates' fingerprints are fields, so a changed file
or template is a new job, never a stale one.

Jobs, and what each needs first (`dependencies`):
    RGenSpec        train the reasoning generator (stage 1 of two-stage reasoning)
    ReasoningsSpec  write a reasoning for every training example       <- RGenSpec (reasoner rgen)
    RelabelSpec     score every training example's gold label (the uncertain label)
    TrainSpec       train one stage: SFT, or RL      <- warm-up TrainSpec, ReasoningsSpec, RelabelSpecs
    RunSpec         evaluate one strategy combination (or a classical baseline)   <- TrainSpec
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import ClassVar

from bench.plan.datasets import Dataset, DatasetConfig
from bench.plan.identity import canonical, identity_field, identity_hash, params
from reports.vocabulary import (
    DATASET,
    DTYPE,
    EVAL_KIND,
    MODEL,
    REASONINGS_KIND,
    RELABEL_KIND,
    RGEN_KIND,
    SEED,
    TRAIN_KIND,
)
from runners.relabel_config import RelabelSettings
from runners.rl_config import RLSettings
from runners.sft_config import LoraSettings, SFTSettings
from strategies.registry import Strategy
from strategies.training import TrainStrategy

_HIDDEN = identity_field(param=None)  # identity, not a param (the run shows it elsewhere)
_DISPLAY = identity_field(identity=False, param=None)  # neither: how to load or show it, not what it is


def registry_name(*parts: str) -> str:
    """`genclsbench-<parts>` in what MLflow's registry takes in a name and an address carries unescaped (a job key,
    last, is cut to 8 characters: with the rest, unique enough to tell two grids' models apart)."""
    *words, key = parts
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(["genclsbench", *words, key[:8]])).strip("-")


@dataclass(frozen=True)
class DatasetRef:
    """A dataset as jobs name it: how to load it, its display name, and a fingerprint of its contents (files and the
    options that shape its rows and prompts): only the contents are identity."""

    config: DatasetConfig = field(metadata=_DISPLAY)
    name: str = field(metadata=identity_field(identity=False, param=DATASET))
    content: str = field(metadata=_HIDDEN)

    @classmethod
    def of(cls, config: DatasetConfig, dataset: Dataset) -> DatasetRef:
        options = json.dumps(canonical(config.options()), sort_keys=True)
        return cls(config, dataset.name, f"{dataset.identity}/{hashlib.sha256(options.encode()).hexdigest()[:8]}")


@dataclass(frozen=True)
class EvalSettings:
    """Which evaluation examples: a split and an optional seeded sample size."""

    split: str
    limit: int | None = None
    sample_seed: int = 0


@dataclass(frozen=True)
class CorpusRef:
    """A reasoning corpus: its reference (bundled name or file) and its identity (name or content hash)."""

    ref: str = field(metadata=identity_field(identity=False))
    identity: str = field(metadata=_HIDDEN)


class Job:
    """What every job record has: a kind, a key, a name for people, the jobs it needs first, and the params of its
    MLflow run (its fields' flat vocabulary under `PARAM_PREFIX`)."""

    KIND: ClassVar[str]
    PARAM_PREFIX: ClassVar[str] = ""

    @cached_property
    def key(self) -> str:
        return identity_hash(self)

    def dependencies(self) -> tuple[Job, ...]:
        return ()

    def run_params(self) -> dict[str, str]:
        return params(type(self), self, self.PARAM_PREFIX)


@dataclass(frozen=True)
class RGenSpec(Job):
    """Stage 1: the reasoning generator's training job ((question, answer) -> reasoning SFT on a corpus mixture)."""

    KIND: ClassVar[str] = RGEN_KIND
    PARAM_PREFIX: ClassVar[str] = "rgen."
    model: str
    model_revision: str = field(metadata=_HIDDEN)
    corpora: tuple[CorpusRef, ...] = field(metadata=identity_field(param=None))
    per_corpus: int
    sft: SFTSettings
    lora: LoraSettings
    skip_invalid: bool
    seed: int
    dtype: str
    prompt_format: str = field(metadata=_HIDDEN)
    register_model: bool = field(default=True, metadata=_DISPLAY)  # training.register_models

    @property
    def name(self) -> str:
        return f"rgen {self.model} ({'+'.join(c.ref for c in self.corpora)})"

    @property
    def model_name(self) -> str:
        """The name its trained model is registered under in MLflow's model registry."""
        return registry_name("rgen", self.model, self.key)

    @staticmethod
    def extra_params(spec: RGenSpec | None) -> dict[str, object]:
        return {"corpora": spec and [c.ref for c in spec.corpora], "hash": spec and spec.key}


@dataclass(frozen=True)
class ReasonerSpec:
    """Who writes the training reasonings: `rgen` (the model R-Gen trained) or `self` (the base model as it is)."""

    source: str = field(metadata=identity_field(param=None))  # the recipe's reasoning_source says it
    model: str
    model_revision: str = field(metadata=_HIDDEN)
    dtype: str = field(metadata=identity_field(param=None))
    rgen: RGenSpec | None = field(metadata=identity_field(param=None))
    max_new_tokens: int
    prompt_format: str = field(metadata=_HIDDEN)

    @staticmethod
    def extra_params(spec: ReasonerSpec | None) -> dict[str, object]:
        return {"hash": spec and identity_hash(spec), "rgen_hash": spec and spec.rgen and spec.rgen.key}


@dataclass(frozen=True)
class ReasoningsSpec(Job):
    """Stage 2: the reasoner's reasoning for each training example (the seeded `n_train` sample of the pool), given
    its gold label."""

    KIND: ClassVar[str] = REASONINGS_KIND
    reasoner: ReasonerSpec
    dataset: DatasetRef
    n_train: int
    seed: int

    @property
    def name(self) -> str:
        return f"reasonings ({self.reasoner.source}) {self.dataset.name}"

    def dependencies(self) -> tuple[Job, ...]:
        return (self.reasoner.rgen,) if self.reasoner.rgen else ()


@dataclass(frozen=True)
class RelabelSpec(Job):
    """One scorer's confidence in the gold label of each training example (zero-shot candidate probabilities)."""

    KIND: ClassVar[str] = RELABEL_KIND
    scorer: str
    model_revision: str = field(metadata=_HIDDEN)
    dataset: DatasetRef
    n_train: int
    seed: int
    dtype: str
    prompt_format: str = field(metadata=_HIDDEN)

    @property
    def name(self) -> str:
        return f"relabel {self.dataset.name} by {self.scorer}"


@dataclass(frozen=True)
class TrainSpec(Job):
    """One training stage: (dataset, base model, recipe, hyperparameters, n_train, seed). An SFT+RL spec names its SFT
    warm-up, equal to the grid's plain SFT spec with the same prompt, so the warm-up is trained once."""

    KIND: ClassVar[str] = TRAIN_KIND
    PARAM_PREFIX: ClassVar[str] = "train."
    dataset: DatasetRef = field(metadata=identity_field(param=None))
    model: str = field(metadata=identity_field(param=None))
    model_revision: str = field(metadata=_HIDDEN)
    strategy: TrainStrategy = field(metadata=identity_field(param=""))
    n_train: int
    lora: LoraSettings
    sft: SFTSettings | None
    rl: RLSettings | None
    relabel: RelabelSettings | None
    seed: int = field(metadata=identity_field(param=None))
    dtype: str = field(metadata=identity_field(param=None))
    prompt_format: str = field(metadata=_HIDDEN)
    reasoner: ReasonerSpec | None = None  # two-stage reasoning: who writes the reasonings of the SFT targets
    mask_labels: bool = False  # category names in those reasonings replaced by a mask
    register_model: bool = field(default=True, metadata=_DISPLAY)  # training.register_models

    @property
    def name(self) -> str:
        return f"train {self.dataset.name}/{self.model}/{self.strategy.tag()}"

    @property
    def model_name(self) -> str:
        """The name its trained model is registered under in MLflow's model registry."""
        return registry_name(self.dataset.name, self.strategy.tag(), self.key)

    def warmup(self) -> TrainSpec | None:
        """The SFT spec an SFT+RL spec starts from (equal to the grid's plain SFT spec with the same prompt)."""
        strategy = self.strategy.warmup()
        return replace(self, strategy=strategy, rl=None) if strategy else None

    @property
    def reasonings(self) -> ReasoningsSpec | None:
        """The reasonings an SFT stage's targets carry (none for RL: its warm-up had them)."""
        if self.reasoner is None or self.strategy.has_rl:
            return None
        return ReasoningsSpec(self.reasoner, self.dataset, self.n_train, self.seed)

    @property
    def relabels(self) -> tuple[RelabelSpec, ...]:
        """One confidence job per scorer of the uncertain relabelling (none without it)."""
        if self.relabel is None:
            return ()
        from runners.model_registry import model_revision

        return tuple(RelabelSpec(self.model if scorer == "base" else scorer,
                                 self.model_revision if scorer == "base" else model_revision(scorer), self.dataset,
                                 self.n_train, self.seed, self.dtype, self.prompt_format)
                     for scorer in self.relabel.scorers)

    def dependencies(self) -> tuple[Job, ...]:
        found = (self.warmup(), self.reasonings, *self.relabels)
        return tuple(j for j in found if j is not None)

    @staticmethod
    def extra_params(spec: TrainSpec | None) -> dict[str, object]:
        warmup = spec and spec.warmup()
        return {"hash": spec and spec.key, "warmup_hash": warmup and warmup.key}

    def run_params(self) -> dict[str, str]:
        """A training run shows what its evaluations show under `train.`, with the dataset, model, seed and dtype."""
        return {DATASET: self.dataset.name, MODEL: self.model, SEED: str(self.seed), DTYPE: self.dtype,
                **super().run_params()}


@dataclass(frozen=True)
class RunSpec(Job):
    """One evaluation: (dataset, model, training, inference strategy, evaluation, seed); `train` None: the base model
    as it is; `baseline`: a registered classical baseline instead of an LLM (no strategy then)."""

    KIND: ClassVar[str] = EVAL_KIND
    dataset: DatasetRef = field(metadata=identity_field(param=""))
    model: str
    model_revision: str = field(metadata=_HIDDEN)
    strategy: Strategy | None = field(metadata=identity_field(param="infer"))
    eval: EvalSettings
    seed: int
    dtype: str | None
    max_new_tokens: int | None = field(metadata=identity_field(param="infer.max_new_tokens"))
    prompt_format: str | None = field(metadata=_HIDDEN)
    train: TrainSpec | None = None
    baseline: str | None = None
    retriever: str | None = field(default=None, metadata=identity_field(param="infer.retriever"))  # dense-K only
    retriever_revision: str | None = field(default=None, metadata=_HIDDEN)

    @property
    def name(self) -> str:
        trained = f"{self.train.strategy.tag()}/" if self.train else ""
        return f"{self.dataset.name}/{self.model}/{trained}{self.strategy_label}"

    @property
    def strategy_label(self) -> str:
        """The inference strategy's tag, or `baseline:<name>` for a classical baseline."""
        return f"baseline:{self.baseline}" if self.baseline else self.strategy.tag()

    def dependencies(self) -> tuple[Job, ...]:
        return (self.train,) if self.train else ()

    @staticmethod
    def extra_params(spec: RunSpec | None) -> dict[str, object]:
        return {"spec_hash": spec and spec.key}
