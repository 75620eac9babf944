"""Report statistics against hand computations and scikit-learn."""

from __future__ import annotations

from math import erfc, sqrt

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

import reports.stats
from reports.stats import bootstrap, holm, macro_f1, mcnemar, permutation_p, permutation_ps, weights_of


def _sklearn_macro_f1(gold: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """scikit-learn's default class set (gold or predicted), without the answers that are no class."""
    classes = sorted((set(gold) | set(pred)) - set(range(n_classes, n_classes + 2)))
    return f1_score(gold, pred, labels=classes, average="macro", zero_division=0)


def test_macro_f1_matches_scikit_learn_with_uncertain_and_invalid_answers():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 4, size=(20, 50))
    gold[:, :10] = rng.integers(0, 3, size=(20, 10))
    pred = rng.integers(0, 6, size=(20, 50))  # 4 = uncertain, 5 = invalid
    pred[:5] = np.minimum(pred[:5], 2)  # some rows never predict class 3
    gold[:3] = np.minimum(gold[:3], 2)  # ... and some never have it as gold: it is left out of the average
    expected = [_sklearn_macro_f1(g, p, 4) for g, p in zip(gold, pred)]
    assert [macro_f1(g, p, 4) for g, p in zip(gold, pred)] == pytest.approx(expected)
    draws = rng.integers(0, 50, size=(30, 50))  # weighted resamples equal scikit-learn on the resampled arrays
    resampled = [_sklearn_macro_f1(gold[0][d], pred[0][d], 4) for d in draws]
    assert macro_f1(gold[0], pred[0], 4, weights_of(draws, 50)).tolist() == pytest.approx(resampled)
    runs = macro_f1(gold[0], pred, 4, weights_of(draws, 50))  # many runs at once: [resamples, runs]
    assert runs.T.tolist() == [macro_f1(gold[0], p, 4, weights_of(draws, 50)).tolist() for p in pred]


def test_bootstrap_of_many_runs_is_each_run_alone(monkeypatch):
    monkeypatch.setattr(reports.stats, "_BOOTSTRAP_RUNS", 3)  # several products
    rng = np.random.default_rng(4)
    gold, preds = rng.integers(0, 3, 40), rng.integers(0, 5, (7, 40))
    weights = weights_of(rng.integers(0, 40, (50, 40)), 40)
    for run, alone in zip(bootstrap(gold, preds, 3, weights), (bootstrap(gold, p[None], 3, weights)[0] for p in preds)):
        assert run[:2] == alone[:2]
        assert run[2].tolist() == alone[2].tolist() and run[3].tolist() == alone[3].tolist()


def test_bootstrap_percentile_interval_by_hand():
    gold, pred = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])
    draws = np.array([[0, 0, 0, 0], [2, 2, 2, 2], [0, 1, 2, 3]])  # replicate accuracies 1, 0, .75
    [(acc, _, replicates, _)] = bootstrap(gold, pred[None], 2, weights_of(draws, 4))
    assert replicates.tolist() == [1.0, 0.0, 0.75]
    # numpy's linear percentile of [0, .75, 1]: 2.5% -> .05 of the way to .75; 97.5% -> .95 of the way to 1
    assert (acc.value, acc.low, acc.high) == pytest.approx((0.75, 0.0375, 0.9875))


def test_exact_mcnemar_by_hand():
    a = np.array([True] * 8 + [False] * 2 + [True] * 5)
    b = np.array([False] * 8 + [True] * 2 + [True] * 5)
    assert mcnemar(a, b) == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 8 vs 2 discordant: P(X<=2 | n=10) x 2
    assert mcnemar(a, a) == 1.0


def test_mcnemar_is_scipys_exact_binomial_test():
    for n in range(1, 80):
        for k in range(n + 1):
            only_a = np.arange(n) < k  # k examples only a gets right, n - k only b
            assert mcnemar(only_a, ~only_a) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-12)


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_randomization_p_by_hand():
    # two examples, a right on both, b wrong on both: of the 4 swap patterns, "none" and "both" keep |ΔF1| = 1,
    # swapping one gives a = [1, 1], b = [0, 0]: both score macro-F1 1/3, Δ = 0. p = 2/4
    assert permutation_p(np.array([0, 1]), np.array([0, 1]), np.array([1, 0]), 2) == pytest.approx(0.5)
    # gold [0, 0, 0, 1], a = gold (F1 1), b = [1, 1, 0, 0] (F1 (2/5 + 0) / 2 = .2): Δ = .8. Swapping example 0 or 1
    # gives Δ = (.8 + 2/3) / 2 - (4/7 + 0) / 2 = .448, swapping 3 gives 3/7 - .5; only "none" and "all" reach .8
    assert permutation_p(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 1]), np.array([1, 1, 0, 0]), 2) == \
        pytest.approx(2 / 8)
    same = np.array([0, 1, 1])
    assert permutation_p(same, same, same, 2) == 1.0


def _systems(n: int, classes: int, skill_a: float, skill_b: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, classes, n)
    a = np.where(rng.random(n) < skill_a, gold, rng.integers(0, classes + 2, n))  # + uncertain, invalid
    b = np.where(rng.random(n) < skill_b, gold, rng.integers(0, classes + 2, n))
    return gold, a, b


def _brute_force_p(gold, a, b, classes: int, draws: int = 20000, seed: int = 1) -> float:
    """Approximate randomization the plain way: swap at random, recompute both macro-F1s with the scorer itself."""
    rng = np.random.default_rng(seed)
    swaps = rng.random((draws, len(gold))) < 0.5
    observed = abs(macro_f1(gold, a, classes) - macro_f1(gold, b, classes))
    hits = sum(abs(macro_f1(gold, np.where(s, b, a), classes) - macro_f1(gold, np.where(s, a, b), classes))
               >= observed - 1e-9 for s in swaps)
    return hits / draws


def test_exact_and_monte_carlo_randomization_agree_with_brute_force(monkeypatch):
    gold, a, b = _systems(14, 3, 0.8, 0.4)  # few examples: the exact path
    assert permutation_p(gold, a, b, 3) == pytest.approx(_brute_force_p(gold, a, b, 3), abs=0.01)
    gold, a, b = _systems(300, 5, 0.5, 0.45, seed=2)  # many: Monte Carlo until 100 permutations reach Δ
    expected = _brute_force_p(gold, a, b, 5, draws=4000)
    assert 0.01 < expected < 0.5
    assert permutation_p(gold, a, b, 5) == pytest.approx(expected, rel=0.3)
    monkeypatch.setattr(reports.stats, "EXACT_CONFIGURATIONS", 0)  # the Monte Carlo path on the small case too
    gold, a, b = _systems(14, 3, 0.8, 0.4)
    assert permutation_p(gold, a, b, 3) == pytest.approx(_brute_force_p(gold, a, b, 3), abs=0.06)


def test_randomization_p_has_no_floor_set_by_the_permutation_count():
    gold, a, b = _systems(1000, 6, 0.9, 0.3)
    gold2, a2, b2 = _systems(1000, 6, 0.9, 0.5)
    far, farther = permutation_p(gold2, a2, b2, 6), permutation_p(gold, a, b, 6)
    assert farther < far < 1 / (reports.stats.MAX_PERMUTATIONS + 1)  # read from the tail, not clipped to 1/(R+1)


def _reference_p(gold, a, b, classes: int, seed: int = 0) -> float:
    """The Monte Carlo p the plain way: each round's swap patterns unpacked from the seeded random bytes, then both
    rows' macro-F1 recomputed by the scorer on the swapped predictions (no tables, no shared draws)."""
    differ = np.flatnonzero(a != b)
    observed = abs(macro_f1(gold, a, classes) - macro_f1(gold, b, classes)) - 1e-6
    rng, draws, hits, size = np.random.default_rng(seed), [], 0, 1024
    while hits < reports.stats.HITS and len(draws) < reports.stats.MAX_PERMUTATIONS:
        patterns = rng.integers(0, 256, size=(size, (len(differ) + 7) // 8), dtype=np.uint8)
        swapped = np.zeros((size, len(gold)), dtype=bool)
        swapped[:, differ] = np.unpackbits(patterns, axis=1, count=len(differ))
        difference = macro_f1(gold, np.where(swapped, b, a), classes) - macro_f1(gold, np.where(swapped, a, b), classes)
        hits += int(np.sum(np.abs(difference) >= observed))
        draws += difference.tolist()
        size *= 2
    if hits >= reports.stats.TAIL_HITS:
        return (hits + 1) / (len(draws) + 1)
    return float(erfc(observed / (np.sqrt(np.mean(np.square(draws))) * sqrt(2))))


def test_randomization_p_of_many_rows_is_each_row_tested_the_plain_way(monkeypatch):
    monkeypatch.setattr(reports.stats, "EXACT_CONFIGURATIONS", 0)  # Monte Carlo for every row
    monkeypatch.setattr(reports.stats, "MAX_PERMUTATIONS", 4096)  # rounds of 1024, 2048, 4096: a quick test
    monkeypatch.setattr(reports.stats, "_BATCH_PAIRS", 3)  # rows of one pattern size in several batches ...
    monkeypatch.setattr(reports.stats, "_CHUNK_BYTES", 1 << 12)  # ... each round looked up in several chunks ...
    monkeypatch.setattr(reports.stats, "_INT8_SPAN", 4)  # ... of several int8 partial sums
    rng = np.random.default_rng(5)
    gold = np.minimum(rng.integers(0, 5, 100), 3)  # class 4 is never gold, only predicted by some rows
    base = np.where(rng.random(100) < 0.6, gold, rng.integers(0, 7, 100))  # 5, 6: uncertain, invalid
    rows = [np.where(rng.random(100) < rng.uniform(0.1, 0.95), gold, rng.integers(0, 7, 100)) for _ in range(12)]
    rows += [base.copy(), np.where(np.arange(100) < 3, (base + 1) % 5, base)]  # no difference; a 1-byte pattern
    expected = [_reference_p(gold, row, base, 5) if (row != base).any() else 1.0 for row in rows]
    assert len({(np.sum(row != base) + 7) // 8 for row in rows}) < len(rows) - 3  # rows do share pattern sizes
    assert permutation_ps(gold, rows, base, 5) == pytest.approx(expected, rel=1e-6)
    assert any(p < 1e-4 for p in expected) and any(0.01 < p < 1 for p in expected)  # the tail and the counted p
