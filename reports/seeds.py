"""Results across seeds: a strategy run under several seeds (demo draws, training data order, training, sampling)
is summarised by its mean, its spread across seeds, and an interval that accounts for both the examples and the
seeds; its difference from the board's baseline says in how many seeds it has the same sign.

The interval is a two-level bootstrap: each replicate draws the seeds with replacement and, within the board's
shared resample of the examples, averages those seeds' replicate scores, so a strategy whose result swings from
seed to seed gets a wide interval even on many examples. A run that nothing random touches (untrained, zero-shot or
retrieved demos, greedy or scored) is run once (`bench.plan.grid.expand`) and stands for every seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reports.analysis import Board, Row
from reports.stats import Interval, spread, two_level


@dataclass(frozen=True)
class SeedSummary:
    """One strategy (a row label) on one board, over its seeds."""

    board: str
    label: str
    seeds: tuple[str, ...]  # the seeds of its runs
    accuracy: Interval  # mean over seeds; interval over examples and seeds
    accuracy_sd: float  # standard deviation across seeds (0 for one run)
    macro_f1: Interval
    macro_f1_sd: float
    vs_baseline: Interval | None  # mean paired accuracy difference from the baseline strategy (None: it is it)
    same_sign: int  # seeds whose difference has the sign of the mean difference (and is not zero)
    pairs: int  # seed pairs compared

    @property
    def holds_in_every_seed(self) -> bool:
        return self.vs_baseline is not None and self.pairs > 1 and self.same_sign == self.pairs


def _pairs(board: Board, rows: list[Row], baseline: list[Row]) -> list[tuple[Row, Row]]:
    """Each seed's run with the baseline's run of the same seed, a run that stands for every seed pairing with
    each run of the other side."""
    return [(a, b) for a in rows for b in baseline if set(board.seeds_of(a)) & set(board.seeds_of(b))]


def seed_summaries(boards: list[Board], seed: int = 0) -> list[SeedSummary]:
    """A summary per strategy on every board where some strategy ran under more than one seed (none otherwise)."""
    rng = np.random.default_rng(seed)
    found = []
    for board in boards:
        groups = board.by_label
        if all(len(rows) == 1 for rows in groups.values()):
            continue
        baseline = groups.get(board.baseline.label, []) if board.baseline else []
        for label, rows in groups.items():
            acc = [r.accuracy.value for r in rows]
            f1 = [r.macro_f1.value for r in rows]
            pairs = [] if not baseline or label == board.baseline.label else _pairs(board, rows, baseline)
            differences = [a.accuracy.value - b.accuracy.value for a, b in pairs]
            mean_difference = float(np.mean(differences)) if pairs else 0.0
            found.append(SeedSummary(
                board.title, label, tuple(r.seed for r in rows),
                two_level(float(np.mean(acc)), [r.acc_replicates for r in rows], rng), spread(acc),
                two_level(float(np.mean(f1)), [r.f1_replicates for r in rows], rng), spread(f1),
                two_level(mean_difference, [a.acc_replicates - b.acc_replicates for a, b in pairs], rng)
                if pairs else None,
                sum(1 for d in differences if d != 0 and np.sign(d) == np.sign(mean_difference)), len(pairs),
            ))
    return sorted(found, key=lambda s: (s.board, -s.accuracy.value, s.label))

