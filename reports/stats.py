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
  smallest p-value is set by the data, never by a resample count. A swap pattern is one random bit per example
  where the two differ, drawn as bytes; what each of a byte's 256 values does to the counts is tabled once, so a
  pattern costs one table row per 8 examples. `permutation_ps` tests a board's rows against its baseline at once:
  rows whose patterns have the same number of bytes draw the same patterns (same seed), so they share every draw
  and lookup, and each p-value is the one its row gets alone.
- `holm`: Holm-Bonferroni adjusted p-values across the rows compared with one baseline.
- `two_level`: the interval of a mean over repeats (seeds, prompt templates) that resamples the repeats within
  every resample of the examples, so a result that swings from repeat to repeat gets a wide interval.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from math import erfc, sqrt

import numpy as np
from scipy.stats import binom

B_DEFAULT = 1000
LEVEL = 0.95
EXACT_CONFIGURATIONS = 1 << 16  # at most this many swap-count vectors: enumerate them all (the exact p)
HITS = 100  # Monte Carlo stops once this many permutations reach the observed difference (p within +-20%) ...
MAX_PERMUTATIONS = 1 << 15  # ... or after about this many
TAIL_HITS = 10  # fewer hits than this: the p-value is in the far tail, read from the normal approximation
_BOOTSTRAP_RUNS = 256  # runs whose resampled counts come from one matrix product
_BATCH_PAIRS = 32  # Monte Carlo tests of at most this many pairs share each draw ...
_CHUNK_BYTES = 1 << 18  # ... looked up this many bytes of counts at a time (a core's L2 cache)
_INT8_SPAN = 15  # table entries summed in int8 before widening: at most 15 x 8 swaps = 120 < 128
_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)  # [256, 8]: the
# examples each byte value swaps, in np.unpackbits order


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
    # binomial(n, 1/2) is symmetric: the two-sided p is twice the smaller tail (scipy's binomtest searches for it)
    return float(min(1.0, 2 * binom.cdf(min(only_a, only_b), only_a + only_b, 0.5)))


def _swap_grid(sizes: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every vector of swap counts (k_g in 0..n_g per group), with its probability prod C(n_g, k_g) / 2^n_g."""
    shape = [n + 1 for n in sizes]
    probabilities = [binom.pmf(np.arange(n + 1), n, 0.5) for n in sizes]
    total = int(np.prod(shape))
    for start in range(0, total, 1 << 14):
        index = np.unravel_index(np.arange(start, min(start + (1 << 14), total)), shape)
        yield np.stack(index, axis=1).astype(np.float32), np.prod([p[i] for p, i in zip(probabilities, index)], axis=0)


@dataclass(frozen=True)
class _Pair:
    """A row `a` against the baseline `b`, reduced to what the randomization test reads: both rows' per-class counts,
    the gold counts, and how a's counts change when each example where the two differ is swapped (b's change the
    other way). The classes that occur as gold come first (see `_f1_after`)."""

    counts: np.ndarray  # [4, C] float32: true positives and predictions of a, then of b
    gold: np.ndarray  # [C] float32, the non-zero first
    moves: np.ndarray  # [n, 2C] float32: a's change of true positives and of predictions per swapped example
    first: np.ndarray  # examples with the same (gold, a, b) are exchangeable: the first of each such kind ...
    sizes: np.ndarray  # ... and how many there are

    @classmethod
    def of(cls, gold: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int) -> _Pair:
        differ = pred_a != pred_b
        tp_a, p_a, gold_counts = _counts(gold, pred_a, n_classes)
        tp_b, p_b, _ = _counts(gold, pred_b, n_classes)
        gold_counts = gold_counts.sum(axis=0).astype(np.float32)
        order = np.argsort(gold_counts == 0, kind="stable")
        counts = np.stack([x.sum(axis=0)[order] for x in (tp_a, p_a, tp_b, p_b)]).astype(np.float32)
        moves = np.concatenate([tp_b - tp_a, p_b - p_a], axis=1)[differ][:, np.concatenate([order, order + n_classes])]
        _, first, sizes = np.unique(np.stack([gold, pred_a, pred_b], axis=1)[differ], axis=0, return_index=True,
                                    return_counts=True)
        return cls(counts, gold_counts[order], moves.astype(np.float32), first, sizes)

    @property
    def observed(self) -> float:
        """|ΔF1| of the two rows as they are, less a tolerance so that a tie counts as reaching it."""
        unmoved = np.zeros((self.moves.shape[1], 1, 1), dtype=np.float32)
        return abs(float(_differences(self.counts[..., None], self.gold, unmoved)[0, 0])) - 1e-6

    @property
    def exact(self) -> bool:
        """Whether enumerating every vector of swap counts of the exchangeable kinds is cheap."""
        return bool(np.prod((self.sizes + 1).astype(float)) <= EXACT_CONFIGURATIONS)

    @property
    def n_bytes(self) -> int:
        """Bytes of one random swap pattern (one bit per differing example)."""
        return (len(self.moves) + 7) // 8


def _differences(counts: np.ndarray, gold: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """ΔF1 = macro-F1(a) - macro-F1(b) of P pairs (`counts` [4, C, P]) after swaps that change a's counts by `moved`
    ([2C, P, m]; classes first, so that every operation runs over whole rows of permutations) -> [P, m]."""
    c, counts = len(gold), counts[..., None]
    a = _f1_after(np.add, counts[0], counts[1], gold, moved[:c], moved[c:])
    b = _f1_after(np.subtract, counts[2], counts[3], gold, moved[:c], moved[c:])
    return a - b


def _f1_after(op: np.ufunc, tp: np.ndarray, predicted: np.ndarray, gold: np.ndarray, moved_tp: np.ndarray,
              moved_predicted: np.ndarray) -> np.ndarray:
    """`f1_of_counts` of the counts `op`(counts, moved) ([C, P, 1] and [C, P, m]) -> [P, m], the same floats for less
    work: the classes that occur as gold (first) are always averaged and never divide by 0; the others have no true
    positives (F1 0, a term that changes no sum) and are only counted, when predicted."""
    scored = np.count_nonzero(gold)
    denominator = op(gold[:scored, None, None] + predicted[:scored], moved_predicted[:scored])
    f1 = (2 * op(tp[:scored], moved_tp[:scored]) / denominator).sum(axis=0)
    return f1 / (scored + np.count_nonzero(op(predicted[scored:], moved_predicted[scored:]) > 0, axis=0))


def _exact_p(pair: _Pair) -> float:
    """The exact p: the probability of every vector of swap counts of the exchangeable kinds whose ΔF1 reaches the
    observed one."""
    moves, observed, p = pair.moves[pair.first], pair.observed, 0.0
    for swapped, probability in _swap_grid(pair.sizes):
        moved = (swapped @ moves).T[:, None, :]
        p += probability[np.abs(_differences(pair.counts[..., None], pair.gold, moved)[0]) >= observed].sum()
    return float(min(1.0, p))


def _swap_tables(pairs: Sequence[_Pair]) -> np.ndarray:
    """[bytes, 256, 2C, P] int8: for byte j of a swap pattern and each of its 256 values, the change of each pair's
    counts that swapping those 8 examples makes (the examples past the last are no one's: their moves are 0)."""
    n_bytes = pairs[0].n_bytes
    tables = []
    for pair in pairs:
        moves = np.zeros((n_bytes * 8, pair.moves.shape[1]), dtype=np.float32)
        moves[: len(pair.moves)] = pair.moves
        tables.append(np.matmul(_BYTE_BITS, moves.reshape(n_bytes, 8, -1)).astype(np.int8))
    return np.stack(tables, axis=-1)


def _swap_sums(packed: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """sum_j tables[j, packed[:, j]] ([m, W] int16, W columns per table row): what `np.unpackbits(packed) @ moves`
    is, but one table row per byte instead of eight multiply-adds; exact, all being small integers. Up to
    `_INT8_SPAN` bytes are summed in int8 (an entry is at most 8 swaps) before widening: half the memory traffic."""
    columns = np.ascontiguousarray(packed.T, dtype=np.intp)
    total = np.zeros((len(packed), tables.shape[-1]), dtype=np.int16)
    part, row = np.empty(total.shape, dtype=np.int8), np.empty(total.shape, dtype=np.int8)
    for start in range(0, len(tables), _INT8_SPAN):
        tables[start].take(columns[start], axis=0, out=part, mode="clip")  # bytes: in range, and no bounds checks
        for j in range(start + 1, min(start + _INT8_SPAN, len(tables))):
            tables[j].take(columns[j], axis=0, out=row, mode="clip")
            part += row
        total += part
    return total


def _monte_carlo_ps(pairs: Sequence[_Pair], seed: int) -> list[float]:
    """Sequential Monte Carlo p-values of pairs whose swap patterns have the same number of bytes. A pair's patterns
    are random bytes from a generator seeded with `seed`, in rounds of 1024, 2048, ... patterns, so pairs of one
    size have the same patterns: each round is drawn once and looked up for every pair still running, one chunk
    of patterns at a time (sized for the cache); a pair stops at `HITS`, all after `MAX_PERMUTATIONS`."""
    tables, counts = _swap_tables(pairs), np.stack([p.counts for p in pairs], axis=-1)
    gold, observed = pairs[0].gold, np.array([p.observed for p in pairs])
    rng = np.random.default_rng(seed)
    hits = np.zeros(len(pairs), dtype=int)
    draws: list[list[np.ndarray]] = [[] for _ in pairs]
    running, size, drawn = np.arange(len(pairs)), 1024, 0
    while len(running) and drawn < MAX_PERMUTATIONS:
        packed = rng.integers(0, 256, size=(size, pairs[0].n_bytes), dtype=np.uint8)
        rows = tables[..., running].reshape(*tables.shape[:2], -1)
        counted, reach = counts[..., running], observed[running]
        step = max(1, _CHUNK_BYTES // rows.shape[-1])
        for start in range(0, size, step):
            sums = _swap_sums(packed[start : start + step], rows)
            moved = np.ascontiguousarray(sums.T).reshape(2 * len(gold), len(running), -1)  # classes first
            differences = _differences(counted, gold, moved)
            hits[running] += np.count_nonzero(np.abs(differences) >= reach[:, None], axis=1)
            for i, row in zip(running, differences):
                draws[i].append(row)
        running = running[hits[running] < HITS]
        drawn, size = drawn + size, size * 2
    return [_monte_carlo_p(int(h), np.concatenate(d), o) for h, d, o in zip(hits, draws, observed)]


def _monte_carlo_p(hits: int, draws: np.ndarray, observed: float) -> float:
    """p from `hits` of the ΔF1 `draws` reaching `observed`; in the far tail (fewer than `TAIL_HITS`), from the normal
    approximation of the randomization distribution, symmetric about 0."""
    if hits >= TAIL_HITS:
        return (hits + 1) / (len(draws) + 1)
    spread = float(np.sqrt(np.mean(np.square(draws))))
    return float(erfc(observed / (spread * sqrt(2)))) if spread > 0 else 1 / (len(draws) + 1)


def permutation_ps(gold: np.ndarray, preds: Sequence[np.ndarray], base: np.ndarray, n_classes: int,
                   seed: int = 0) -> list[float]:
    """`permutation_p` of each of `preds` against `base` (a board's rows against its baseline); the Monte Carlo ones
    in batches of at most `_BATCH_PAIRS` whose swap patterns have the same number of bytes (`_monte_carlo_ps`)."""
    pairs = [_Pair.of(gold, pred, base, n_classes) for pred in preds]
    p = [1.0] * len(pairs)
    sampled: dict[int, list[int]] = {}
    for i, pair in enumerate(pairs):
        if not len(pair.moves):
            continue  # the same predictions: p = 1
        if pair.exact:
            p[i] = _exact_p(pair)
        else:
            sampled.setdefault(pair.n_bytes, []).append(i)
    for group in sampled.values():
        for start in range(0, len(group), _BATCH_PAIRS):
            batch = group[start : start + _BATCH_PAIRS]
            for i, value in zip(batch, _monte_carlo_ps([pairs[i] for i in batch], seed)):
                p[i] = value
    return p


def permutation_p(gold: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, n_classes: int, seed: int = 0) -> float:
    """Two-sided paired approximate randomization p-value of macro-F1(a) - macro-F1(b) on the same examples: the
    probability, when each example's two predictions are swapped with probability 1/2, that |difference| reaches the
    observed one (see the module doc for how it is computed)."""
    return permutation_ps(gold, [pred_a], pred_b, n_classes, seed)[0]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in input order (monotone, capped at 1)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
