"""Grid files: parsed and validated once, at the edge, then expanded into `RunSpec`s.

A grid names datasets, models, seeds, evaluation settings and one or more *strategy blocks*; each block is a
cross product of dimension values (a scalar is a one-value list; missing dimensions take their default), and
the grid is the union of its blocks with duplicates removed. Every problem is a `UserError` naming the file,
the key and what is allowed, raised before anything runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.datasets import DatasetCache, DatasetConfig
from bench.errors import UserError
from bench.runspec import EvalSettings, RunSpec
from runners.models import check_model_ref
from strategies.registry import DIMENSIONS, Strategy, check_strategy, normalise, parse_value

DTYPES = ("auto", "float32", "bfloat16", "float16")


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: str | None = None
    limit: int | None = Field(default=None, ge=1)
    sample_seed: int = 0


class InferenceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_size: int = Field(default=16, ge=1)
    max_new_tokens: int = Field(default=16, ge=1)
    reasoning_max_new_tokens: int = Field(default=128, ge=1)
    dtype: str = "auto"

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        if value not in DTYPES:
            raise ValueError(f"'{value}' is not a dtype; allowed: {', '.join(DTYPES)}")
        return value


class GridFile(BaseModel):
    """The schema of a grid file (see grids/quick.yaml)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    datasets: list[str | DatasetConfig] = Field(min_length=1)
    models: list[str] = Field(min_length=1)
    seeds: list[int] = Field(default=[0], min_length=1)
    eval: EvalConfig = EvalConfig()
    inference: InferenceConfig = InferenceConfig()
    strategies: list[dict[str, Any]] | dict[str, Any] = Field(default_factory=dict)


def _where(loc: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def read_grid(path: Path) -> GridFile:
    """Parse and validate a grid file; any problem is one UserError line naming file and key."""
    if not path.is_file():
        raise UserError(f"grid file '{path}' does not exist; see grids/ for examples")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a grid file is a mapping with keys {', '.join(GridFile.model_fields)}")
    try:
        return GridFile.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(p for p in error["loc"] if p not in ("str", "DatasetConfig", "list[dict[str,any]]"))
        allowed = ""
        if error["type"] == "extra_forbidden":
            parent = GridFile if len(loc) == 1 else None
            allowed = f"; allowed: {', '.join(parent.model_fields)}" if parent else ""
        raise UserError(f"{path}: {_where(loc)}: {error['msg']}{allowed}") from None


def strategy_blocks(grid: GridFile, path: Path) -> list[Strategy]:
    """The union of the grid's strategy blocks, in order, without duplicates; impossible combinations fail."""
    blocks = grid.strategies if isinstance(grid.strategies, list) else [grid.strategies]
    seen: dict[Strategy, None] = {}
    for b, block in enumerate(blocks or [{}]):
        where = f"{path}: strategies[{b}]" if isinstance(grid.strategies, list) else f"{path}: strategies"
        axes: dict[str, list[str]] = {}
        for key, values in block.items():
            try:
                axes[key] = [parse_value(key, v) for v in (values if isinstance(values, list) else [values])]
            except KeyError as exc:
                raise UserError(f"{where}.{key}: {exc.args[0]}") from None
            except ValueError as exc:
                raise UserError(f"{where}.{key}: {exc}") from None
        for combo in itertools.product(*axes.values()):
            strategy = normalise(Strategy(**dict(zip(axes, combo))))
            reason = check_strategy(strategy)
            if reason:
                raise UserError(f"{where}: impossible combination {strategy.tag()}: {reason}; drop one of the values")
            seen[strategy] = None
    return list(seen)


@contextmanager
def _located(where: str) -> Iterator[None]:
    """Prefix a UserError raised inside with the grid location it came from."""
    try:
        yield
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def expand(grid: GridFile, path: Path, datasets: DatasetCache, resolve_dtype: str) -> list[RunSpec]:
    """All RunSpecs of the grid: datasets x models x seeds x strategies, each checked against its dataset."""
    strategies = strategy_blocks(grid, path)
    for m, model in enumerate(grid.models):
        with _located(f"{path}: models[{m}]"):
            check_model_ref(model)
    specs = []
    for d, ref in enumerate(grid.datasets):
        with _located(f"{path}: datasets[{d}]"):
            config = DatasetConfig.from_ref(ref) if isinstance(ref, str) else ref
            dataset = datasets.get(config)
        for strategy in strategies:
            where = f"{path}: datasets[{d}] ({dataset.name}) with {strategy.tag()}"
            if strategy.shots > len(dataset.pool):
                raise UserError(f"{where}: icl asks for {strategy.shots} examples but the pool has {len(dataset.pool)}")
            if strategy.definitions == "on" and not dataset.card.has_definitions:
                raise UserError(f"{where}: the dataset has no category definitions; add a card.yaml or drop definitions")
        dataset.evaluation(grid.eval.split, grid.eval.limit, grid.eval.sample_seed)  # fails early on a bad split
        evaluation = EvalSettings(grid.eval.split or dataset.default_eval_split, grid.eval.limit, grid.eval.sample_seed)
        for model, seed, strategy in itertools.product(grid.models, grid.seeds, strategies):
            tokens = grid.inference.reasoning_max_new_tokens if strategy.reasoning == "on" else grid.inference.max_new_tokens
            specs.append(RunSpec(
                dataset=config, dataset_name=dataset.name, dataset_identity=dataset.identity, model=model,
                strategy=strategy, eval=evaluation,
                seed=seed, dtype=resolve_dtype if grid.inference.dtype == "auto" else grid.inference.dtype,
                max_new_tokens=tokens,
            ))
    return specs
