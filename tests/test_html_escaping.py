"""A hostile name in every field report.html and search.html show is text, never markup: a dataset, model, experiment,
run, study, space file, objective, parameter value or spec called `<img src=x onerror=...>` runs no script."""

from __future__ import annotations

import mlflow
import optuna

from reports.analysis import build_boards, strategy_effects
from reports.render import Report, to_html
from reports.search_page import SearchPage, TrialRow
from reports.search_page import to_html as search_html
from reports.store import read_store
from reports.vocabulary import GRID_TAG, HASH_TAG, KIND_TAG
from strategies.registry import Strategy

HOSTILE = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


def _assert_inert(page: str, expected_escaped: int) -> None:
    assert HOSTILE not in page and "<img" not in page
    assert page.count(ESCAPED) >= expected_escaped


def _log(name: str, strategy: Strategy, predictions: list[str], gold: list[str], ids: list[str]) -> None:
    with mlflow.start_run(run_name=name, nested=True, tags={HASH_TAG: name, KIND_TAG: "eval"}):
        mlflow.log_params({"dataset": HOSTILE, "model": HOSTILE, "eval.split": "test", "eval.limit": "none",
                           "seed": "0", "eval.sample_seed": "0", "train.method": "none", "baseline": "none",
                           **{f"infer.{k}": v for k, v in strategy.as_dict().items()}})
        mlflow.log_metric("accuracy", 0.5)
        mlflow.log_table({"id": ids, "text": ["t"] * len(ids), "gold": gold, "prediction": predictions,
                          "raw_output": predictions, "candidate_scores": [""] * len(ids)},
                         artifact_file="predictions.json")


def test_report_html_escapes_every_name(tracking_uri, tmp_path):
    experiment = f"exp {HOSTILE}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    gold = ["a", "b"] * 5
    ids = [f"i{n}" for n in range(10)]
    with mlflow.start_run(run_name=HOSTILE, tags={GRID_TAG: HOSTILE}):
        mlflow.log_metric("runs_planned", 4)
        _log(f"zero {HOSTILE}", Strategy(), gold, gold, ids)
        _log(f"ppl {HOSTILE}", Strategy(decoding="ppl"), ["a"] * 10, gold, ids)
        _log(f"other examples {HOSTILE}", Strategy(icl="random-1"), gold, gold, [f"j{n}" for n in range(10)])
        client = mlflow.MlflowClient(tracking_uri)
        failed = client.create_run(mlflow.get_experiment_by_name(experiment).experiment_id,
                                   run_name=f"failed {HOSTILE}", tags={HASH_TAG: "f", KIND_TAG: "eval"})
        client.set_terminated(failed.info.run_id, "FAILED")
    data = read_store(tracking_uri, experiment, tmp_path / "cache")
    boards = build_boards(data)
    report = Report(data.experiment, "store", boards, strategy_effects(boards), [], data.unfinished,
                    data.never_started)
    page = to_html(report)
    # the experiment (title, heading), the board's dataset and model (title), the note on the run with other
    # examples, the run that did not finish
    _assert_inert(page, 4)
    assert 'data-rows="' in page and "<table" in page and "<svg" in page  # what the suite built stays markup


def test_search_page_escapes_every_name():
    study = optuna.create_study(study_name=HOSTILE, direction="maximize")
    study.optimize(lambda t: {HOSTILE: 0.3, "plain": 0.7}[t.suggest_categorical(HOSTILE, [HOSTILE, "plain"])],
                   n_trials=4)
    rows = [TrialRow(t.number, "COMPLETE", t.values, f"spec {HOSTILE}", t.params, 10, 1.0) for t in study.trials]
    page = SearchPage(study, f"search {HOSTILE}", f"space {HOSTILE}", [HOSTILE], rows, [rows[0].number],
                      {HOSTILE: {HOSTILE: 1.0}}, [lambda t: -t.values[0]])
    html = search_html(page)
    _assert_inert(html, 10)
    assert "<table" in html and "<svg" in html
