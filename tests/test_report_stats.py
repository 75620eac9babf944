"""Report statistics against hand computations and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from reports.stats import bootstrap, holm, macro_f1, mcnemar, paired_bootstrap_p, weights_of


def test_macro_f1_matches_scikit_learn_with_uncertain_and_invalid_answers():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 4, size=(20, 50))
    pred = rng.integers(0, 6, size=(20, 50))  # 4 = uncertain, 5 = invalid
    expected = [f1_score(g, p, labels=range(4), average="macro", zero_division=0) for g, p in zip(gold, pred)]
    assert [macro_f1(g, p, 4) for g, p in zip(gold, pred)] == pytest.approx(expected)
    draws = rng.integers(0, 50, size=(30, 50))  # weighted resamples equal scikit-learn on the resampled arrays
    resampled = [f1_score(gold[0][d], pred[0][d], labels=range(4), average="macro", zero_division=0) for d in draws]
    assert macro_f1(gold[0], pred[0], 4, weights_of(draws, 50)).tolist() == pytest.approx(resampled)


def test_bootstrap_percentile_interval_by_hand():
    gold, pred = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])
    draws = np.array([[0, 0, 0, 0], [2, 2, 2, 2], [0, 1, 2, 3]])  # replicate accuracies 1, 0, .75
    acc, _, replicates, _ = bootstrap(gold, pred, 2, weights_of(draws, 4))
    assert replicates.tolist() == [1.0, 0.0, 0.75]
    # numpy's linear percentile of [0, .75, 1]: 2.5% -> .05 of the way to .75; 97.5% -> .95 of the way to 1
    assert (acc.value, acc.low, acc.high) == pytest.approx((0.75, 0.0375, 0.9875))


def test_exact_mcnemar_by_hand():
    a = np.array([True] * 8 + [False] * 2 + [True] * 5)
    b = np.array([False] * 8 + [True] * 2 + [True] * 5)
    assert mcnemar(a, b) == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 8 vs 2 discordant: P(X<=2 | n=10) x 2
    assert mcnemar(a, a) == 1.0


def test_paired_bootstrap_p_and_holm_by_hand():
    assert paired_bootstrap_p(np.array([1.0, 2, 3, -1])) == pytest.approx(2 * (1 + 1) / 5)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
