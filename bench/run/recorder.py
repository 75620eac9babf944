"""Recording jobs in MLflow: one child run per job under the grid's parent run, through `MlflowClient` with explicit
run ids (never MLflow's process-global active run), so any process (a worker, a search trial, a test) can record
any job.

Runners compute and return results; jobs turn them into a `JobResult`; this module logs it: params (the job record's
flat vocabulary), metrics, step-wise curves, tables, documents, figures, dataset inputs, and the job's output folder
(artifact `output/`, where a worker on another machine downloads a trained stage from). A failed job keeps its reason
as a tag and its whole traceback as `error.txt`. What a run shows is logged while it is RUNNING; its end (FINISHED,
FAILED, KILLED) is a separate step, taken when the job store has given its verdict (see `bench.run.executor`).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.entities import DatasetInput, InputTag, Metric, Param, Run
from mlflow.entities.model_registry import PromptVersion
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_TYPE

from bench.plan.specs import Job
from bench.run.interrupts import UninterruptedClient
from bench.run.store import JobStore
from bench.run.ui_view import METRIC_COLUMNS, VIEW_TAG_PREFIX, view_key, view_state
from reports.store import read_predictions
from reports.vocabulary import (
    ATTEMPT_TAG,
    ENV_TAG_PREFIX,
    ERROR_ARTIFACT,
    ERROR_TAG,
    EVAL_KIND,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    GRID_TAG,
    HASH_TAG,
    KIND_TAG,
    OUTPUT_ARTIFACT,
    PROMPT_TAG,
    PRUNED_TAG,
    RUNS_PLANNED,
    STUDY_TAG,
    TRIAL_KIND,
    TRIAL_STATE_TAG,
    TRIAL_TAG,
)
from runners.environment import environment

BATCH = 900  # MLflow takes at most 1000 metrics and 100 params per log_batch call


@dataclass(frozen=True)
class DatasetLog:
    """A dataset a job read, for MLflow's dataset inputs (`context`: evaluation, training, reasonings, ...)."""

    frame: pd.DataFrame
    source: str
    name: str
    context: str
    targets: str = "label"


@dataclass(frozen=True)
class TrainedModel:
    """A trained stage to log as an MLflow model: its base model's folder and the folders of the stages trained before
    it (its own is the job's output), its job's key, the name it is logged (and, with `register`, registered) under,
    and a line that says what it is."""

    base: Path
    earlier: list[Path]
    key: str
    name: str
    register: bool
    description: str


@dataclass
class JobResult:
    """What a finished job has to show: final metrics, tables (`log_table`), JSON documents, figures, the datasets it
    read, its output folder (trained adapter, reasonings...) and one line for the terminal; a training stage's
    model, and the key of the training job whose model an evaluation used and the wording it prompted with."""

    metrics: dict[str, float] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    documents: dict[str, dict] = field(default_factory=dict)
    figures: dict[str, object] = field(default_factory=dict)
    datasets: list[DatasetLog] = field(default_factory=list)
    output: Path | None = None
    summary: str = ""
    model: TrainedModel | None = None
    uses_model: str | None = None
    prompt: tuple[str, str] | None = None  # (name, text) of the template wording it prompted with


@dataclass(frozen=True)
class OpenRun:
    """A job's run that is RUNNING: its id, its job's key (hash tag) and the job store's attempt that started it
    (None: a run of a version that did not tag attempts)."""

    run_id: str
    key: str
    attempt: int | None


def environment_tags() -> dict[str, str]:
    """The versions, commit and device this process runs with, as the tags every run carries."""
    return {ENV_TAG_PREFIX + name: value for name, value in environment().items()}


def one_line(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` on one line, cut to `limit` characters (the whole traceback goes to error.txt)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class MlflowRecorder:
    """Logs the jobs of one experiment (created on first use, as a model-development experiment). `store`
    serialises the creation of the tracking store and the experiment among workers that start together."""

    def __init__(self, uri: str, experiment: str, store: JobStore) -> None:
        self.uri, self.experiment = uri, experiment
        with store.serialized():  # MlflowClient creates (and migrates) a new SQLite store when it is made
            # models and prompts registered beside the runs; every call whole, never cut by Ctrl-C
            self.client = UninterruptedClient(MlflowClient(uri, registry_uri=uri))
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(
                experiment, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        self._store = store  # its `serialized` section: workers register a prompt version one at a time
        self._prompts: dict[tuple[str, str], PromptVersion] = {}  # (name, text) -> its registered version

    def open_parent(self, store: JobStore, grid: str, source: Path | None, planned: int,
                    columns: Sequence[str] = ()) -> str:
        """The grid's one parent run (every worker and invocation nests under it), marked RUNNING again if an
        earlier invocation ended it, with the number of evaluations planned; and the grid's first view in the UI,
        its params `columns` beside the metrics (`bench.run.ui_view`)."""
        def create() -> str:
            tags = {GRID_TAG: grid, **environment_tags()}
            run = self.client.create_run(self.experiment_id, run_name=grid, tags=tags)
            if source is not None and source.is_file():
                self.client.log_param(run.info.run_id, "grid.file", str(source))
                self.client.log_artifact(run.info.run_id, str(source), artifact_path="grid")
            return run.info.run_id

        run_id = store.parent_run(grid, create)
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        self.client.log_metric(run_id, RUNS_PLANNED, planned, step=int(time.time()))
        with store.serialized():  # workers starting together would each insert it (PostgreSQL: a duplicate key)
            self.client.set_experiment_tag(self.experiment_id, VIEW_TAG_PREFIX + view_key(grid),
                                           view_state(columns))
        return run_id

    def close_parent(self, run_id: str, status: str) -> None:
        """End the parent run, showing on its row the best of each headline metric among its finished evaluations
        (baselines included), so the grid's row says something before it is expanded."""
        children = self._search(f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{run_id}' and tags.`{KIND_TAG}` = '{EVAL_KIND}' "
                                "and attributes.status = 'FINISHED'")
        best = {m: max(values) for m in METRIC_COLUMNS
                if (values := [r.data.metrics[m] for r in children if m in r.data.metrics])}
        if best:
            self.log_step(run_id, best, 0)
        self.client.set_terminated(run_id, status)

    def start(self, job: Job, parent_id: str | None, attempt: int) -> str:
        """A RUNNING child run for `job`'s `attempt` (the job store's), with its params and its identity tags."""
        run_tags = {KIND_TAG: job.KIND, HASH_TAG: job.key, ATTEMPT_TAG: str(attempt), **environment_tags()}
        if job.KIND == EVAL_KIND:
            run_tags[MLFLOW_RUN_TYPE] = "evaluation"  # the UI opens the parent of such runs expanded
        if parent_id:
            run_tags[MLFLOW_PARENT_RUN_ID] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=job.name, tags=run_tags)
        values = [Param(k, v) for k, v in job.run_params().items()]
        for start in range(0, len(values), 100):
            self.client.log_batch(run.info.run_id, params=values[start:start + 100])
        return run.info.run_id

    def start_trial(self, spec: Job, parent_id: str, number: int, study: str) -> str:
        """A search trial's run (kind `trial`, its jobs nest under it), with the params of the spec it evaluates: the
        same vocabulary as a grid's runs, so both line up in MLflow's compare view."""
        tags = {KIND_TAG: TRIAL_KIND, STUDY_TAG: study, TRIAL_TAG: str(number), MLFLOW_PARENT_RUN_ID: parent_id,
                **environment_tags()}
        run = self.client.create_run(self.experiment_id, run_name=f"trial {number}: {spec.name}", tags=tags)
        values = [Param(k, v) for k, v in spec.run_params().items()]
        for start in range(0, len(values), 100):
            self.client.log_batch(run.info.run_id, params=values[start:start + 100])
        return run.info.run_id

    def end_trial(self, run_id: str, state: str, metrics: dict[str, float]) -> None:
        """A trial's final state (COMPLETE, cached, PRUNED, FAIL) and figures."""
        self.log_step(run_id, metrics, 0)
        self.client.set_tag(run_id, TRIAL_STATE_TAG, state)
        self.client.set_terminated(run_id, {"PRUNED": "KILLED", "FAIL": "FAILED"}.get(state, "FINISHED"))

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path=artifact_path)

    def log_step(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        stamp = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in metrics.items()])

    def log_result(self, run_id: str, result: JobResult) -> None:
        """What a finished job shows (metrics, tables, documents, figures, datasets, output folder); the run stays
        RUNNING until `end`."""
        stamp = int(time.time() * 1000)
        metrics = [Metric(k, float(v), stamp, 0) for k, v in result.metrics.items()]
        for start in range(0, len(metrics), BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + BATCH])
        for name, table in result.tables.items():
            self.client.log_table(run_id, table, artifact_file=name)
        for name, document in result.documents.items():
            self.client.log_dict(run_id, document, name)
        for name, figure in result.figures.items():
            self.client.log_figure(run_id, figure, name)
        if result.datasets:
            self.client.log_inputs(run_id, datasets=[_dataset_input(d) for d in result.datasets])
        if result.output is not None:
            self.client.log_artifacts(run_id, str(result.output), artifact_path=OUTPUT_ARTIFACT)
        if result.model is not None and result.output is not None:
            self._log_model(run_id, result.model, result.output)
        if result.uses_model is not None:
            self._link_model(run_id, result.uses_model)
        if result.prompt is not None:
            self._link_prompt(run_id, *result.prompt)

    def _log_model(self, run_id: str, model: TrainedModel, output: Path) -> None:
        """The trained stage as a logged model of the transformers flavour (`runners.mlflow_model`), an output of
        its run, tagged with its job's key; registered as a new version of `model.name` where asked."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        from runners.mlflow_model import save_trained_model

        params = self.client.get_run(run_id).data.params
        logged = self.client.create_logged_model(self.experiment_id, model.name, run_id, {HASH_TAG: model.key}, params)
        with tempfile.TemporaryDirectory() as work:
            folder = Path(work) / "model"
            described = Model(artifact_path=logged.artifact_location, run_id=run_id, model_uuid=logged.model_id,
                              model_id=logged.model_id)
            save_trained_model(model.base, [*model.earlier, output], folder, model.description, described)
            self.client.log_model_artifacts(logged.model_id, str(folder))
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        if model.register:
            if not self.client.search_registered_models(f"name = '{model.name}'"):
                self.client.create_registered_model(model.name, description=model.description)
            # its artifacts' location, not models:/<id>: a SQL registry reads that through the process-global store
            self.client.create_model_version(model.name, logged.artifact_location, run_id,
                                             description=model.description, model_id=logged.model_id)

    def _link_model(self, run_id: str, key: str) -> None:
        """Link an evaluation's run to the model it evaluated (the latest logged by the training job `key`), as the
        run's model input; nothing when none was logged (a store older than logged models)."""
        from mlflow.entities import LoggedModelInput

        found = self.client.search_logged_models([self.experiment_id], f"tags.`{HASH_TAG}` = '{key}'", max_results=1,
                                                 order_by=[{"field_name": "creation_timestamp", "ascending": False}])
        if found:
            self.client.log_inputs(run_id, models=[LoggedModelInput(found[0].model_id)])

    def _link_prompt(self, run_id: str, name: str, text: str) -> None:
        """Link an evaluation's run to the version of prompt `name` whose text is `text` in MLflow's prompt registry
        (registered there on first use: one version per distinct text), and tag it with that version's URI."""
        version = self._prompts.get((name, text))
        if version is None:
            with self._store.serialized():  # two workers' first evaluations would register the same text twice
                version = self._prompts[name, text] = self._prompt_version(name, text)
        from mlflow.tracing.constant import TraceTagKey
        from mlflow.tracing.utils.prompt import update_linked_prompts_tag

        # the tag `link_prompt_version_to_run` writes, written here: that call writes through the process-global store
        self.client.set_tag(run_id, TraceTagKey.LINKED_PROMPTS, update_linked_prompts_tag(None, [version]))
        self.client.set_tag(run_id, PROMPT_TAG, version.uri)

    def _prompt_version(self, name: str, text: str) -> PromptVersion:
        """The version of prompt `name` with this text, registered if there is none (with the lower-level calls:
        `register_prompt` reads MLflow's process-global experiment)."""
        from mlflow.prompt.constants import PROMPT_EXPERIMENT_IDS_TAG_KEY

        if self.client.get_prompt(name) is None:
            self.client.create_prompt(name, "a prompt template wording of genclsbench (strategies/templates.py)",
                                      {PROMPT_EXPERIMENT_IDS_TAG_KEY: f",{self.experiment_id},"})
        token = None
        while True:
            page = self.client.search_prompt_versions(name, page_token=token)
            found = next((v for v in page if v.template == text), None)
            if found is not None:
                return found
            if not (token := page.token):
                return self.client.create_prompt_version(name, text)

    def log_error(self, run_id: str, exc: BaseException) -> None:
        """A failed job's reason as a tag and its whole traceback as error.txt."""
        text = "".join(traceback.format_exception(exc))
        self.client.set_tag(run_id, ERROR_TAG, one_line(exc))
        self.client.log_text(run_id, text, ERROR_ARTIFACT)

    def log_pruned(self, run_id: str, reason: str, metrics: dict[str, float]) -> None:
        """A pruned evaluation: tagged PRUNED with the reason, keeping the figures of the examples evaluated."""
        self.log_step(run_id, metrics, 0)
        self.client.set_tag(run_id, PRUNED_TAG, reason)

    def end(self, run_id: str, status: str) -> None:
        """End the run: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(run_id, status)

    def running(self, keys: Collection[str]) -> list[OpenRun]:
        """The RUNNING runs of the jobs `keys`, whichever worker started them (found by their hash tag)."""
        wanted = set(keys)
        return [OpenRun(r.info.run_id, r.data.tags[HASH_TAG], _attempt(r.data.tags.get(ATTEMPT_TAG, "")))
                for r in self._search("attributes.status = 'RUNNING'") if r.data.tags.get(HASH_TAG) in wanted]

    def _search(self, filter_string: str) -> list[Run]:
        """Every run of the experiment that `filter_string` matches, page after page."""
        found, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=1000, page_token=token)
            found += page
            token = page.token
            if not token:
                return found

    def metrics(self, run_ids: list[str]) -> dict[str, dict[str, float]]:
        """The final metrics of each of `run_ids` (finished earlier, perhaps by another worker)."""
        found: dict[str, dict[str, float]] = {}
        for start in range(0, len(run_ids), 100):
            ids = ", ".join(f"'{r}'" for r in run_ids[start:start + 100])
            for run in self.client.search_runs([self.experiment_id], f"attributes.run_id IN ({ids})",
                                               max_results=100):
                found[run.info.run_id] = run.data.metrics
        return found

    def predictions(self, run_id: str) -> list[dict] | None:
        """The rows of an evaluation run's predictions table in the examples' order; None if it has none."""
        return read_predictions(self.client, run_id)

    def download_output(self, run_id: str, into: Path) -> None:
        """The output folder of a finished job's run, into `into` (which exists and is empty)."""
        with tempfile.TemporaryDirectory() as work:
            fetched = Path(self.client.download_artifacts(run_id, OUTPUT_ARTIFACT, work))
            for item in fetched.iterdir():
                shutil.move(str(item), into / item.name)


def _attempt(tag: str) -> int | None:
    return int(tag) if tag.isdigit() else None


def _dataset_input(log: DatasetLog) -> DatasetInput:
    import mlflow.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow: "source can be interpreted in multiple ways" (harmless)
        # a source must read as a path, not as a URI of an unknown scheme ("emotion:1f..." would)
        dataset = mlflow.data.from_pandas(log.frame, source=log.source.replace(":", "-"), targets=log.targets,
                                          name=log.name)
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, log.context)])
