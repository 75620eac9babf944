"""`RunSpec`: the frozen, hashable record of one evaluation. Its hash is the run's identity everywhere:
the MLflow tag that resume looks for, and the key of every cache derived from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from bench.datasets import DatasetConfig
from bench.hashing import stable_hash
from bench.trainspec import TrainSpec, train_params
from strategies.registry import Strategy

SPEC_SCHEMA = 1  # bump when the meaning of a field changes, so old runs are not mistaken for new ones
SPEC_HASH_TAG = "genclsbench.spec_hash"


@dataclass(frozen=True)
class EvalSettings:
    """Which evaluation examples: a split (None: the dataset's default) and an optional seeded sample size."""

    split: str | None = None
    limit: int | None = None
    sample_seed: int = 0


@dataclass(frozen=True)
class RunSpec:
    """One (dataset, model, training, inference strategy, evaluation, seed) combination; `train` None: the base
    model as it is."""

    dataset: DatasetConfig
    dataset_name: str
    dataset_identity: str
    model: str
    strategy: Strategy
    eval: EvalSettings
    seed: int
    dtype: str
    max_new_tokens: int
    train: TrainSpec | None = None
    baseline: str | None = None  # a registered classical baseline (then `model` is its name, no LLM involved)

    def key(self) -> str:
        """A stable hash of everything that can change the result (not batch size, not tracking)."""
        identity = {
            "schema": SPEC_SCHEMA,
            "dataset": self.dataset_identity,
            "dataset_options": self.dataset.options(),
            "model": self.model,
            "strategy": self.strategy.as_dict(),
            "eval": asdict(self.eval),
            "seed": self.seed,
            "dtype": self.dtype,
            "max_new_tokens": self.max_new_tokens,
        }
        if self.train is not None:  # absent for untrained runs, so their hashes predate training support
            identity["train"] = self.train.key()
        if self.baseline is not None:
            identity["baseline"] = self.baseline
        return stable_hash(identity)

    @property
    def run_name(self) -> str:
        trained = f"{self.train.strategy.tag()}/" if self.train else ""
        return f"{self.dataset_name}/{self.model}/{trained}{self.strategy_label}"

    @property
    def strategy_label(self) -> str:
        """The inference strategy's tag, or `baseline:<name>` for a classical baseline."""
        return f"baseline:{self.baseline}" if self.baseline else self.strategy.tag()

    def params(self) -> dict[str, str]:
        """The flat MLflow param vocabulary: the same keys on every run, "none" where a value does not apply."""
        params = {
            "dataset": self.dataset_name,
            "model": self.model,
            "seed": self.seed,
            "dtype": self.dtype,
            "eval.split": self.eval.split,
            "eval.limit": self.eval.limit,
            "eval.sample_seed": self.eval.sample_seed,
            **train_params(self.train),
            **{f"infer.{k}": v for k, v in self.strategy.as_dict().items()},
            "infer.icl_method": self.strategy.icl_method,
            "infer.shots": self.strategy.shots,
            "infer.max_new_tokens": self.max_new_tokens,
            "baseline": self.baseline,
            "spec_hash": self.key(),
        }
        return {k: "none" if v is None else str(v) for k, v in params.items()}
