"""Classical baselines, run by the suite on the same splits as the LLM strategies so every leaderboard shows where
those stand. Each is registered once; `tfidf-logreg` fits TF-IDF features and a logistic regression on the
dataset's pool (its training split) and predicts the evaluation examples."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from strategies.example import Example, TaskCard


@dataclass(frozen=True)
class BaselinePrediction:
    label: str
    raw_output: str
    candidate_scores: str
    prompt_tokens: int = 0


def _tfidf_logreg(card: TaskCard, pool: Sequence[Example], examples: Sequence[Example],
                  seed: int) -> list[BaselinePrediction]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    # no word spaces in CJK: character n-grams; elsewhere word uni- and bigrams
    features = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True) if card.language == "zh" \
        else TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    model = make_pipeline(features, LogisticRegression(max_iter=2000, random_state=seed))
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
    doc: str
    predict: Callable[[TaskCard, Sequence[Example], Sequence[Example], int], list[BaselinePrediction]]


BASELINES: dict[str, Baseline] = {
    "tfidf-logreg": Baseline("TF-IDF (word 1-2 grams; character 1-3 grams for Chinese) + logistic regression, "
                             "fit on the pool", _tfidf_logreg),
}
