"""From finished runs and their predictions to the report's tables: leaderboards with intervals, paired tests
against a baseline row, strategy effects with the other dimensions held equal, and paper reference deltas.

Runs are compared only on the same evaluation examples: a *board* is one (dataset, model, evaluation split,
limit, sample seed); its rows share one bootstrap draw of example indices, so every interval and every paired
difference in a board comes from the same resamples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from reports.stats import Interval, bootstrap, holm, interval, mcnemar, permutation_ps, resamples
from reports.store import ENV_COLUMNS, METRIC_COLUMNS, PARAM_COLUMNS, StoreData
from reports.vocabulary import (
    BASELINE,
    DATASET,
    DTYPE,
    EVAL_LIMIT,
    EVAL_SAMPLE_SEED,
    EVAL_SPLIT,
    INFER_PREFIX,
    INFER_REASONING,
    INFER_TEMPLATE,
    MODEL,
    NONE,
    RESULT_ENVIRONMENT,
    SEED,
    TRAIN_HASH,
    TRAIN_PREFIX,
    TRAIN_REASONING,
    TRAIN_REASONING_SOURCE,
    TRAIN_SECONDS,
)
from strategies.lookup import did_you_mean
from strategies.prompts import INVALID, UNCERTAIN
from strategies.registry import DIMENSIONS, Strategy
from strategies.templates import DEFAULT_TEMPLATE
from strategies.training import TRAIN_DIMENSIONS, TrainStrategy

BOARD_KEYS = (DATASET, MODEL, *(PARAM_COLUMNS + k for k in (EVAL_SPLIT, EVAL_LIMIT, EVAL_SAMPLE_SEED)))
ALWAYS_PAIRED = (SEED, DTYPE)  # settings that are no strategy dimension but change results: equal in every pair


@dataclass
class Row:
    """One strategy combination on one board, with its per-example correctness and bootstrap replicates."""

    run_id: str
    training: str
    strategy: str
    base_strategy: str  # the strategy with its prompt template left out (`strategy` for other rows)
    params: dict[str, str]
    metrics: dict[str, float]
    accuracy: Interval
    macro_f1: Interval
    predicted: np.ndarray  # the board's class ids (see `_Classes`)
    correct: np.ndarray
    acc_replicates: np.ndarray
    f1_replicates: np.ndarray
    environment: dict[str, str] = field(default_factory=dict)  # what produced it (`runners.environment`)
    p_accuracy: float | None = None  # McNemar against the board's baseline row, Holm-adjusted
    p_macro_f1: float | None = None  # paired approximate randomization against the baseline row, Holm-adjusted

    @property
    def label(self) -> str:
        return self.strategy if self.training == NONE else f"{self.training} / {self.strategy}"

    @property
    def base_label(self) -> str:
        """The label with the prompt template left out: what is compared across templates."""
        return self.base_strategy if self.training == NONE else f"{self.training} / {self.base_strategy}"

    @property
    def template(self) -> str:
        """The inference prompt template (runs logged before templates existed had the default wording)."""
        return self.params.get(INFER_TEMPLATE, DEFAULT_TEMPLATE) if self.kind == "llm" else NONE

    @property
    def seed(self) -> str:
        return self.params.get(SEED, NONE)

    @property
    def kind(self) -> str:
        """`classical` for a classical baseline (no LLM, no strategy), else `llm`: rows pair only with their kind."""
        return "classical" if self.params.get(BASELINE, NONE) != NONE else "llm"


@dataclass
class Board:
    """A leaderboard: every row evaluated on the same examples, sorted by accuracy."""

    dataset: str
    model: str
    evaluation: str
    n_examples: int
    rows: list[Row]
    gold: np.ndarray
    n_classes: int
    baseline: Row | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"{self.dataset} / {self.model} ({self.evaluation}, {self.n_examples} examples)"

    @cached_property
    def seeds(self) -> tuple[str, ...]:
        return tuple(sorted({r.seed for r in self.rows}))

    @cached_property
    def by_label(self) -> dict[str, list[Row]]:
        """The rows of each strategy (a row label), one per seed, in seed order; strategies in board order."""
        groups: dict[str, list[Row]] = {}
        for row in self.rows:
            groups.setdefault(row.label, []).append(row)
        return {label: sorted(rows, key=lambda r: r.seed) for label, rows in groups.items()}

    def seeds_of(self, row: Row) -> tuple[str, ...]:
        """The seeds `row`'s result holds for: its own; or, where the board has several seeds and this is its
        strategy's only run, all of them (a run nothing random touches runs once: `bench.plan.grid.expand`)."""
        if len(self.seeds) > 1 and len(self.by_label[row.label]) == 1:
            return self.seeds
        return (row.seed,)


@dataclass(frozen=True)
class Effect:
    """The mean paired gain of `value` over the dimension's reference value, other dimensions held equal."""

    dimension: str
    value: str
    reference: str
    pairs: int
    accuracy: Interval
    macro_f1: Interval


@dataclass(frozen=True)
class _Classes:
    """One integer coding of a board's answers: the real classes (gold or predicted by any row) 0..n-1, uncertain
    n, invalid n + 1; every row of the board uses it, so rows can be compared example by example."""

    index: dict[str, int]
    n: int

    @classmethod
    def of(cls, gold: Sequence[str], predictions: Sequence[Sequence[str]]) -> _Classes:
        classes = sorted(set(gold).union(*map(set, predictions)) - {UNCERTAIN, INVALID})
        return cls({c: i for i, c in enumerate(classes)} | {UNCERTAIN: len(classes), INVALID: len(classes) + 1},
                   len(classes))

    def encode(self, answers: Sequence[str]) -> np.ndarray:
        return np.array([self.index[a] for a in answers])


def _default_baseline(rows: list[Row]) -> Row | None:
    """The plainest row: plain SFT with zero-shot inference when the board has training, else zero-shot."""
    for training in ("sft", NONE):
        found = [r for r in rows if r.training == training and r.strategy == "zero"]
        if found:
            return found[0]
    return None


def build_boards(data: StoreData, baseline: str | None = None, seed: int = 0) -> list[Board]:
    """One board per (dataset, model, evaluation settings); rows with intervals and tests against the baseline
    (`baseline`: a row label such as `zero` or `sft / zero`; default the plainest row)."""
    boards = []
    classical = data.runs.filter(pl.col("is_baseline"))
    for key, frame in data.runs.filter(~pl.col("is_baseline")).group_by(BOARD_KEYS, maintain_order=True):
        dataset, model, split, limit, sample_seed = key
        same_examples = [pl.col(k) == v for k, v in zip(BOARD_KEYS, key) if k != MODEL]
        frame = pl.concat([frame, classical.filter(same_examples)], how="diagonal_relaxed")  # on every board
        first = data.predictions[frame["run_id"][0]].sort("id")
        ids, notes = first["id"].to_list(), []
        records = []
        for record in frame.iter_rows(named=True):
            predictions = data.predictions[record["run_id"]].sort("id")
            if predictions["id"].to_list() != ids:
                notes.append(f"{record['run_name']}: evaluated on other examples, left out of this board")
                continue
            records.append((record, predictions["prediction"].to_list()))
        classes = _Classes.of(first["gold"].to_list(), [answers for _, answers in records])
        gold, weights = classes.encode(first["gold"].to_list()), resamples(len(ids), seed=seed)
        encoded = np.array([classes.encode(answers) for _, answers in records])
        rows = []
        for (record, _), predicted, (acc, f1, acc_replicates, f1_replicates) in zip(
                records, encoded, bootstrap(gold, encoded, classes.n, weights)):
            rows.append(Row(
                record["run_id"], record["training"], record["strategy"], record["base_strategy"],
                _columns(record, PARAM_COLUMNS), _columns(record, METRIC_COLUMNS),
                acc, f1, predicted, gold == predicted, acc_replicates, f1_replicates, _columns(record, ENV_COLUMNS),
            ))
        rows.sort(key=lambda r: (-r.accuracy.value, -r.macro_f1.value, r.label))
        board = Board(dataset, model, f"{split}, limit {limit}, sample seed {sample_seed}", len(ids), rows, gold,
                      classes.n, notes=notes + _class_notes(rows, gold, classes.n) + _environment_notes(rows))
        _test_against_baseline(board, baseline, seed)
        boards.append(board)
    return boards


def _columns(record: dict, prefix: str) -> dict:
    """The values of a runs-frame row's columns under `prefix`, by their names without it (absent ones left out)."""
    return {k.removeprefix(prefix): v for k, v in record.items() if k.startswith(prefix) and v is not None}


def _class_notes(rows: list[Row], gold: np.ndarray, n_classes: int) -> list[str]:
    """Which classes macro-F1 averages over, when the evaluation sample lacks some of the dataset's classes."""
    dataset_classes = max((int(r.metrics.get("n_classes", 0)) for r in rows), default=0)
    in_sample = len(np.unique(gold))
    if dataset_classes <= in_sample:
        return []
    return [f"{dataset_classes - in_sample} of the dataset's {dataset_classes} classes never occur as gold in these "
            f"{len(gold)} examples; macro-F1 averages over the classes that occur as gold or as a prediction "
            f"({in_sample} as gold here), as scikit-learn does by default"]


def _environment_notes(rows: list[Row]) -> list[str]:
    """One note per library (or device) that changes results and differs between the board's rows: their numbers
    may differ for that reason alone."""
    notes = []
    for name in RESULT_ENVIRONMENT:
        counts = Counter(r.environment.get(name, "not recorded") for r in rows)
        if len(counts) > 1:
            seen = ", ".join(f"{value} ({n} row{'s' if n > 1 else ''})" for value, n in sorted(counts.items()))
            notes.append(f"rows produced under different {name} {'' if name == 'device' else 'versions '}"
                         f"({seen}): a difference between them may come from that alone")
    return notes


def _test_against_baseline(board: Board, name: str | None, seed: int) -> None:
    chosen = [r for r in board.rows if r.label == name] if name else []
    if name and not chosen:
        close = did_you_mean(name, (r.label for r in board.rows))
        board.notes.append(f"baseline '{name}' is not a row of this board{close}; using the plainest row instead")
    board.baseline = chosen[0] if chosen else _default_baseline(board.rows)
    others = [r for r in board.rows if r is not board.baseline]
    if board.baseline is None or not others:
        return
    base = board.baseline
    p_acc = holm([mcnemar(r.correct, base.correct) for r in others])
    p_f1 = holm(permutation_ps(board.gold, [r.predicted for r in others], base.predicted, board.n_classes, seed))
    for row, pa, pf in zip(others, p_acc, p_f1):
        row.p_accuracy, row.p_macro_f1 = pa, pf


def _dimension_columns() -> dict[str, str]:
    """Dimension name in the report -> param key: inference dimensions, then training dimensions."""
    return {**{d: INFER_PREFIX + d for d in DIMENSIONS},
            **{TRAIN_PREFIX + d: TRAIN_PREFIX + d for d in TRAIN_DIMENSIONS}}


def _reference(dimension: str) -> str:
    return TRAIN_DIMENSIONS[dimension.removeprefix(TRAIN_PREFIX)].default if dimension.startswith(TRAIN_PREFIX) \
        else DIMENSIONS[dimension].default


def _gated_by(column: str, columns: dict[str, str]) -> set[str]:
    """The conditional dimensions whose applicability `column`'s value decides (ppl_norm by decoding, rl_algo by
    method): they are left out of the context when `column` varies, since they cannot be held equal."""
    prefix, registry, point = (TRAIN_PREFIX, TRAIN_DIMENSIONS, TrainStrategy) if column.startswith(TRAIN_PREFIX) \
        else (INFER_PREFIX, DIMENSIONS, Strategy)
    name = column.removeprefix(prefix)
    values = [v.name for v in registry[name].values if not v.name.endswith("-K")]
    gated = set()
    for other, dim in registry.items():
        if dim.applies and other != name and len({dim.applies(point(**{name: v})) for v in values}) > 1:
            gated.add(prefix + other)
    return gated


def strategy_effects(boards: list[Board]) -> list[Effect]:
    """For every dimension and non-reference value: the mean paired gain over all pairs of LLM rows (on any board)
    that differ only in that dimension, one at the value and one at the reference: every other dimension (but those
    the varied one gates), the seed and the dtype equal, and for an inference dimension the same trained model
    (`train.hash`). Classical baselines have no strategy and never pair. Intervals from the boards' shared
    bootstrap draws (replicate differences averaged over pairs). Rows are bucketed by their context, so this is
    linear in the number of rows."""
    columns = _dimension_columns()
    effects = []
    for dimension, column in columns.items():
        reference = _reference(dimension)
        same_model = () if column.startswith(TRAIN_PREFIX) else (TRAIN_HASH,)
        context = [c for c in columns.values() if c != column and c not in _gated_by(column, columns)] \
            + [*ALWAYS_PAIRED, *same_model]
        gains: dict[str, dict[tuple[int, int], tuple[Row, Row]]] = {}
        for board in boards:
            buckets: dict[tuple, dict[str, list[Row]]] = {}
            for row in (r for r in board.rows if r.kind == "llm"):
                for seed in board.seeds_of(row):  # a run that stands for every seed pairs with each
                    key = tuple(seed if c == SEED else row.params.get(c, NONE) for c in context)
                    buckets.setdefault(key, {}).setdefault(row.params.get(column, NONE), []).append(row)
            for by_value in buckets.values():
                controls = by_value.get(reference, [])
                for value, rows in by_value.items():
                    if value not in (reference, NONE):
                        gains.setdefault(value, {}).update(((id(r), id(c)), (r, c)) for r in rows for c in controls)
        for value, found in gains.items():
            pairs = list(found.values())
            if not pairs:
                continue
            acc = np.mean([a.acc_replicates - b.acc_replicates for a, b in pairs], axis=0)
            f1 = np.mean([a.f1_replicates - b.f1_replicates for a, b in pairs], axis=0)
            point_acc = float(np.mean([a.accuracy.value - b.accuracy.value for a, b in pairs]))
            point_f1 = float(np.mean([a.macro_f1.value - b.macro_f1.value for a, b in pairs]))
            effects.append(Effect(dimension, value, reference, len(pairs), interval(point_acc, acc),
                                  interval(point_f1, f1)))
    return effects


RowTest = Callable[[Row], bool]
INFERENCE_CONTEXT = tuple(INFER_PREFIX + d for d in DIMENSIONS if INFER_PREFIX + d != INFER_REASONING)
TRAINING_CONTEXT = tuple(TRAIN_PREFIX + d for d in TRAIN_DIMENSIONS
                         if TRAIN_PREFIX + d not in (TRAIN_REASONING, TRAIN_REASONING_SOURCE))


@dataclass(frozen=True)
class Reference:
    """A published delta the grid can reproduce, and how to measure the same delta on a board: the treated LLM rows,
    and for each the control LLM row that shares its `paired_on` params and `ALWAYS_PAIRED` (the best treated row
    only, if `best_only`)."""

    claim: str
    source: str
    setting: str
    delta_points: float | None  # None: the paper reports no figure for this comparison (an ablation)
    treatment: RowTest
    control: RowTest
    paired_on: tuple[str, ...] = ()
    best_only: bool = False


def _param(name: str, *values: str) -> RowTest:
    return lambda row: row.params.get(name, NONE) in values


def _q_to_ra(source: str) -> RowTest:
    """Trained to write reasonings from `source` first, and asked for them at inference (Q -> R, A)."""
    return lambda row: _param(TRAIN_REASONING_SOURCE, source)(row) and _param(INFER_REASONING, "on")(row)


def _q_to_a(row: Row) -> bool:
    """Trained and evaluated label-only (Q -> A)."""
    return row.training != NONE and _param(TRAIN_REASONING, "off")(row) and _param(INFER_REASONING, "off")(row)


_TWO_STAGE = ("Two-stage reasoning, arXiv 2507.00214", "dair-ai/emotion, Llama-3.2-1B-Instruct, full training set, "
              "R-Gen trained on syvai/reasoning-gen")

REFERENCES: tuple[Reference, ...] = (
    Reference("SFT+RL (best algorithm and prompt) over plain SFT, accuracy", "GenCLS++, arXiv 2504.19898",
              "mean over 7 datasets (5 public, 2 in-house), full training sets, the paper's LLM",
              3.46, lambda row: row.training.startswith("sft+"), lambda row: row.label == "sft / zero",
              best_only=True),
    Reference("Q->RA (R-Gen reasonings) over Q->A, accuracy", *_TWO_STAGE, 8.7, _q_to_ra("rgen"), _q_to_a,
              INFERENCE_CONTEXT + TRAINING_CONTEXT),
    Reference("Q->RA (the base model's own reasonings) over Q->A, accuracy: what R-Gen's training buys",
              *_TWO_STAGE, None, _q_to_ra("self"), _q_to_a, INFERENCE_CONTEXT + TRAINING_CONTEXT),
)


@dataclass(frozen=True)
class ReferenceDelta:
    """One measured counterpart of a reference: accuracy delta in points, its interval and McNemar p (Holm-adjusted
    over the reference's comparisons on the board)."""

    reference: Reference
    board: str
    treatment: str
    control: str
    measured: Interval
    p_value: float


def reference_deltas(boards: list[Board]) -> list[ReferenceDelta]:
    """Each reference measured on every board that has its treated rows and their controls."""
    found = []
    for ref in REFERENCES:
        for board in boards:
            llm = [r for r in board.rows if r.kind == "llm"]
            treated = [r for r in llm if ref.treatment(r)]
            if ref.best_only and treated:
                treated = [max(treated, key=lambda r: r.accuracy.value)]
            pairs = []
            for row in treated:
                control = next((c for c in llm if ref.control(c) and c is not row and all(
                    c.params.get(k) == row.params.get(k) for k in ref.paired_on + ALWAYS_PAIRED)), None)
                if control:
                    pairs.append((row, control))
            p_values = holm([mcnemar(row.correct, control.correct) for row, control in pairs])
            for (row, control), p in zip(pairs, p_values):
                delta = interval(100 * (row.accuracy.value - control.accuracy.value),
                                 100 * (row.acc_replicates - control.acc_replicates))
                found.append(ReferenceDelta(ref, board.title, row.label, control.label, delta, p))
    return found


def board_frame(board: Board) -> pl.DataFrame:
    """The leaderboard as a frame (for the terminal and the markdown); a row names its seed when the board has
    several."""
    def p(value: float | None) -> str:
        return "baseline" if value is None else f"{value:.3g}"

    several_seeds = len(board.seeds) > 1

    def strategy(row: Row) -> str:
        return f"{row.strategy} (seed {row.seed})" if several_seeds else row.strategy

    return pl.DataFrame([{
        "training": r.training, "strategy": strategy(r), "accuracy [95% CI]": r.accuracy.text(),
        "macro-F1 [95% CI]": r.macro_f1.text(),
        "invalid": f"{r.metrics.get('invalid_rate', 0):.3f}", "uncertain": f"{r.metrics.get('uncertain_rate', 0):.3f}",
        "p acc (McNemar, Holm)": p(r.p_accuracy) if r is not board.baseline else "baseline",
        "p F1 (randomization, Holm)": p(r.p_macro_f1) if r is not board.baseline else "baseline",
        "train s": f"{r.metrics[TRAIN_SECONDS]:.0f}" if r.metrics.get(TRAIN_SECONDS) else "-",
        "eval ex/s": f"{r.metrics.get('examples_per_s', 0):.1f}",
    } for r in board.rows])
