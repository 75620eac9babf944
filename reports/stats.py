"""The statistics behind a report, computed from per-example predictions (never from logged aggregates).

- `bootstrap`: percentile bootstrap over examples (seeded) as resample weights, so accuracy and macro-F1 of B
  resamples are a few matrix products per run (a thousand runs of a thousand examples in seconds).
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

    def text(self, signed: bool = False, digits: int = 3) -> str:
        """`0.550 [0.450, 0.640]`; signed for differences (`+0.020 [...]`)."""
        form = f"{'+' if signed else ''}.{digits}f"
        return f"{self.value:{form}} [{self.low:{form}}, {self.high:{form}}]"


def resamples(n: int, b: int = B_DEFAULT, seed: int = 0) -> np.ndarray:
    """[b, n] bootstrap weights: how often each of n examples is drawn in each of b resamples (with replacement).
    One draw per board pairs every run evaluated on those examples."""
    return weights_of(np.random.default_rng(seed).integers(0, n, size=(b, n)), n)


def weights_of(draws: np.ndarray, n: int) -> np.ndarray:
    """Resample weights from [b, n] drawn example indices."""
    b = draws.shape[0]
    return np.bincount((draws + (np.arange(b) * n)[:, None]).ravel(), minlength=b * n).reshape(b, n).astype(float)


def _onehot(labels: np.ndarray, size: int) -> np.ndarray:
    return np.eye(size)[labels]


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_classes: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Macro-F1 over the `n_classes` real classes (`pred` may hold ids >= n_classes for uncertain/invalid answers,
    wrong for every class); 0 for a class without gold or predicted examples, as scikit-learn's `zero_division=0`.
    With `weights` [b, n]: one value per resample, from weighted per-class counts (three small matmuls)."""
    w = np.ones((1, len(gold))) if weights is None else weights
    pred = np.minimum(pred, n_classes)
    size = n_classes + 1  # one column for every answer that is not a class
    tp = w @ _onehot(np.where(gold == pred, gold, n_classes), size)
    denominator = w @ _onehot(gold, size) + w @ _onehot(pred, size)
    tp, denominator = tp[:, :n_classes], denominator[:, :n_classes]
    f1 = np.divide(2 * tp, denominator, out=np.zeros(tp.shape), where=denominator > 0)
    result = f1.mean(axis=1)
    return result if weights is not None else result[0]


def interval(point: float, replicates: np.ndarray, level: float = LEVEL) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(float(point), float(low), float(high))


def bootstrap(gold: np.ndarray, pred: np.ndarray, n_classes: int,
              weights: np.ndarray) -> tuple[Interval, Interval, np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 of one run with intervals, and their replicates, from resample `weights` [b, n]."""
    correct = (gold == pred).astype(float)
    acc_replicates = weights @ correct / len(gold)
    f1_replicates = macro_f1(gold, pred, n_classes, weights)
    return (interval(correct.mean(), acc_replicates), interval(macro_f1(gold, pred, n_classes), f1_replicates),
            acc_replicates, f1_replicates)


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
