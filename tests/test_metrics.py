import pytest

from bench.run.metrics import classification_report, metric_key
from strategies.prompts import INVALID, UNCERTAIN


def test_uncertain_and_invalid_count_as_wrong_and_are_reported():
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", UNCERTAIN, "b", INVALID, "a"]
    report = classification_report(gold, pred, ["a", "b", "c"])
    m = report.metrics
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["invalid_rate"] == pytest.approx(1 / 5) and m["uncertain_rate"] == pytest.approx(1 / 5)
    assert m["selective_accuracy"] == pytest.approx(2 / 3)
    # per class: a: P=1/2 R=1/2 F1=1/2; b: P=1 R=1/2 F1=2/3; c: 0 -> macro = (1/2 + 2/3 + 0) / 3
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 3)
    assert report.per_class["b"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2.0}
    assert report.matrix_labels == ["a", "b", "c", UNCERTAIN, INVALID]
    assert report.confusion.sum() == 5 and report.confusion[0, 3] == 1
    assert m["macro_f1_classes"] == 3 and m["n_classes"] == 3


def test_macro_f1_averages_over_the_classes_the_sample_holds():
    """A class no evaluated example has as gold and no answer names is left out (scikit-learn's default set)."""
    m = classification_report(["a", "a", "b"], ["a", "b", "b"], ["a", "b", "c", "d"]).metrics
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)  # a: P 1 R 1/2; b: P 1/2 R 1
    assert m["macro_f1_classes"] == 2 and m["n_classes"] == 4
    m = classification_report(["a", "a", "b"], ["a", "c", "b"], ["a", "b", "c", "d"]).metrics
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # c is predicted once, wrongly: F1 0, counted


def test_metric_keys_are_mlflow_safe():
    assert metric_key("news_edu") == "news_edu"
    assert metric_key("K歌") == "K歌"
    assert metric_key("a:b(c)") == "a_b_c_"
