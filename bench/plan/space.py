"""A search space: a grid file whose strategy blocks list what a search may choose, with numeric ranges where a
setting may vary, plus a `search` section (objectives, sampler, pruner). Validated at the edge like a grid.

    strategies: {icl: [zero, random, similar], shots: {low: 1, high: 5}, decoding: [generate, ppl], ...}
    training:
      sft: {learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}, epochs: {low: 1, high: 3}}
      lora: {r: {low: 4, high: 32}}
      strategies: {method: [sft, sft+rl], rl_algo: [grpo, rloo]}

A trial samples one point, define-by-run, under the same names as the MLflow params (`infer.decoding`,
`train.sft.learning_rate`): a dimension is asked only where it applies, by the registry's own rules (`ppl_norm`
under `ppl`, `rl_algo` under RL, `reasoning_source` with reasoning on), and a setting only where its stage runs
(`sft.*` with SFT, `rl.*` with RL). The point becomes a one-spec grid, expanded like any grid: a trial is a RunSpec.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from bench.plan.datasets import DatasetCache
from bench.plan.errors import UserError
from bench.plan.grid import (
    GridFile,
    Seed,
    TrainingConfig,
    check_models,
    limited,
    load_yaml,
    planned_dataset,
    validate_grid,
)
from bench.plan.yaml_files import validated
from runners.schema import Schema
from strategies.demos import DEMO_SELECTORS
from strategies.lookup import registered
from strategies.registry import DIMENSIONS, Dimension, Strategy, parse_value
from strategies.training import TRAIN_DIMENSIONS, TrainStrategy

UNTRAINED = "none"  # the method choice "the model as it is" (when training.evaluate_base)
RANGE_KEYS = {"low", "high", "log", "step"}


@dataclass(frozen=True)
class Objective:
    """A registered objective: the metric it reads from an evaluation (or its training) and its direction."""

    metric: str
    direction: str
    doc: str


OBJECTIVES: dict[str, Objective] = {
    "accuracy": Objective("accuracy", "maximize", "accuracy on the evaluation examples"),
    "macro_f1": Objective("macro_f1", "maximize", "macro-F1 on the evaluation examples"),
    "examples_per_s": Objective("examples_per_s", "maximize", "evaluation throughput"),
    "train_wall_time_s": Objective("train_wall_time_s", "minimize", "seconds of training (0 untrained)"),
}


def _tpe(seed: int):
    from optuna.samplers import TPESampler

    # every option whose default changed between Optuna 4 and 5 is set: joint (grouped) modelling of the conditional
    # space, and a constant liar so that workers running at once do not all try the same point
    return TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=10)


def _random(seed: int):
    from optuna.samplers import RandomSampler

    return RandomSampler(seed=seed)


def _bruteforce(seed: int):
    from optuna.samplers import BruteForceSampler

    return BruteForceSampler(seed=seed)  # every point of the conditional space, once


def _nsga2(seed: int):
    from optuna.samplers import NSGAIISampler

    return NSGAIISampler(seed=seed, population_size=20)


SAMPLERS = {"tpe": _tpe, "random": _random, "bruteforce": _bruteforce, "nsga2": _nsga2}


def _wilcoxon(p_threshold: float, startup: int):
    from optuna.pruners import WilcoxonPruner

    return WilcoxonPruner(p_threshold=p_threshold, n_startup_steps=startup)


def _no_pruner(p_threshold: float, startup: int):
    from optuna.pruners import NopPruner

    return NopPruner()


PRUNERS = {"wilcoxon": _wilcoxon, "none": _no_pruner}


class SearchConfig(Schema):
    """How a search explores the space (the `search` section of a space file)."""

    objectives: list[str] = Field(default=["accuracy"], min_length=1)
    sampler: str = "tpe"
    pruner: str = "wilcoxon"
    p_threshold: float = Field(default=0.1, gt=0, lt=1)  # Wilcoxon: prune below this p (paired on examples)
    seed: Seed = 0

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, names: list[str]) -> list[str]:
        return registered(names, OBJECTIVES, "objective")

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, name: str) -> str:
        return registered([name], SAMPLERS, "sampler")[0]

    @field_validator("pruner")
    @classmethod
    def _known_pruner(cls, name: str) -> str:
        return registered([name], PRUNERS, "pruner")[0]


@dataclass(frozen=True)
class Range:
    """A numeric setting's range: integers for integer settings (LoRA rank, epochs as whole passes, RL steps)."""

    low: float
    high: float
    log: bool
    integer: bool
    step: float | None = None

    def suggest(self, trial, name: str) -> float | int:
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)


Choices = dict[str, tuple[str, ...]]


@dataclass
class Space:
    """A validated search space (see the module doc)."""

    path: Path
    grid: GridFile  # the fixed parts; a range's place holds its low end
    search: SearchConfig
    inference: Choices  # dimension -> the values a trial may take (icl: methods or concrete values)
    training: Choices | None  # the same for training dimensions, "method" with "none" when the base model counts
    shots: dict[str, Range]  # "infer" / "train" -> the K of demos, when icl lists methods
    ranges: dict[str, Range]  # settings path ("sft.learning_rate") -> its range
    raw: dict  # the file's mapping, for the fingerprint and for best.yaml

    @property
    def name(self) -> str:
        return self.grid.name

    @property
    def prunes(self) -> bool:
        """Whether a trial reports its examples as it goes, for the pruner to stop it: with one objective and a
        pruner (Optuna takes no per-step report of a multi-objective trial)."""
        return len(self.search.objectives) == 1 and self.search.pruner != "none"

    def check_inputs(self, datasets: DatasetCache) -> None:
        """Fail on what every trial would find wrong (a model that cannot be used, the dataset or its evaluation
        split, more shots than its pool holds) now, before the search writes anything."""
        check_models(self.grid, self.path)
        _, dataset = planned_dataset(self.grid, self.path, 0, datasets)
        for where, shots in self.shots.items():
            if shots.high > len(dataset.pool):
                raise UserError(f"{self.path}: {'training.' if where == 'train' else ''}strategies.shots: up to "
                                f"{int(shots.high)} demos, but the pool of {dataset.name} has {len(dataset.pool)} "
                                "examples")

    def limited(self, limit: int | None) -> Space:
        """The space with the command line's `--limit` (`bench.plan.grid.limited`): in every trial's spec, so in its
        identity, and in the fingerprint, so a study keeps one evaluation set (None: as it is)."""
        if limit is None:
            return self
        raw = {**self.raw, "eval": {**(self.raw.get("eval") or {}), "limit": limit}}
        return replace(self, grid=limited(self.grid, limit), raw=raw)

    def fingerprint(self) -> str:
        """A hash of everything that defines the space: a study keeps it, and refuses another space (where its
        workers run, the `launcher:` section, is not the space)."""
        defining = {key: value for key, value in self.raw.items() if key != "launcher"}
        return hashlib.sha256(json.dumps(defining, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def sample(self, trial) -> GridFile:
        """One point of the space for an Optuna trial, as a grid of exactly one LLM spec."""
        grid = self.grid.model_copy(deep=True)
        grid.baselines = []
        recipe = _sample_point(trial, "train", self.training, TRAIN_DIMENSIONS, self.shots.get("train")) \
            if self.training else None
        if recipe is None or recipe["method"] == UNTRAINED:
            grid.training = None
        else:
            strategy = TrainStrategy(**{k: v for k, v in recipe.items() if k in TrainStrategy.__dataclass_fields__})
            grid.training = _sampled_training(trial, grid.training, self.ranges, strategy, recipe)
        grid.strategies = _sample_point(trial, "infer", self.inference, DIMENSIONS, self.shots.get("infer"))
        return grid


def _sample_point(trial, prefix: str, choices: Choices, dimensions: dict[str, Dimension],
                  shots: Range | None) -> dict[str, str]:
    """Values for each dimension in registry order, asking only those that apply given what is chosen so far."""
    point: dict[str, str] = {}
    point_type = TrainStrategy if dimensions is TRAIN_DIMENSIONS else Strategy
    for name, dim in dimensions.items():
        if name == "method" and dimensions is TRAIN_DIMENSIONS:
            values = choices.get(name, (dim.default,))
            point[name] = trial.suggest_categorical(f"{prefix}.{name}", list(values)) if len(values) > 1 \
                else values[0]
            if point[name] == UNTRAINED:
                return point
            continue
        if dim.applies is not None and not dim.applies(point_type(**_known(point, point_type))):
            continue
        values = choices.get(name, (dim.default,))
        value = trial.suggest_categorical(f"{prefix}.{name}", list(values)) if len(values) > 1 else values[0]
        if name == "icl" and value in DEMO_SELECTORS and value != "zero":
            k = shots.suggest(trial, f"{prefix}.shots") if shots else 3
            value = f"{value}-{int(k)}"
        point[name] = value
    return point


def _known(point: dict[str, str], point_type) -> dict[str, str]:
    return {k: v for k, v in point.items() if k in point_type.__dataclass_fields__}


def _sampled_training(trial, training: TrainingConfig, ranges: dict[str, Range], strategy: TrainStrategy,
                      recipe: dict[str, str]) -> TrainingConfig:
    """The training section with the trial's recipe and its settings' ranges sampled, each only where its stage
    runs (`sft.*` with SFT, `rl.*` with RL, `relabel.*` with the uncertain label, `lora.*` and `n_train` always)."""
    applies = {"sft": strategy.has_sft, "rl": strategy.has_rl, "relabel": strategy.has_sft and strategy.uncertain
               == "on", "lora": True, "n_train": True, "rgen": strategy.reasoning_source == "rgen"}
    data = training.model_dump()
    for path, spread in ranges.items():
        section = path.split(".")[0]
        if applies.get(section, False):
            _set(data, path, spread.suggest(trial, f"train.{path}"))
    data["strategies"] = [{k: v for k, v in recipe.items()}]
    data["evaluate_base"] = False
    return TrainingConfig.model_validate(data)


def _set(data: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for key in parents:
        data = data[key]
    data[leaf] = value


def _ranges(node: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], dict]:
    """Every range mapping ({low, high, log?, step?}) in a raw section, by its path."""
    if isinstance(node, dict) and node and set(node) <= RANGE_KEYS and {"low", "high"} <= set(node):
        return {path: node}
    if isinstance(node, dict):
        return {p: r for key, value in node.items() for p, r in _ranges(value, (*path, str(key))).items()}
    return {}


def _field_type(path: tuple[str, ...]) -> type:
    """int or float: the annotation of the training setting at `path`."""
    model: Any = TrainingConfig
    for key in path[:-1]:
        model = model.model_fields[key].annotation
    annotation = model.model_fields[path[-1]].annotation
    return int if annotation is int else float


def _number(where: str, raw: dict, key: str) -> float:
    """The finite number a range gives as `key`, or one line."""
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{where}: {key} is {value!r}; give a finite number")
    return float(value)


def _checked_range(where: str, raw: dict, integer: bool, least: float | None = None) -> Range:
    """A range as a space file gives it (`least`: the smallest value the setting takes), or one line."""
    low, high = _number(where, raw, "low"), _number(where, raw, "high")
    log, step = bool(raw.get("log", False)), _number(where, raw, "step") if raw.get("step") is not None else None
    if low > high:
        raise UserError(f"{where}: low {raw['low']} is above high {raw['high']}")
    if least is not None and low < least:
        raise UserError(f"{where}: low {raw['low']} is below {least:g}, the least this setting takes")
    if log and low <= 0:
        raise UserError(f"{where}: a log range needs low > 0 (got {raw['low']})")
    if log and step is not None:
        raise UserError(f"{where}: a range is either log or stepped, not both")
    if step is not None and step <= 0:
        raise UserError(f"{where}: step {raw['step']} must be above 0")
    if integer and any(v != int(v) for v in (low, high, step or 1)):
        raise UserError(f"{where}: this setting is an integer: give whole numbers")
    return Range(low, high, log, integer, step)


def _choices(block: Any, where: str, dimensions: dict[str, Dimension], extra: tuple[str, ...] = ()) -> Choices:
    """A strategy block's dimensions -> allowed values (validated by the registry; icl may name a method)."""
    if isinstance(block, list):
        raise UserError(f"{where}: a search space has one block (a mapping of dimension -> values), not a list")
    found: Choices = {}
    for key, values in (block or {}).items():
        if key == "shots":
            continue
        listed = values if isinstance(values, list) else [values]
        if not listed:
            raise UserError(f"{where}.{key}: lists no value")
        canonical = []
        for value in listed:
            if key == "icl" and str(value) in DEMO_SELECTORS:
                canonical.append(str(value))  # a method: its K comes from `shots`
            elif key == "method" and str(value) in extra:
                canonical.append(str(value))
            else:
                try:
                    canonical.append(parse_value(key, value, dimensions))
                except KeyError as exc:
                    raise UserError(f"{where}.{key}: {exc.args[0]}") from None
                except ValueError as exc:
                    raise UserError(f"{where}.{key}: {exc}") from None
        found[key] = tuple(dict.fromkeys(canonical))
    return found


def _shots(block: Any, where: str) -> Range | None:
    raw = (block or {}).get("shots") if isinstance(block, dict) else None
    if raw is None:
        return None
    if isinstance(raw, dict):
        return _checked_range(f"{where}.shots", raw, integer=True, least=1)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1:
        return Range(raw, raw, False, True)
    raise UserError(f"{where}.shots: give a range such as {{low: 1, high: 5}}, or one whole number")


def read_space(path: Path) -> Space:
    """Parse and validate a space file; any problem is one UserError line naming the file and the key."""
    raw = load_yaml(path, "space file")
    fixed = copy.deepcopy(raw)
    if not isinstance(raw.get("search"), dict | None):
        raise UserError(f"{path}: search: a mapping with keys {', '.join(SearchConfig.model_fields)}")
    search = validated(SearchConfig, fixed.pop("search", None) or {}, path, "search")
    ranges: dict[str, Range] = {}
    if isinstance(fixed.get("training"), dict):
        for where, spread in _ranges({k: v for k, v in fixed["training"].items() if k != "strategies"}).items():
            try:
                integer = _field_type(where) is int
            except (KeyError, AttributeError, TypeError):
                raise UserError(f"{path}: training.{'.'.join(where)}: unknown setting") from None
            ranges[".".join(where)] = _checked_range(f"{path}: training.{'.'.join(where)}", spread, integer)
        for end in ("high", "low"):  # both ends must be valid values of their settings; the low end stays
            for where, spread in ranges.items():
                _set(fixed["training"], where, int(getattr(spread, end)) if spread.integer else getattr(spread, end))
            validate_grid({**fixed, "strategies": {}, "training": {**fixed["training"], "strategies": {}}}, path)
    grid = validate_grid(fixed, path)
    if len(grid.datasets) != 1 or len(grid.models) != 1 or len(grid.seeds) != 1:
        raise UserError(f"{path}: a search optimises one dataset, one model and one seed; give one of each (run "
                        "one search per dataset or model)")
    inference = _choices(raw.get("strategies"), f"{path}: strategies", DIMENSIONS)
    shots = {"infer": _shots(raw.get("strategies"), f"{path}: strategies")}
    training = None
    if grid.training is not None:
        block = raw["training"].get("strategies")
        training = _choices(block, f"{path}: training.strategies", TRAIN_DIMENSIONS, extra=(UNTRAINED,))
        methods = training.get("method", (TRAIN_DIMENSIONS["method"].default,))
        if grid.training.evaluate_base and UNTRAINED not in methods:
            methods = (UNTRAINED, *methods)
        training["method"] = methods
        shots["train"] = _shots(block, f"{path}: training.strategies")
    for where, choices, shot in (("strategies", inference, shots["infer"]),
                                 ("training.strategies", training or {}, shots.get("train"))):
        methods = [v for v in choices.get("icl", ()) if v in DEMO_SELECTORS and v != "zero"]
        if methods and shot is None:
            raise UserError(f"{path}: {where}.icl lists {methods[0]} without a number of shots: add shots: "
                            "{low: 1, high: 5}, or write it as random-3")
    space = Space(path, grid, search, inference, training, {k: v for k, v in shots.items() if v}, ranges, raw)
    _check_search(space)
    return space


def _check_search(space: Space) -> None:
    """What the space and the search settings cannot do together."""
    path, search = space.path, space.search
    free = [k for k, v in space.inference.items() if len(v) > 1] + \
        [k for k, v in (space.training or {}).items() if len(v) > 1]
    spread = [k for k, r in [*space.ranges.items(), *space.shots.items()] if r.high > r.low]
    if not free and not spread:
        raise UserError(f"{path}: the space is empty: no dimension lists two values and no setting has a range; "
                        "list choices under strategies (e.g. decoding: [generate, ppl])")
    if len(search.objectives) > 1 and search.pruner != "none":
        raise UserError(f"{path}: search: several objectives ({', '.join(search.objectives)}) cannot be pruned "
                        "(a trial is not worse on all at once); set pruner: none")
    if search.sampler == "bruteforce":
        continuous = [k for k, r in space.ranges.items() if not r.integer and r.step is None and r.high > r.low]
        if continuous:
            raise UserError(f"{path}: search: bruteforce needs a finite space, but training.{continuous[0]} is a "
                            "continuous range: give it a step, or use sampler: tpe")
    if search.sampler == "nsga2" and len(search.objectives) == 1:
        raise UserError(f"{path}: search: nsga2 is a multi-objective sampler; with one objective use tpe")
