"""Reading a report's input from the tracking store: finished evaluation runs as a polars frame, and each run's
per-example predictions (the `predictions.json` table artifact), cached on disk by run id (finished runs never
change), so a report over thousands of runs is a copy once and a read after that."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from reports.vocabulary import (
    BASELINE,
    DATASET,
    ENV_TAG_PREFIX,
    EVAL_KIND,
    GRID_TAG,
    HASH_TAG,
    INFER_PREFIX,
    KIND_TAG,
    MODEL,
    NONE,
    PREDICTIONS_ARTIFACT,
    RUNS_PLANNED,
    TRAIN_HASH,
    TRAIN_KIND,
    TRAIN_MASK_LABELS,
    TRAIN_METHOD,
    TRAIN_PREFIX,
    TRAIN_REASONING_SOURCE,
    TRAIN_RGEN_HASH,
    TRAIN_SECONDS,
    TRAIN_WARMUP_HASH,
    TRAINED_KINDS,
)
from strategies.lookup import did_you_mean
from strategies.registry import Strategy
from strategies.templates import DEFAULT_TEMPLATE
from strategies.training import TrainStrategy

PARAM_COLUMNS, METRIC_COLUMNS, ENV_COLUMNS = "param.", "metric.", "env."  # prefixes of the runs frame's columns


class StoreError(Exception):
    """The store holds nothing a report can be made from: the message says what, and what to run."""


@dataclass
class StoreData:
    """Finished evaluation runs (one row each), their predictions by run id, and what is not usable yet."""

    experiment: str
    runs: pl.DataFrame
    predictions: dict[str, pl.DataFrame]
    unfinished: list[str]  # "name (STATUS)" of evaluation runs that did not finish
    parent_run_id: str | None
    never_started: int = 0  # runs the latest `bench run` planned but never began (interrupted)
    reasonings: pl.DataFrame | None = None  # per training run with written reasonings: length and leakage figures


REASONING_FIGURES = ("n", "words_p50", "words_p90", "words_max", "empty_rate", "leakage_rate")


def _reasoning_frame(runs: list) -> pl.DataFrame | None:
    """The `reasoning.*` figures of finished training runs whose SFT targets carried written reasonings."""
    rows = [{"training run": r.info.run_name, "source": r.data.params.get(TRAIN_REASONING_SOURCE, NONE),
             "labels masked": r.data.params.get(TRAIN_MASK_LABELS, NONE),
             **{k: r.data.metrics.get(f"reasoning.{k}") for k in REASONING_FIGURES}}
            for r in runs if r.data.tags.get(KIND_TAG) == TRAIN_KIND and r.info.status == "FINISHED"
            and "reasoning.n" in r.data.metrics]
    return pl.DataFrame(rows).sort("training run") if rows else None


def _tag(params: dict[str, str], prefix: str, cls, **fixed: str) -> str:
    """A run's strategy tag rebuilt from its params (so it reads the same as in `bench run`), with the `fixed`
    fields set as given."""
    fields = {k.removeprefix(prefix): v for k, v in params.items()
              if k.startswith(prefix) and k.removeprefix(prefix) in cls.__dataclass_fields__}
    return cls(**(fields | fixed)).tag()


def read_predictions(client: MlflowClient, run_id: str) -> list[dict] | None:
    """The rows of an evaluation run's predictions table (id, gold, prediction, ...) in the examples' order; None if
    the run has none (the one reader of the artifact: reports, and a search replaying a finished trial)."""
    with tempfile.TemporaryDirectory() as work:
        try:
            path = Path(client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, work))
        except Exception:  # noqa: BLE001 - a missing artifact is reported, not raised
            return None
        table = json.loads(path.read_text(encoding="utf-8"))
    return [dict(zip(table["columns"], row)) for row in table["data"]]


def _predictions(client: MlflowClient, run_id: str, cache: Path) -> pl.DataFrame | None:
    cached = cache / f"{run_id}.parquet"
    if cached.is_file():
        return pl.read_parquet(cached)
    rows = read_predictions(client, run_id)
    if rows is None:
        return None
    frame = pl.DataFrame(rows).select(
        pl.col("id").cast(pl.Utf8), pl.col("gold").cast(pl.Utf8), pl.col("prediction").cast(pl.Utf8))
    cached.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(cached)
    return frame


def _experiment(client: MlflowClient, shown: str, experiment: str | None):
    if experiment is None:
        found = [e for e in client.search_experiments(order_by=["creation_time DESC"]) if e.name != "Default"]
        if not found:
            raise StoreError(f"no experiments in {shown}; run `bench run` first or pass --tracking-uri")
        return found[0]
    chosen = client.get_experiment_by_name(experiment)
    if chosen is None:
        names = [e.name for e in client.search_experiments() if e.name != "Default"]
        raise StoreError(f"experiment '{experiment}' does not exist in {shown}{did_you_mean(experiment, names)}; "
                         f"known: {', '.join(names) or 'none'}")
    return chosen


def _newest_per_hash(runs: list) -> tuple[list, list[str]]:
    """One run per job hash: the newest FINISHED one; and "name (STATUS)" of the hashes that never finished (their
    newest run: FAILED, KILLED, or RUNNING while a grid is still at work)."""
    by_hash: dict[str, list] = {}
    for run in runs:
        by_hash.setdefault(run.data.tags[HASH_TAG], []).append(run)
    finished, unfinished = [], []
    for tries in by_hash.values():
        tries.sort(key=lambda r: r.info.start_time or 0, reverse=True)
        done = [r for r in tries if r.info.status == "FINISHED"]
        if done:
            finished.append(done[0])
        else:
            unfinished.append(f"{tries[0].info.run_name} ({tries[0].info.status})")
    return finished, unfinished


def read_store(uri: str, experiment: str | None, cache: Path, shown: str | None = None) -> StoreData:
    """The finished evaluation runs of `experiment` (default: the most recently created one) in the tracking store
    at `uri` (named `shown` in messages: the caller masks its password), one per job hash, with their predictions
    (cached as parquet under `cache`). A store without what a report needs is a StoreError saying what to do."""
    client = MlflowClient(uri)
    chosen = _experiment(client, shown or uri, experiment)
    runs = client.search_runs([chosen.experiment_id], max_results=50000)
    evals = [r for r in runs if HASH_TAG in r.data.tags and r.data.tags.get(KIND_TAG) == EVAL_KIND]
    finished, unfinished = _newest_per_hash(evals)
    if not finished:
        raise StoreError(f"experiment '{chosen.name}' has no finished evaluation runs"
                        f"{' (' + str(len(unfinished)) + ' unfinished)' if unfinished else ''}; "
                        f"run `bench run --experiment '{chosen.name}'` to produce some")
    predictions: dict[str, pl.DataFrame] = {}
    missing = []
    for r in finished:
        frame = _predictions(client, r.info.run_id, cache)
        if frame is None:
            missing.append(r.info.run_name)
        else:
            predictions[r.info.run_id] = frame
    if missing:
        raise StoreError(f"{len(missing)} finished run(s) of '{chosen.name}' have no {PREDICTIONS_ARTIFACT} artifact "
                        f"(e.g. {missing[0]}); they predate prediction logging or their artifacts were deleted: "
                        "delete those runs and re-run `bench run` to produce them")
    train_seconds = {r.data.tags[HASH_TAG]: r.data.metrics.get(TRAIN_SECONDS, 0.0) for r in runs
                     if r.data.tags.get(KIND_TAG) in TRAINED_KINDS and r.info.status == "FINISHED"}
    rows = []
    for r in finished:
        params = r.data.params
        chain = [params.get(k, NONE) for k in (TRAIN_RGEN_HASH, TRAIN_WARMUP_HASH, TRAIN_HASH)]
        classical = f"baseline:{params[BASELINE]}" if params.get(BASELINE, NONE) != NONE else None
        rows.append({
            "run_id": r.info.run_id, "run_name": r.info.run_name, "dataset": params.get(DATASET, "?"),
            "model": params.get(MODEL, "?"),
            "training": NONE if params.get(TRAIN_METHOD, NONE) == NONE
            else _tag(params, TRAIN_PREFIX, TrainStrategy),
            "strategy": classical or _tag(params, INFER_PREFIX, Strategy),
            "base_strategy": classical or _tag(params, INFER_PREFIX, Strategy, template=DEFAULT_TEMPLATE),
            "is_baseline": classical is not None,
            **{PARAM_COLUMNS + k: v for k, v in params.items()},
            **{ENV_COLUMNS + k.removeprefix(ENV_TAG_PREFIX): v for k, v in r.data.tags.items()
               if k.startswith(ENV_TAG_PREFIX)},
            **{METRIC_COLUMNS + k: float(v) for k, v in r.data.metrics.items()},
            METRIC_COLUMNS + TRAIN_SECONDS: sum(train_seconds.get(h, 0.0) for h in chain),  # R-Gen, warm-up included
        })
    parents = [r for r in runs if GRID_TAG in r.data.tags]
    latest = max(parents, key=lambda r: r.info.start_time) if parents else None
    never_started = 0
    if latest is not None:
        begun = {r.data.tags[HASH_TAG] for r in evals if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == latest.info.run_id}
        never_started = max(0, int(latest.data.metrics.get(RUNS_PLANNED, 0)) - len(begun))
    return StoreData(chosen.name, pl.DataFrame(rows, infer_schema_length=None), predictions, unfinished,
                     latest.info.run_id if latest else None, never_started, _reasoning_frame(runs))


def log_report(uri: str, parent_run_id: str, folder: Path) -> None:
    """Attach the report files to the grid's parent run in the store the report was read from, leaving the run's
    status alone (a grid may still be running)."""
    MlflowClient(uri).log_artifacts(parent_run_id, str(folder), artifact_path="report")
