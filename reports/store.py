"""Reading a report's input from the tracking store: finished evaluation runs as a polars frame, and each run's
per-example predictions (the `predictions.json` table artifact), cached on disk by run id (finished runs never
change), so a report over thousands of runs is a copy once and a read after that."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from mlflow.tracking import MlflowClient

from bench.errors import UserError
from bench.runspec import SPEC_HASH_TAG
from bench.tracking import GRID_TAG, KIND_TAG, quiet_mlflow, tracking_uri
from bench.trainspec import TRAIN_HASH_TAG
from runners.models import cache_dir
from strategies.registry import Strategy
from strategies.training import TrainStrategy

PREDICTIONS = "predictions.json"
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run would flood the terminal


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
    rows = [{"training run": r.info.run_name, "source": r.data.params.get("train.reasoning_source", "none"),
             "labels masked": r.data.params.get("train.rgen.mask_labels", "none"),
             **{k: r.data.metrics.get(f"reasoning.{k}") for k in REASONING_FIGURES}}
            for r in runs if r.data.tags.get(KIND_TAG) == "train" and r.info.status == "FINISHED"
            and "reasoning.n" in r.data.metrics]
    return pl.DataFrame(rows).sort("training run") if rows else None


def _tag(params: dict[str, str], prefix: str, cls) -> str:
    """A run's strategy tag rebuilt from its params (so it reads the same as in `bench run`)."""
    fields = {k.removeprefix(prefix): v for k, v in params.items()
              if k.startswith(prefix) and k.removeprefix(prefix) in cls.__dataclass_fields__}
    return cls(**fields).tag()


def _predictions(client: MlflowClient, run_id: str) -> pl.DataFrame | None:
    cached = cache_dir() / "report" / f"{run_id}.parquet"
    if cached.is_file():
        return pl.read_parquet(cached)
    with tempfile.TemporaryDirectory() as work:
        try:
            path = Path(client.download_artifacts(run_id, PREDICTIONS, work))
        except Exception:  # noqa: BLE001 - a missing artifact is reported, not raised
            return None
        table = json.loads(path.read_text(encoding="utf-8"))
    frame = pl.DataFrame([dict(zip(table["columns"], row)) for row in table["data"]]).select(
        pl.col("id").cast(pl.Utf8), pl.col("gold").cast(pl.Utf8), pl.col("prediction").cast(pl.Utf8))
    cached.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(cached)
    return frame


def read_store(uri: str | None, experiment: str | None) -> StoreData:
    """The finished evaluation runs of `experiment` (default: the most recently created one) with predictions."""
    quiet_mlflow()
    client = MlflowClient(tracking_uri(uri))
    if experiment is None:
        found = [e for e in client.search_experiments(order_by=["creation_time DESC"]) if e.name != "Default"]
        if not found:
            raise UserError(f"no experiments in {tracking_uri(uri)}; run `bench run` first or pass --tracking-uri")
        chosen = found[0]
    else:
        chosen = client.get_experiment_by_name(experiment)
        if chosen is None:
            names = [e.name for e in client.search_experiments() if e.name != "Default"]
            raise UserError(f"experiment '{experiment}' does not exist in {tracking_uri(uri)}; "
                            f"known: {', '.join(names) or 'none'}")
    runs = client.search_runs([chosen.experiment_id], max_results=50000)
    evals = [r for r in runs if SPEC_HASH_TAG in r.data.tags and r.data.tags.get(KIND_TAG, "eval") == "eval"]
    finished = [r for r in evals if r.info.status == "FINISHED"]
    unfinished = [f"{r.info.run_name} ({r.info.status})" for r in evals if r.info.status != "FINISHED"]
    if not finished:
        raise UserError(f"experiment '{chosen.name}' has no finished evaluation runs"
                        f"{' (' + str(len(unfinished)) + ' unfinished)' if unfinished else ''}; "
                        f"run `bench run --experiment '{chosen.name}'` to produce some")
    predictions: dict[str, pl.DataFrame] = {}
    missing = []
    for r in finished:
        frame = _predictions(client, r.info.run_id)
        if frame is None:
            missing.append(r.info.run_name)
        else:
            predictions[r.info.run_id] = frame
    if missing:
        raise UserError(f"{len(missing)} finished run(s) of '{chosen.name}' have no {PREDICTIONS} artifact "
                        f"(e.g. {missing[0]}); they predate prediction logging or their artifacts were deleted: "
                        "delete those runs and re-run `bench run` to produce them")
    train_seconds = {r.data.tags[TRAIN_HASH_TAG]: r.data.metrics.get("train_wall_time_s", 0.0) for r in runs
                     if r.data.tags.get(KIND_TAG) == "train" and r.info.status == "FINISHED"}
    rows = []
    for r in finished:
        params = r.data.params
        chain = [params.get(f"train.{k}", "none") for k in ("rgen.hash", "warmup_hash", "hash")]
        rows.append({
            "run_id": r.info.run_id, "run_name": r.info.run_name, "dataset": params.get("dataset", "?"),
            "model": params.get("model", "?"),
            "training": "none" if params.get("train.method", "none") == "none"
            else _tag(params, "train.", TrainStrategy),
            "strategy": f"baseline:{params['baseline']}" if params.get("baseline", "none") != "none"
            else _tag(params, "infer.", Strategy),
            "is_baseline": params.get("baseline", "none") != "none",
            "train_hash": params.get("train.hash", "none"),
            **{f"param.{k}": v for k, v in params.items()},
            **{f"metric.{k}": float(v) for k, v in r.data.metrics.items()},
            "metric.train_wall_time_s": sum(train_seconds.get(h, 0.0) for h in chain),  # R-Gen, warm-up included
        })
    parents = [r for r in runs if GRID_TAG in r.data.tags]
    latest = max(parents, key=lambda r: r.info.start_time) if parents else None
    never_started = 0
    if latest is not None:
        begun = sum(r.data.tags.get("mlflow.parentRunId") == latest.info.run_id for r in evals)
        never_started = max(0, int(latest.data.metrics.get("runs_planned", 0)) - begun)
    return StoreData(chosen.name, pl.DataFrame(rows, infer_schema_length=None), predictions, unfinished,
                     latest.info.run_id if latest else None, never_started, _reasoning_frame(runs))


def log_report(uri: str | None, parent_run_id: str, folder: Path) -> None:
    """Attach the report files to the grid's parent run in the store the report was read from, leaving the run's
    status alone (a grid may still be running)."""
    MlflowClient(tracking_uri(uri)).log_artifacts(parent_run_id, str(folder), artifact_path="report")
