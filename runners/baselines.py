"""Classical baselines, run by the suite on the same splits as the LLM strategies so every leaderboard shows where
those stand. Each is registered once; `tfidf-logreg` fits TF-IDF features and a logistic regression on the
dataset's pool (its training split) and predicts the evaluation examples."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from strategies.example import Example, TaskCard


@dataclass(frozen=True)
class BaselinePrediction:
    label: str
    raw_output: str
    candidate_scores: str
    prompt_tokens: int = 0
    calibrated_scores: str = ""  # a baseline's class probabilities are not calibrated further


def _tfidf_logreg(card: TaskCard, pool: Sequence[Example], examples: Sequence[Example],
                  seed: int) -> list[BaselinePrediction]:
    """n-grams seen at least twice (one-off n-grams only add dimensions), multinomial logistic regression by SAGA:
    as accurate as L-BFGS here and 5-9x faster (emotion, tnews, sst2, iflytek: the 119-class Chinese set fell from
    611 s to 67 s of fitting)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    # no word spaces in CJK: character n-grams; elsewhere word uni- and bigrams
    features = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=2) \
        if card.language == "zh" else TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    model = make_pipeline(features, LogisticRegression(solver="saga", max_iter=200, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 200 passes: the predictions have settled
        model.fit([e.text for e in pool], [e.label for e in pool])
    probabilities = model.predict_proba([e.text for e in examples])
    classes = list(model.classes_)
    predictions = []
    for row in probabilities:
        best = classes[int(row.argmax())]
        scores = json.dumps({c: round(float(p), 5) for c, p in zip(classes, row)}, ensure_ascii=False)
        predictions.append(BaselinePrediction(best, best, scores))
    return predictions


@dataclass(frozen=True)
class Baseline:
    """A registered classical baseline: a doc line, how it predicts, and a revision that changes whenever its
    predictions would (part of its runs' identity)."""

    doc: str
    predict: Callable[[TaskCard, Sequence[Example], Sequence[Example], int], list[BaselinePrediction]]
    revision: str


BASELINES: dict[str, Baseline] = {
    "tfidf-logreg": Baseline("TF-IDF (word 1-2 grams; character 1-3 grams for Chinese; seen twice or more) + "
                             "logistic regression, fit on the pool", _tfidf_logreg, revision="2"),
}
