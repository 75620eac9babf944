"""Grid files: parsed and validated once, at the edge, then expanded into `RunSpec`s (no torch imported).

A grid names datasets, models, seeds, evaluation settings and one or more *strategy blocks*; each block is a
cross product of dimension values (a scalar is a one-value list; missing dimensions take their default), and
the grid is the union of its blocks with duplicates removed. Every problem is a `UserError` naming the file,
the key and what is allowed, raised before anything runs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import BaseModel, Field, ValidationError, field_validator

from bench.plan.datasets import Dataset, DatasetCache, DatasetConfig
from bench.plan.errors import UserError
from bench.plan.reasoning_corpora import load_corpus
from bench.plan.specs import CorpusRef, DatasetRef, EvalSettings, ReasonerSpec, RGenSpec, RunSpec, TrainSpec
from bench.plan.yaml_files import load_yaml_file
from runners.baselines import BASELINES
from runners.model_registry import EMBEDDING, ModelError, check_model_ref, model_revision, retriever_revision
from runners.relabel_config import RelabelSettings
from runners.rgen_config import RGenSettings
from runners.rl_config import RLSettings
from runners.schema import Schema
from runners.sft_config import LoraSettings, SFTSettings
from strategies.demos import DEMO_SELECTORS
from strategies.lookup import did_you_mean, registered
from strategies.prompts import prompt_format
from strategies.reasoning import rgen_format
from strategies.registry import DIMENSIONS, Dimension, Strategy, normalise, parse_value
from strategies.training import TRAIN_DIMENSIONS, TrainStrategy

DTYPES = ("auto", "float32", "bfloat16", "float16")
MAX_EXAMPLES = 10_000_000  # an evaluation limit above this is a typo, not a dataset
MAX_NAME = 500  # MLflow's longest experiment name
Seed = Annotated[int, Field(strict=True, ge=0, le=2**32 - 1)]  # what numpy, torch and Optuna's samplers take


class EvalConfig(Schema):
    split: str | None = Field(default=None, min_length=1)  # None: the dataset's own
    limit: int | None = Field(default=None, ge=1, le=MAX_EXAMPLES)  # None: the whole split
    sample_seed: Seed = 0
    max_input_tokens: int | None = Field(default=None, ge=16)  # a prompt + answer over this is refused at planning


class InferenceConfig(Schema):
    batch_size: int = Field(default=64, ge=1)  # rows per forward pass, at most (tokens_per_batch binds first)
    tokens_per_batch: int | None = Field(default=None, ge=64)  # tokens per forward pass (default: 8192 CPU, 32768 GPU)
    max_new_tokens: int = Field(default=16, ge=1)
    reasoning_max_new_tokens: int = Field(default=128, ge=1)
    dtype: str = "auto"
    retriever: str = "all-minilm-l6-v2"  # the sentence-embedding model of dense-K: an alias, folder or Hub id

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"'{value}' is not a dtype{did_you_mean(value, DTYPES)}; allowed: {', '.join(DTYPES)}")
        return value


Blocks = list[dict[str, Any]] | dict[str, Any]


class TrainingConfig(Schema):
    """How models are trained (see grids/quick_train.yaml): recipes as strategy blocks, plus hyperparameters."""

    strategies: Blocks = Field(default_factory=dict)
    n_train: int = Field(default=256, ge=1)
    lora: LoraSettings = LoraSettings()
    sft: SFTSettings = SFTSettings()
    rl: RLSettings = RLSettings()
    relabel: RelabelSettings = RelabelSettings()
    rgen: RGenSettings = RGenSettings()
    evaluate_base: bool = True  # also evaluate the untrained model under every inference strategy
    register_models: bool = True  # register each trained model in MLflow's model registry (never part of a job's
    # identity: it only records; the model is logged on its training run either way)


class LauncherConfig(Schema):
    """Where `--on ray` and `--on slurm` place the workers and what each asks for (the command line's options win;
    what neither gives is the engine's default). Not part of any job's identity: it moves work, never results."""

    partition: str | None = None
    gpus_per_worker: int | None = Field(default=None, ge=0)
    cpus_per_worker: int | None = Field(default=None, ge=1)
    mem_gb: int | None = Field(default=None, ge=1)
    time_min: int | None = Field(default=None, ge=1)


class GridFile(Schema):
    """The schema of a grid file (see grids/quick.yaml)."""

    name: str = Field(min_length=1, max_length=MAX_NAME)  # its MLflow experiment's, by default
    description: str = ""
    datasets: list[str | DatasetConfig] = Field(min_length=1)
    models: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    seeds: list[Seed] = Field(default=[0], min_length=1)
    eval: EvalConfig = EvalConfig()
    inference: InferenceConfig = InferenceConfig()
    training: TrainingConfig | None = None
    strategies: Blocks = Field(default_factory=dict)
    baselines: list[str] = ["tfidf-logreg"]  # classical baselines evaluated on the same splits ([] for none)
    launcher: LauncherConfig = LauncherConfig()

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, names: list[str]) -> list[str]:
        return registered(names, BASELINES, "baseline")


def experiment_name(name: str) -> str:
    """`name` as an MLflow experiment's (--experiment): MLflow refuses an empty one or one over `MAX_NAME` characters
    after the job store is made; refused here, before anything is written. A grid's own name is checked by its
    schema."""
    if not 0 < len(name) <= MAX_NAME:
        raise UserError(f"the experiment name '{name[:60]}{'...' if len(name) > 60 else ''}' has {len(name):,} "
                        f"characters; MLflow takes 1 to {MAX_NAME}: give a shorter --experiment")
    return name


def limited(grid: GridFile, limit: int | None) -> GridFile:
    """`grid` with the command line's `--limit`: its evaluations cut to `limit` examples, which is part of every
    run's identity (a run of 30 examples is another run than one of 200); None leaves it as it is."""
    if limit is None:
        return grid
    if limit > MAX_EXAMPLES:
        raise UserError(f"--limit {limit}: at most {MAX_EXAMPLES:,} examples a run; leave it out to evaluate the "
                        "whole split")
    return grid.model_copy(update={"eval": grid.eval.model_copy(update={"limit": limit})})


def _where(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def load_yaml(path: Path, what: str = "grid file") -> dict:
    """The mapping a YAML file holds; any problem is one UserError line naming the file (and line)."""
    raw = load_yaml_file(path, what)
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a {what} is a mapping with keys {', '.join(GridFile.model_fields)}")
    return raw


def validate_grid(raw: dict, path: Path) -> GridFile:
    """A grid from its YAML mapping, its dataset files and folders read from the grid's folder
    (`DatasetConfig.beside`); any problem is one UserError line naming file and key."""
    try:
        grid = GridFile.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_validation_message(path, exc)) from None
    grid.datasets = [_beside_grid(ref, path, d) for d, ref in enumerate(grid.datasets)]
    return grid


def _beside_grid(ref: str | DatasetConfig, path: Path, d: int) -> str | DatasetConfig:
    """The grid's `d`th dataset with its paths read from the grid's folder; a bundled name or a Hub id stays as
    written."""
    if isinstance(ref, DatasetConfig):
        return ref.beside(path.parent)
    with _located(f"{path}: datasets[{d}]"):
        config = DatasetConfig.from_ref(ref, path.parent)
    return ref if config.hf or config.name == ref else config


def read_grid(path: Path) -> GridFile:
    """Parse and validate a grid file."""
    return validate_grid(load_yaml(path), path)


def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (inside lists, unions, optionals)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _validation_message(path: Path, exc: ValidationError) -> str:
    """One line for the most telling error: of a union (a dataset is a string or a mapping), the branch that
    matches what was written; for an unknown key, the keys allowed at that place."""
    errors = exc.errors()
    error = next((e for e in errors if not (e["type"] == "string_type" and isinstance(e["input"], dict))), errors[0])
    model, loc = GridFile, []
    for part in error["loc"][:-1] if error["type"] == "extra_forbidden" else error["loc"]:
        if isinstance(part, str) and part in model.model_fields:
            loc.append(part)
            model = next(iter(_models_in(model.model_fields[part].annotation)), model)
        elif isinstance(part, int):
            loc.append(part)
        elif isinstance(part, str) and re.search(rf"\b{model.__name__}\b|^str$", part):
            continue  # pydantic names the union branch it tried ("DatasetConfig", "function-after[..]"): no place
        else:
            loc.append(part)
    if error["type"] == "extra_forbidden":
        key = error["loc"][-1]
        return (f"{path}: {_where((*loc, key))}: unknown key{did_you_mean(key, model.model_fields)}; allowed: "
                f"{', '.join(model.model_fields)}")
    return f"{path}: {_where(tuple(loc))}: {error['msg']}"


def _points(blocks: Blocks, where: str, dimensions: dict[str, Dimension], make) -> list:
    """The union of strategy blocks over `dimensions`, in order, without duplicates (`make` builds one point)."""
    listed = blocks if isinstance(blocks, list) else [blocks]
    seen: dict[Any, None] = {}
    for b, block in enumerate(listed or [{}]):
        at = f"{where}[{b}]" if isinstance(blocks, list) else where
        axes: dict[str, list[str]] = {}
        for key, values in block.items():
            try:
                listed_values = values if isinstance(values, list) else [values]
                axes[key] = [parse_value(key, v, dimensions) for v in listed_values]
            except KeyError as exc:
                raise UserError(f"{at}.{key}: {exc.args[0]}") from None
            except ValueError as exc:
                raise UserError(f"{at}.{key}: {exc}") from None
        points = [make(dict(zip(axes, combo))) for combo in itertools.product(*axes.values())]
        _refuse_inapplicable(axes, points, dimensions, at)
        seen.update(dict.fromkeys(points))
    return list(seen)


def _refuse_inapplicable(axes: dict[str, list[str]], points: list, dimensions: dict[str, Dimension], at: str) -> None:
    """A value of a dimension that says so (`refused_where_inapplicable`) named in a block where it applies to none
    of the block's combinations is a UserError, not a value quietly dropped."""
    for key, values in axes.items():
        reason = dimensions[key].refused_where_inapplicable
        unused = [v for v in values if reason and all(getattr(point, key) != v for point in points)]
        if unused:
            raise UserError(f"{at}.{key}: '{unused[0]}' {reason}")


def strategy_blocks(grid: GridFile, path: Path) -> list[Strategy]:
    """The grid's inference strategies."""
    return _points(grid.strategies, f"{path}: strategies", DIMENSIONS, lambda v: normalise(Strategy(**v)))


def train_blocks(grid: GridFile, path: Path) -> list[TrainStrategy]:
    """The grid's training recipes (none without a `training` section)."""
    if grid.training is None:
        return []
    recipes = _points(grid.training.strategies, f"{path}: training.strategies", TRAIN_DIMENSIONS,
                      lambda v: normalise(TrainStrategy(**v), TRAIN_DIMENSIONS))
    for recipe in recipes:
        if DEMO_SELECTORS[recipe.prompt.icl_method].needs_embeddings:
            raise UserError(f"{path}: training.strategies: {recipe.icl} is an inference strategy only (training "
                            "prompts do not load a retriever); train with similar-K, random-K or fixed-K demos")
    return recipes


@contextmanager
def _located(where: str) -> Iterator[None]:
    """Prefix a UserError (or a model that cannot be used) raised inside with the grid location it came from."""
    try:
        yield
    except (UserError, ModelError) as exc:
        raise UserError(f"{where}: {exc}") from None


def _check_prompt(strategy: Strategy, dataset, where: str, pool_needed: int) -> None:
    """Fail on a prompt strategy the dataset cannot serve (`pool_needed`: examples the pool must hold)."""
    if pool_needed > len(dataset.pool):
        raise UserError(f"{where}: needs {pool_needed} pool examples but the pool has {len(dataset.pool)}")
    if strategy.definitions == "on" and not dataset.card.has_definitions:
        raise UserError(f"{where}: the dataset has no category definitions; add a card.yaml or drop definitions")


def _rgen_spec(training: TrainingConfig, path: Path, model: str, seed: int, dtype: str) -> RGenSpec:
    """Stage 1 for `model`: the R-Gen training job (its corpora loaded and checked now, before anything runs)."""
    corpora = []
    for c, ref in enumerate(training.rgen.corpora):
        with _located(f"{path}: training.rgen.corpora[{c}]"):
            corpora.append(CorpusRef(ref, load_corpus(ref, training.rgen.skip_invalid).identity))
    base = training.rgen.model or model
    return RGenSpec(model=base, model_revision=model_revision(base), corpora=tuple(corpora),
                    per_corpus=training.rgen.per_corpus, sft=training.rgen.sft, lora=training.lora,
                    skip_invalid=training.rgen.skip_invalid, seed=seed, dtype=dtype, prompt_format=rgen_format(),
                    register_model=training.register_models)


def _reasoner(recipe: TrainStrategy, training: TrainingConfig, path: Path, model: str, seed: int,
              dtype: str) -> ReasonerSpec | None:
    """Who writes the recipe's training reasonings (None when its SFT targets carry none)."""
    if recipe.reasoning_source not in ("rgen", "self"):
        return None
    rgen = _rgen_spec(training, path, model, seed, dtype) if recipe.reasoning_source == "rgen" else None
    writer = rgen.model if rgen else model
    return ReasonerSpec(source=recipe.reasoning_source, model=writer, model_revision=model_revision(writer),
                        dtype=dtype, rgen=rgen, max_new_tokens=training.rgen.max_new_tokens,
                        prompt_format=rgen_format())


def _train_specs(grid: GridFile, path: Path, recipes: list[TrainStrategy], dataset: DatasetRef, language: str,
                 model: str, seed: int, dtype: str) -> list[TrainSpec]:
    training = grid.training
    return [TrainSpec(
        dataset=dataset, model=model, model_revision=model_revision(model), strategy=recipe,
        n_train=training.n_train, lora=training.lora, sft=training.sft if recipe.has_sft else None,
        rl=training.rl if recipe.has_rl else None,
        relabel=training.relabel if recipe.has_sft and recipe.uncertain == "on" else None, seed=seed, dtype=dtype,
        prompt_format=prompt_format(language, recipe.template),
        reasoner=(reasoner := _reasoner(recipe, training, path, model, seed, dtype)),
        mask_labels=training.rgen.mask_labels and reasoner is not None, register_model=training.register_models,
    ) for recipe in recipes]


def _retriever(grid: GridFile, strategy: Strategy) -> tuple[str | None, str | None]:
    """(retriever, its revision) of a strategy whose demos need sentence embeddings, else (None, None)."""
    if not DEMO_SELECTORS[strategy.icl_method].needs_embeddings:
        return None, None
    return grid.inference.retriever, retriever_revision(grid.inference.retriever)


def check_models(grid: GridFile, path: Path) -> None:
    """Every model the grid names (classifiers, relabel scorers, R-Gen's base, the retriever) can be found."""
    for m, model in enumerate(grid.models):
        with _located(f"{path}: models[{m}]"):
            check_model_ref(model)
    with _located(f"{path}: inference.retriever"):
        check_model_ref(grid.inference.retriever, EMBEDDING)
    for s, scorer in enumerate(grid.training.relabel.scorers if grid.training else ()):
        with _located(f"{path}: training.relabel.scorers[{s}]"):
            scorer == "base" or check_model_ref(scorer)
    if grid.training and grid.training.rgen.model:
        with _located(f"{path}: training.rgen.model"):
            check_model_ref(grid.training.rgen.model)


def planned_dataset(grid: GridFile, path: Path, d: int, datasets: DatasetCache) -> tuple[DatasetConfig, Dataset]:
    """The grid's `d`th dataset, loaded, with its evaluation split checked."""
    with _located(f"{path}: datasets[{d}]"):
        ref = grid.datasets[d]
        config = DatasetConfig.from_ref(ref) if isinstance(ref, str) else ref
        dataset = datasets.get(config)
    with _located(f"{path}: eval"):
        dataset.evaluation(grid.eval.split, grid.eval.limit, grid.eval.sample_seed)
    return config, dataset


def expand(grid: GridFile, path: Path, datasets: DatasetCache, resolve_dtype: str) -> list[RunSpec]:
    """All RunSpecs of the grid: datasets x models x seeds x (untrained + training recipes) x inference strategies,
    each checked against its dataset before anything runs."""
    strategies = strategy_blocks(grid, path)
    recipes = train_blocks(grid, path)
    check_models(grid, path)
    dtype = resolve_dtype if grid.inference.dtype == "auto" else grid.inference.dtype
    specs = []
    for d in range(len(grid.datasets)):
        config, dataset = planned_dataset(grid, path, d, datasets)
        for strategy in strategies:
            _check_prompt(strategy, dataset, f"{path}: datasets[{d}] ({dataset.name}) with {strategy.tag()}",
                          strategy.shots)
        for recipe in recipes:  # a training prompt's demos come from the pool minus the example itself
            _check_prompt(recipe.prompt, dataset, f"{path}: datasets[{d}] ({dataset.name}) training {recipe.tag()}",
                          max(recipe.prompt.shots + 1, grid.training.n_train))
        evaluation = EvalSettings(grid.eval.split or dataset.default_eval_split, grid.eval.limit, grid.eval.sample_seed)
        data = DatasetRef.of(config, dataset)
        specs += [RunSpec(dataset=data, model=name, model_revision=BASELINES[name].revision, strategy=None,
                          eval=evaluation, seed=seed,
                          dtype=None, max_new_tokens=None, prompt_format=None, baseline=name)
                  for name, seed in itertools.product(grid.baselines, grid.seeds)]
        for model, seed in itertools.product(grid.models, grid.seeds):
            untrained: list[TrainSpec | None] = [None] if not grid.training or grid.training.evaluate_base else []
            trained = _train_specs(grid, path, recipes, data, dataset.card.language, model, seed, dtype)
            for train, strategy in itertools.product(untrained + trained, strategies):
                if train is None and not strategy.seeded and seed != grid.seeds[0]:
                    continue  # nothing random touches it (greedy or scored, no training): one run serves every seed
                tokens = grid.inference.reasoning_max_new_tokens if strategy.reasoning == "on" \
                    else grid.inference.max_new_tokens
                retriever, retriever_revision = _retriever(grid, strategy)
                specs.append(RunSpec(
                    dataset=data, model=model, model_revision=model_revision(model), strategy=strategy,
                    eval=evaluation, seed=seed, dtype=dtype, max_new_tokens=tokens,
                    prompt_format=prompt_format(dataset.card.language, strategy.template), train=train,
                    retriever=retriever, retriever_revision=retriever_revision,
                ))
    return specs
