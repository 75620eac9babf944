"""Classification metrics (scikit-learn, offline): accuracy, macro-F1, per-class scores, confusion matrix.

Scoring of special answers: an `uncertain` or `invalid` prediction is never a class, so it counts as wrong for
accuracy and as a miss (false negative of the gold class) for F1. Their rates are reported separately, and
`selective_accuracy` is the accuracy over the examples that got a real class (what "uncertain" buys: abstaining on
hard inputs).

Macro-F1 averages over the classes that occur in the evaluated examples as gold or as a prediction (scikit-learn's
default class set): a class that a small evaluation sample never contains and no answer names has no F1, and
counting it as 0 would pull macro-F1 down for nothing (77 classes, 50 examples). `macro_f1_classes` says how many
classes were averaged, `n_classes` how many the dataset has.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from strategies.prompts import INVALID, UNCERTAIN


@dataclass(frozen=True)
class ClassificationReport:
    """Scores of one run, plus the per-class table and the confusion matrix (rows gold, columns predicted)."""

    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    matrix_labels: list[str]
    confusion: np.ndarray


def metric_key(label: str) -> str:
    """A label as MLflow accepts it in a metric name."""
    return re.sub(r"[^\w.\- /]", "_", label)


def classification_report(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> ClassificationReport:
    labels = list(labels)
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=labels, average=None, zero_division=0
    )
    n = len(gold)
    uncertain = sum(p == UNCERTAIN for p in predicted)
    answered = [(g, p) for g, p in zip(gold, predicted) if p not in (UNCERTAIN, INVALID)]
    occurring = [label for label in labels if label in set(gold) | set(predicted)]
    metrics = {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(f1_score(gold, predicted, labels=occurring, average="macro", zero_division=0)),
        "macro_f1_classes": float(len(occurring)),
        "n_classes": float(len(labels)),
        "invalid_rate": sum(p == INVALID for p in predicted) / n,
        "uncertain_rate": uncertain / n,
        "selective_accuracy": (sum(g == p for g, p in answered) / len(answered)) if answered else 0.0,
        "n_examples": float(n),
    }
    per_class = {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": float(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support)
    }
    matrix_labels = labels + [x for x in (UNCERTAIN, INVALID) if x in predicted]
    return ClassificationReport(metrics, per_class, matrix_labels,
                                confusion_matrix(gold, predicted, labels=matrix_labels))
