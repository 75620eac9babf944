"""The statistics behind a report, computed from per-example predictions (never from logged aggregates).

- `bootstrap`: percentile bootstrap over examples (seeded) as resample weights, so accuracy and macro-F1 of B
  resamples of every run of a board are a few wide matrix products (a thousand runs of a thousand examples in
  about a second).
- `mcnemar`: exact McNemar test of two classifiers on the same examples (two-sided binomial test on the
  discordant pairs), the standard paired test for accuracy.
- `permutation_p`: the paired approximate randomization test of a macro-F1 difference (Noreen 1989; the standard
  significance test for F1 in NLP): each example's two predictions are swapped or not with probability 1/2.
  Exact (every swap pattern) when that is cheap; otherwise sequential Monte Carlo (Besag & Clifford 1991):
  permutations are drawn in growing rounds until `HITS` of them reach the observed difference. Where fewer than
  `TAIL_HITS` of `MAX_PERMUTATIONS` do, the observed difference lies in the far tail, and p is read from the normal
  approximation of the randomization distribution (symmetric about 0, its spread estimated from the draws): the
  smallest p-value is set by the data, never by a resample count.
- `holm`: Holm-Bonferroni adjusted p-values across the rows compared with one baseline.
- `two_level`: the interval of a mean over repeats (seeds, prompt templates) that resamples the repeats within
  every resample of the examples, so a result that swings from repeat to repeat gets a wide interval.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from math import erfc, sqrt

import numpy as np
from scipy.stats import binomtest

B_DEFAULT = 1000
LEVEL = 0.95
EXACT_CONFIGURATIONS = 1 << 16  # at most this many swap-count vectors: enumerate them all (the exact p)
HITS = 100  # Monte Carlo stops once this many permutations reach the observed difference (p within +-20%) ...
MAX_PERMUTATIONS = 1 << 15  # ... or after about this many
TAIL_HITS = 10  # fewer hits than this: the p-value is in the far tail, read from the normal approximation
_BOOTSTRAP_RUNS = 256  # runs whose resampled counts come from one matrix product


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


def f1_of_counts(tp: np.ndarray, predicted: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Macro-F1 from per-class counts ([..., classes]): the mean F1 over the classes that occur as gold or as a
    prediction (scikit-learn's default class set; a class absent from both has no F1 and is not averaged)."""
    denominator = gold + predicted
    present = denominator > 0
    f1 = 2 * tp / np.where(present, denominator, 1)  # an absent class has no true positives: 0
    return f1.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


def _counts(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-example one-hot rows over the real classes: true positives, predictions, gold (an answer that is no
    class, uncertain or invalid, counts nowhere as a prediction)."""
    size = n_classes + 1  # a sink column for every answer that is not a class, dropped below
    pred = np.minimum(pred, n_classes)
    tp = _onehot(np.where(gold == pred, gold, n_classes), size)[..., :n_classes]
    return tp, _onehot(pred, size)[..., :n_classes], _onehot(gold, size)[:, :n_classes]


def _weighted(weights: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """`weights` [b, n] summed over the examples of `onehot` ([..., n, C]) -> [b, ..., C], as one matrix product for
    all the leading dimensions (many runs: one wide product instead of one six columns wide per run). Resample
    weights and their sums are whole numbers below 2^24: the product is exact in float32, and twice as fast."""
    columns = np.moveaxis(onehot, -2, 0).reshape(onehot.shape[-2], -1).astype(np.float32)
    summed = weights.astype(np.float32) @ columns
    return summed.astype(np.float64).reshape(len(weights), *onehot.shape[:-2], onehot.shape[-1])


def macro_f1(gold: np.ndarray, pred: np.ndarray, n_classes: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Macro-F1 over the classes present as gold or prediction (`gold`, `pred`: ids < `n_classes` for classes;
    `pred` may hold larger ids for uncertain/invalid answers, wrong for every class; `pred` [n] for one run or
    [runs, n]). With `weights` [b, n]: one value per resample ([b] or [b, runs]), from weighted per-class counts."""
    w = np.ones((1, len(gold))) if weights is None else weights
    tp, predicted, gold_counts = (_weighted(w, c) for c in _counts(gold, pred, n_classes))
    result = f1_of_counts(tp, predicted, gold_counts.reshape(len(w), *[1] * (pred.ndim - 1), -1))
    return result if weights is not None else result[0]


def interval(point: float, replicates: np.ndarray, level: float = LEVEL) -> Interval:
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(float(point), float(low), float(high))


def two_level(point: float, replicates: list[np.ndarray], rng: np.random.Generator) -> Interval:
    """The interval of a mean over repeats, from each repeat's replicates ([B] each, over one shared resample of the
    examples): in every replicate the repeats are drawn again with replacement and averaged."""
    stacked = np.stack(replicates)  # [repeats, B]
    drawn = rng.integers(0, len(replicates), size=(stacked.shape[1], len(replicates)))  # [B, repeats]
    return interval(point, stacked[drawn, np.arange(stacked.shape[1])[:, None]].mean(axis=1))


def spread(values: Sequence[float]) -> float:
    """The sample standard deviation across repeats (0 for one)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def bootstrap(gold: np.ndarray, preds: np.ndarray, n_classes: int,
              weights: np.ndarray) -> list[tuple[Interval, Interval, np.ndarray, np.ndarray]]:
    """Accuracy and macro-F1 of each run of `preds` [runs, n] with intervals, and their replicates, from resample
    `weights` [b, n]; `_BOOTSTRAP_RUNS` runs at a time share each matrix product (the memory stays bounded)."""
    found = []
    for start in range(0, len(preds), _BOOTSTRAP_RUNS):
        runs = preds[start : start + _BOOTSTRAP_RUNS]
        correct = (runs == gold).astype(float)
        acc_replicates = correct @ weights.T / len(gold)
        f1_replicates = np.ascontiguousarray(macro_f1(gold, runs, n_classes, weights).T)
        f1 = macro_f1(gold, runs, n_classes)
        found += [(interval(c.mean(), acc), interval(point, replicates), acc, replicates)
                  for c, acc, point, replicates in zip(correct, acc_replicates, f1, f1_replicates)]
    return found


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar p-value: of the examples exactly one run gets right, is the split 50/50?"""
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def _swap_grid(sizes: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every vector of swap counts (k_g in 0..n_g per group), with its probability prod C(n_g, k_g) / 2^n_g."""
    from scipy.stats import binom

    shape = [n + 1 for n in sizes]
    probabilities = [binom.pmf(np.arange(n + 1), n, 0.5) for n in sizes]
    total = int(np.prod(shape))
    for start in range(0, total, 1 << 14):
        index = np.unravel_index(np.arange(start, min(start + (1 << 14), total)), shape)
        yield np.stack(index, axis=1).astype(np.float32), np.prod([p[i] for p, i in zip(probabilities, index)], axis=0)


def _random_swaps(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    """`size` random swap patterns of `n` examples (each swapped with probability 1/2), from packed random bits."""
    packed = rng.integers(0, 256, size=(size, (n + 7) // 8), dtype=np.uint8)
    return np.unpackbits(packed, axis=1, count=n).astype(np.float32)


def permutation_p(gold: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int, seed: int = 0) -> float:
    """Two-sided paired approximate randomization p-value of macro-F1(a) - macro-F1(b) on the same examples: the
    probability, when each example's two predictions are swapped with probability 1/2, that |difference| reaches the
    observed one (see the module doc for how it is computed)."""
    differ = pred_a != pred_b
    if not differ.any():
        return 1.0
    tp_a, p_a, gold_counts = _counts(gold, pred_a, n_classes)
    tp_b, p_b, _ = _counts(gold, pred_b, n_classes)
    totals = [x.sum(axis=0).astype(np.float32) for x in (tp_a, p_a, tp_b, p_b)]
    g = gold_counts.sum(axis=0).astype(np.float32)
    moves = np.concatenate([tp_b - tp_a, p_b - p_a], axis=1)[differ].astype(np.float32)  # swap i: b's to a
    # examples with the same (gold, a, b) are exchangeable: for the exact p, a swap pattern is summed up by how many
    # of each such group are swapped
    _, first, sizes = np.unique(np.stack([gold, pred_a, pred_b], axis=1)[differ], axis=0, return_index=True,
                                return_counts=True)

    def difference(swapped: np.ndarray, moves: np.ndarray = moves) -> np.ndarray:
        moved = swapped @ moves
        a = f1_of_counts(totals[0] + moved[:, :n_classes], totals[1] + moved[:, n_classes:], g)
        b = f1_of_counts(totals[2] - moved[:, :n_classes], totals[3] - moved[:, n_classes:], g)
        return a - b

    observed = abs(float(difference(np.zeros((1, len(moves)), dtype=np.float32))[0])) - 1e-6  # ties count
    if np.prod((sizes + 1).astype(float)) <= EXACT_CONFIGURATIONS:
        return float(min(1.0, sum(w[np.abs(difference(k, moves[first])) >= observed].sum()
                                  for k, w in _swap_grid(sizes))))
    rng = np.random.default_rng(seed)
    draws: list[np.ndarray] = []
    hits, size = 0, 1024
    while hits < HITS and sum(map(len, draws)) < MAX_PERMUTATIONS:
        draws.append(difference(_random_swaps(rng, size, len(moves))))
        hits += int(np.sum(np.abs(draws[-1]) >= observed))
        size *= 2
    n = sum(map(len, draws))
    if hits >= TAIL_HITS:
        return (hits + 1) / (n + 1)
    spread = float(np.sqrt(np.mean(np.square(np.concatenate(draws)))))  # the distribution is symmetric about 0
    return float(erfc(observed / (spread * sqrt(2)))) if spread > 0 else 1 / (n + 1)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order (monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
