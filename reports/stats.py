"""The statistics behind a report, computed from per-example predictions (never from logged aggregates).

- `bootstrap`: percentile bootstrap over examples (seeded), vectorised: accuracy and macro-F1 for B resamples.
- `mcnemar`: exact McNemar test of two classifiers on the same examples (two-sided binomial test on the
  discordant pairs), the standard paired test for accuracy.
- `paired_bootstrap_p`: the paired bootstrap p-value of a metric difference (how often the resampled difference
  falls on the other side of zero, doubled), usable for macro-F1 where McNemar does not apply.
- `holm`: Holm-Bonferroni adjusted p-values across the rows compared with one baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

B_DEFAULT = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% percentile-bootstrap interval."""

    value: float
    low: float
    high: float


def resamples(n: int, b: int = B_DEFAULT, seed: int = 0) -> np.ndarray:
    """[b, n] example indices drawn with replacement; the same draw pairs every run of one evaluation set."""
    return np.random.default_rng(seed).integers(0, n, size=(b, n))


def accuracy(correct: np.ndarray) -> np.ndarray:
    """Mean over the last axis of a boolean/0-1 array."""
    return correct.mean(axis=-1)


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-F1 over the `n_classes` real classes for [..., n] integer arrays (pred may hold ids >= n_classes for
    uncertain/invalid answers, which are wrong for every class); 0 for a class without gold or predicted examples,
    as scikit-learn's `zero_division=0`."""
    gold, pred = np.atleast_2d(gold), np.atleast_2d(pred)
    rows = np.arange(gold.shape[0])[:, None]
    size = n_classes + 1  # one bin for every answer that is not a class
    pred = np.minimum(pred, n_classes)
    tp = np.zeros((gold.shape[0], size))
    np.add.at(tp, (rows, np.where(gold == pred, gold, n_classes)), 1)
    gold_count = np.zeros((gold.shape[0], size))
    np.add.at(gold_count, (rows, gold), 1)
    pred_count = np.zeros((gold.shape[0], size))
    np.add.at(pred_count, (rows, pred), 1)
    tp, gold_count, pred_count = tp[:, :n_classes], gold_count[:, :n_classes], pred_count[:, :n_classes]
    denominator = gold_count + pred_count
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=1).squeeze()


def interval(point: float, replicates: np.ndarray, level: float = LEVEL) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(float(point), float(low), float(high))


def bootstrap(gold: np.ndarray, pred: np.ndarray, n_classes: int, draws: np.ndarray) -> tuple[Interval, Interval]:
    """Accuracy and macro-F1 of one run with intervals from the resample indices `draws` ([b, n])."""
    acc = interval(accuracy(gold == pred), accuracy(gold[draws] == pred[draws]))
    f1 = interval(macro_f1(gold, pred, n_classes), macro_f1(gold[draws], pred[draws], n_classes))
    return acc, f1


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value: of the examples exactly one run gets right, is the split 50/50?"""
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_bootstrap_p(differences: np.ndarray) -> float:
    """Two-sided p-value of a paired difference from its bootstrap replicates (at least 1/(b+1))."""
    b = len(differences)
    below = (np.sum(differences <= 0) + 1) / (b + 1)
    above = (np.sum(differences >= 0) + 1) / (b + 1)
    return float(min(1.0, 2 * min(below, above)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order (monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
