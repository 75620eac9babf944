"""MLflow tracking: one parent run per grid invocation, one child run per RunSpec, resume by spec hash.

Default store: `sqlite:///mlflow.db` in the working directory (override with --tracking-uri or
MLFLOW_TRACKING_URI), so a fresh machine needs no server; a PostgreSQL-backed server works the same way.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from bench.metrics import ClassificationReport, metric_key
from bench.runspec import SPEC_HASH_TAG, RunSpec
from bench.trainspec import TRAIN_HASH_TAG, RGenSpec, TrainSpec, train_params
from strategies.example import Example
from strategies.reasoning import ReasoningExample

DEFAULT_STORE_FILE = "mlflow.db"
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_STORE_FILE}"
GRID_TAG = "genclsbench.grid"
KIND_TAG = "genclsbench.kind"  # "train" on training runs, "eval" on evaluation runs
ERROR_TAG = "genclsbench.error"
TRAINED_ARTIFACT = "trained"


def tracking_uri(explicit: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else mlflow.db in the working directory (as an absolute path:
    MLflow caches stores by URI string, so a relative one would follow the first working directory)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    return f"sqlite:///{Path(DEFAULT_STORE_FILE).resolve()}" if uri == DEFAULT_TRACKING_URI else uri


@dataclass(frozen=True)
class RunRecord:
    """What a child run needs to log: its examples, predictions, report and cost figures."""

    examples: list[Example]
    predictions: list  # runners.predict.Prediction (kept untyped: bench.tracking does not import runners)
    report: ClassificationReport
    wall_time_s: float
    skipped_rows: int


def quiet_mlflow() -> None:
    """Keep MLflow's and alembic's INFO lines (store creation, migrations) out of the user's terminal."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class Tracker:
    """Reads finished runs for resume and writes parent and child runs for one experiment."""

    def __init__(self, uri: str | None, experiment: str) -> None:
        quiet_mlflow()
        self.uri = tracking_uri(uri)
        self.experiment = experiment
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)

    def _finished_runs(self, condition: str, max_results: int = 50000) -> list:
        """FINISHED runs of the experiment matching `condition` (none if the experiment does not exist yet)."""
        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            return []
        return self.client.search_runs([found.experiment_id], max_results=max_results,
                                       filter_string=f"attributes.status = 'FINISHED' and {condition}")

    def finished(self) -> dict[str, dict[str, float]]:
        """spec hash -> metrics of every finished evaluation run of the experiment."""
        runs = self._finished_runs(f"tags.`{SPEC_HASH_TAG}` != ''")
        return {r.data.tags[SPEC_HASH_TAG]: r.data.metrics for r in runs}

    @contextmanager
    def parent_run(self, grid_name: str, grid_path: Path, n_planned: int) -> Iterator[str]:
        mlflow.set_experiment(self.experiment)
        name = f"{grid_name} {time.strftime('%Y-%m-%d %H:%M:%S')}"
        with mlflow.start_run(run_name=name, tags={GRID_TAG: grid_name}) as run:
            mlflow.log_param("grid.file", str(grid_path))
            mlflow.log_metric("runs_planned", n_planned)
            if grid_path.is_file():
                mlflow.log_artifact(str(grid_path), artifact_path="grid")
            yield run.info.run_id

    @contextmanager
    def _nested(self, name: str, tags: dict[str, str], params: dict[str, object]) -> Iterator[None]:
        """A nested run; an exception inside marks it FAILED with the reason in a tag (and propagates)."""
        with mlflow.start_run(run_name=name, nested=True, tags=tags):
            mlflow.log_params({k: "none" if v is None else str(v) for k, v in params.items()})
            try:
                yield
            except BaseException as exc:
                mlflow.set_tag(ERROR_TAG, f"{type(exc).__name__}: {exc}"[:4000])
                raise

    def child_run(self, spec: RunSpec):
        """The evaluation run of `spec`, tagged with its hash (and its training's hash, if trained)."""
        tags = {SPEC_HASH_TAG: spec.key(), KIND_TAG: "eval", "genclsbench.dataset_identity": spec.dataset_identity}
        if spec.train:
            tags[TRAIN_HASH_TAG] = spec.train.key()
        return self._nested(spec.run_name, tags, spec.params())

    def train_run(self, spec: TrainSpec):
        """The training run of `spec`: step-wise curves, cost, the trained stage as an artifact."""
        tags = {TRAIN_HASH_TAG: spec.key(), KIND_TAG: "train", "genclsbench.dataset_identity": spec.dataset_identity}
        params = {"dataset": spec.dataset_name, "model": spec.model, "seed": spec.seed, "dtype": spec.dtype,
                  **train_params(spec)}
        return self._nested(spec.run_name, tags, params)

    def rgen_run(self, spec: RGenSpec):
        """The training run of a reasoning generator (stage 1 of two-stage reasoning)."""
        return self._nested(spec.run_name, {TRAIN_HASH_TAG: spec.key(), KIND_TAG: "train"}, spec.params())

    @staticmethod
    def log_step(metrics: dict[str, float], step: int) -> None:
        mlflow.log_metrics(metrics, step=step)

    @staticmethod
    def log_training_data(spec: TrainSpec, examples: list[Example]) -> None:
        frame = pd.DataFrame({"text": [e.text for e in examples], "label": [e.label for e in examples]})
        _log_dataset(frame, spec.dataset_identity, f"{spec.dataset_name}:train", "training")

    @staticmethod
    def log_rgen_data(spec: RGenSpec, examples: list[ReasoningExample]) -> None:
        frame = pd.DataFrame({"question": [e.question for e in examples], "answer": [e.answer for e in examples],
                              "reasoning": [e.reasoning for e in examples], "source": [e.where for e in examples]})
        _log_dataset(frame, ",".join(i for _, i in spec.corpora), "rgen-mixture", "training", targets="reasoning")

    @staticmethod
    def log_reasonings(spec: TrainSpec, examples: list[Example], reasonings: list[str],
                       stats: dict[str, float]) -> None:
        """The reasonings written for the training examples (a dataset input and a browsable table), with their
        length distribution and leakage rate as `reasoning.*` metrics."""
        source = spec.reasoner.source
        frame = pd.DataFrame({"id": [e.id for e in examples], "text": [e.text for e in examples],
                              "label": [e.label for e in examples], "reasoning": reasonings})
        _log_dataset(frame, f"{spec.dataset_identity}/reasonings-{spec.reasoner.key()}",
                     f"{spec.dataset_name}:train+reasonings({source})", "reasonings")
        mlflow.log_table(frame, artifact_file="reasonings.json")
        mlflow.log_metrics({f"reasoning.{k}": v for k, v in stats.items()})

    @staticmethod
    def log_relabel(rows: dict[str, dict]) -> None:
        """Which training examples became "uncertain", with every example's gold-label confidence."""
        mlflow.log_dict(rows, "relabel.json")

    @staticmethod
    def log_trained(summary: dict[str, float], folder: Path) -> None:
        mlflow.log_metrics(summary)
        mlflow.log_artifacts(str(folder), artifact_path=TRAINED_ARTIFACT)

    def download_trained(self, train_hash: str, into: Path) -> bool:
        """Fetch the trained stage of an earlier finished training run of this experiment; False if there is none."""
        runs = self._finished_runs(f"tags.`{TRAIN_HASH_TAG}` = '{train_hash}' and tags.`{KIND_TAG}` = 'train'", 1)
        if not runs:
            return False
        with tempfile.TemporaryDirectory() as work:
            fetched = Path(mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id,
                                                               artifact_path=TRAINED_ARTIFACT, dst_path=work))
            for item in fetched.iterdir():
                shutil.move(str(item), into / item.name)
        return True

    def log_result(self, spec: RunSpec, record: RunRecord) -> dict[str, float]:
        """Metrics, predictions, per-class table, confusion matrix and evaluation data of the active child run."""
        n = len(record.examples)
        metrics = dict(record.report.metrics)
        metrics |= {
            "wall_time_s": record.wall_time_s,
            "examples_per_s": n / record.wall_time_s if record.wall_time_s else 0.0,
            "prompt_tokens_mean": sum(p.prompt_tokens for p in record.predictions) / n,
            "data_skipped_rows": float(record.skipped_rows),
        }
        for label, scores in record.report.per_class.items():
            metrics |= {f"{name}.{metric_key(label)}": value for name, value in scores.items() if name != "support"}
        mlflow.log_metrics(metrics)
        table = pd.DataFrame({
            "id": [e.id for e in record.examples],
            "text": [e.text for e in record.examples],
            "gold": [e.label for e in record.examples],
            "prediction": [p.label for p in record.predictions],
            "raw_output": [p.raw_output for p in record.predictions],
            "candidate_scores": [p.candidate_scores for p in record.predictions],
        })
        mlflow.log_table(table, artifact_file="predictions.json")
        mlflow.log_dict(record.report.per_class, "per_class.json")
        mlflow.log_figure(_confusion_figure(record.report, spec.run_name), "confusion_matrix.png")
        evaluation = pd.DataFrame({"text": table["text"], "label": table["gold"]})
        _log_dataset(evaluation, spec.dataset_identity, f"{spec.dataset_name}:{spec.eval.split or 'default'}",
                     "evaluation")
        return metrics


def _log_dataset(frame: pd.DataFrame, identity: str, name: str, context: str, targets: str = "label") -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow: "source can be interpreted in multiple ways" (harmless)
        dataset = mlflow.data.from_pandas(frame, source=identity, targets=targets, name=name)
    mlflow.log_input(dataset, context=context)


def _confusion_figure(report: ClassificationReport, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.45 * len(report.matrix_labels) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing CJK glyphs in the default font
        ConfusionMatrixDisplay(report.confusion, display_labels=report.matrix_labels).plot(
            ax=axes, xticks_rotation="vertical", colorbar=False, include_values=len(report.matrix_labels) <= 20
        )
        axes.set_title(title, fontsize=9)
        figure.tight_layout()
    plt.close(figure)
    return figure
