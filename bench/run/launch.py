"""From a grid file to workers at work: the grid read with the command line's overrides, its job graph, where it is
recorded (MLflow) and coordinated (the job store), the plan shown before anything runs, a worker of this process
(which `bench search` builds the same way), and the grid's `GridWork`: what every worker runs wherever a launcher
(`bench.run.launchers`) places it, an executor against the same store."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from bench.plan.datasets import DatasetCache
from bench.plan.errors import UserError
from bench.plan.graph import JobGraph, build_graph
from bench.plan.grid import LauncherConfig, experiment_name
from bench.plan.reasoning_corpora import BUNDLED_CORPORA
from bench.plan.specs import Job, RGenSpec, RunSpec, TrainSpec
from bench.run.launchers.interface import Place
from bench.run.locations import MLFLOW_TABLE, check_reachable, job_store_uri, mask, sqlite_path, tracking_uri
from bench.run.store import DONE, ENDED_WITHOUT_RESULT, FAILED, RUNNING, JobState, JobStore, SqlStore
from bench.run.workspace import Workspace, default_cache
from runners.batching import Batching

if TYPE_CHECKING:
    from bench.run.executor import Executor, OnPartial, Performer
    from bench.run.progress import Reporter
    from bench.run.recorder import MlflowRecorder


@dataclass(frozen=True)
class Overrides:
    """What the command line changes in a grid."""

    limit: int | None = None
    dataset: str | None = None
    model: str | None = None
    batch_size: int | None = None

    def options(self) -> str:
        """The options that make the same grid of jobs again (for `bench status`), as a command line writes them
        (each after a space)."""
        import shlex

        given = {"--limit": self.limit, "--dataset": self.dataset, "--model": self.model}
        return "".join(f" {name} {shlex.quote(str(value))}" for name, value in given.items() if value is not None)


@dataclass(frozen=True)
class Stores:
    """Where a grid's (or a study's) runs are recorded (an MLflow tracking store and experiment) and coordinated (the
    job store)."""

    tracking_uri: str
    store_uri: str
    experiment: str

    @classmethod
    def named(cls, tracking: str | None, store: str | None, experiment: str, environment: Mapping[str, str]) -> Stores:
        """The stores the command line names, or their defaults (`bench.run.locations`)."""
        uri = tracking_uri(tracking, environment)
        return cls(uri, job_store_uri(store, uri), experiment_name(experiment))


@dataclass
class PlannedGrid:
    """A grid made ready to run: its job graph, the datasets it reads, this machine's cache, how inference batches,
    and where it is recorded and coordinated."""

    name: str
    path: Path
    graph: JobGraph
    datasets: DatasetCache
    workspace: Workspace
    batching: Batching
    stores: Stores
    launcher: LauncherConfig


def prepare(path: Path, overrides: Overrides, tracking: str | None, store: str | None, experiment: str | None,
            environment: dict[str, str]) -> PlannedGrid:
    """Read and validate the grid, expand it and build its job graph (no torch, nothing written)."""
    from bench.plan.grid import expand, limited, read_grid
    from bench.plan.lengths import check_lengths
    from runners.model_registry import default_dtype

    grid = limited(read_grid(path), overrides.limit)
    if overrides.dataset is not None:
        grid.datasets, grid.eval.split = [overrides.dataset], None  # split names are per dataset: its default
    if overrides.model is not None:
        grid.models = [overrides.model]
    datasets = DatasetCache()
    graph = build_graph(expand(grid, path, datasets, default_dtype()))
    workspace = Workspace(default_cache(environment))
    check_lengths(graph.evaluations, datasets, workspace.root, grid.eval.max_input_tokens)
    return PlannedGrid(grid.name, path, graph, datasets, workspace,
                       Batching(overrides.batch_size or grid.inference.batch_size, grid.inference.tokens_per_batch),
                       Stores.named(tracking, store, experiment or grid.name, environment), grid.launcher)


def open_store(stores: Stores, create: bool = True) -> SqlStore | None:
    """The job store (None when it does not exist yet and `create` is off: a dry run writes nothing). A tracking
    server or a database that does not answer fails here, within seconds, with one line, before anything is made."""
    check_reachable(stores.tracking_uri, "MLflow tracking store", holds=MLFLOW_TABLE)
    path = sqlite_path(stores.store_uri)
    if path is not None and not path.is_file() and not create:
        return None
    check_reachable(stores.store_uri, "job store")
    for folder in {p.parent for p in map(sqlite_path, (stores.tracking_uri, stores.store_uri)) if p is not None}:
        folder.mkdir(parents=True, exist_ok=True)
    return SqlStore(stores.store_uri, stores.experiment)


@dataclass
class Worker:
    """What this process runs jobs with: the job store, the recorder, this machine's cache, and a performer (whose
    datasets and loaded model are kept across jobs and graphs)."""

    store: JobStore
    recorder: MlflowRecorder
    workspace: Workspace
    performer: Performer

    def executor(self, graph: JobGraph, reporter: Reporter, parent_id: str, lease_s: float,
                 observe: Callable[[Job, str], OnPartial] | None = None, name: str | None = None) -> Executor:
        """This worker at work on `graph`, its runs nested under `parent_id`; `name`: its name in the job store
        (given by its launcher; host:pid by default)."""
        from bench.run.executor import Executor, worker_name

        return Executor(graph, self.store, self.recorder, self.workspace, self.performer, reporter,
                        parent_id=parent_id, worker=name or worker_name(), lease_s=lease_s, observe=observe)


def open_worker(stores: Stores, store: JobStore, workspace: Workspace, datasets: DatasetCache,
                batching: Batching) -> Worker:
    """A worker of this process recording into `stores`' experiment (created on first use), coordinated by `store`,
    performing every registered kind of job; the libraries' own progress bars are silenced first."""
    from bench.run.jobs import KindPerformer
    from bench.run.recorder import MlflowRecorder
    from runners.quiet import quiet_libraries

    quiet_libraries()
    return Worker(store, MlflowRecorder(stores.tracking_uri, stores.experiment, store), workspace,
                  KindPerformer(workspace, datasets, batching))


def plan_lines(grid: PlannedGrid, states: dict[str, JobState], now: float, dry_run: bool) -> list[str]:
    """What the plan says before anything runs: the counts, where it goes, notes, the estimated cost (and with
    `dry_run`, every job, at store time `now`)."""
    from bench.plan.cost import estimate, expensive, tokens
    from bench.run.status import describe

    graph, stores = grid.graph, grid.stores
    evaluations = graph.evaluations
    done = sum(s.key in states and states[s.key].status == DONE for s in evaluations)
    others = len(graph.jobs) - len(evaluations)
    lines = [f"grid {grid.name} ({grid.path}): {len(evaluations)} runs, {done} already finished, "
             f"{len(evaluations) - done} to run" + (f"; {others} other jobs (training, reasonings, relabelling)"
                                                    if others else "")
             + f"; tracking {mask(stores.tracking_uri)}, jobs {mask(stores.store_uri)}, "
               f"experiment '{stores.experiment}'"]
    lines += [f"note: {note}" for note in graph.notes]
    todo = [j for k, j in graph.jobs.items() if not (k in states and states[k].status == DONE)]
    costs = estimate(todo, grid.datasets, grid.workspace.root)
    flagged = sorted(expensive(costs), key=lambda k: -costs[k].tokens)
    lines.append(f"estimated cost of what is left: {tokens(sum(c.tokens for c in costs.values()))} model tokens"
                 + (f"; {len(flagged)} expensive job(s):" if flagged else ""))
    lines += [f"  {graph.jobs[k].name}: {tokens(costs[k].tokens)} tokens ({costs[k].why})" for k in flagged[:5]]
    if dry_run:
        notes = {k: f"~{tokens(c.tokens)} tokens" + (" EXPENSIVE" if k in flagged else "") for k, c in costs.items()}
        lines += [f"  {line}" for line in describe(graph, states, now, notes)]
    return lines


def graph_models(graph: JobGraph) -> tuple[list[str], set[str]]:
    """The models a graph evaluates, and those it trains."""
    evaluated = list(dict.fromkeys(s.model for s in graph.evaluations if not s.baseline))
    return evaluated, {j.model for j in graph.jobs.values() if isinstance(j, TrainSpec)}


def prepare_models(workspace: Workspace, models: Sequence[str], trained: set[str], console: Console) -> None:
    """Pull or convert every model, and refuse one that cannot be trained, before any job runs: one line of ours
    for a model that is not here yet (what its first use does, how long), a spinner under it on a terminal, and the
    libraries' own progress bars off meanwhile (`bars_off`: for these calls only)."""
    from bench.run.progress import say
    from runners.model_registry import ModelError, check_trainable, first_use
    from runners.quiet import bars_off

    for model in models:
        doing = first_use(model, workspace.root)
        if doing is not None:
            say(console, f"preparing {model}: {doing}")
        with console.status(model) if doing and console.is_terminal else contextlib.nullcontext(), bars_off():
            try:
                folder = workspace.model(model)
                if model in trained:
                    check_trainable(model, folder)
            except ModelError as exc:
                raise UserError(str(exc)) from None


@dataclass
class Results:
    """The evaluations of a grid as this worker leaves them: (spec, status, metrics), in graph order."""

    rows: list[tuple[RunSpec, str, dict[str, float]]]
    experiment_id: str


def work(grid: PlannedGrid, store: SqlStore, console: Console, lease_s: float, place: Place) -> None:
    """Run the graph as one worker of this process against `store`, recording into the grid's experiment (the
    grid's parent run shared with every other worker); `place` says its name, its label (a worker that is not this
    terminal's own) and its torch threads. SIGTERM ends the running job KILLED and gives it back, like Ctrl-C."""
    from bench.run.progress import LineReporter, LiveReporter
    from bench.run.ui_view import varying_params

    worker = open_worker(grid.stores, store, grid.workspace, grid.datasets, grid.batching)
    if place.threads is not None:
        import torch

        torch.set_num_threads(place.threads)
    recorder = worker.recorder
    evaluations = grid.graph.evaluations
    parent = recorder.open_parent(store, grid.name, grid.path, len(evaluations), varying_params(evaluations))
    live = sys.stdout.isatty() and place.label is None
    reporter = LiveReporter(console) if live else LineReporter(console)
    executor = worker.executor(grid.graph, reporter, parent, lease_s, name=place.name)

    def terminated(signum, frame) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with reporter if live else contextlib.nullcontext():
            executor.run()
    except BaseException:
        states = store.states(list(grid.graph.jobs)).values()
        ended = (DONE, *ENDED_WITHOUT_RESULT)
        if not any(s.status == RUNNING for s in states) and not all(s.status in ended for s in states):
            recorder.close_parent(parent, "KILLED")  # the grid is unfinished, and no other worker is at work on it
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = any(s.status == FAILED for s in store.states(list(grid.graph.jobs)).values())
    recorder.close_parent(parent, "FAILED" if failed else "FINISHED")


def check_node_files(graph: JobGraph, where: str) -> None:
    """Fail with one line naming `where` (a worker, and so its node) when a file the jobs read while they run is not
    readable there: a reasoning corpus given as a path (the datasets' rows travel with the work)."""
    for job in graph.jobs.values():
        for corpus in job.corpora if isinstance(job, RGenSpec) else ():
            if corpus.ref not in BUNDLED_CORPORA and not Path(corpus.ref).is_file():
                raise UserError(f"{where} cannot read the reasoning corpus {corpus.ref} (looked at "
                                f"{Path(corpus.ref).absolute()}); put it at that path on every node (a disk they "
                                "share)")


@dataclass
class GridWork:
    """A grid's work for every worker, wherever a launcher places it (`bench.run.launchers.Work`): the planned grid
    (its graph, and the rows of its datasets, travel with it) and the lease of a claim. On a node, the node's own
    cache folder (its environment's) holds the models and the jobs' outputs."""

    grid: PlannedGrid
    lease_s: float

    def _here(self, place: Place) -> PlannedGrid:
        return replace(self.grid, workspace=Workspace(default_cache(place.environment)))

    def prepare(self, place: Place, console: Console) -> None:
        grid = self._here(place)
        check_node_files(grid.graph, place.name or "this machine")
        prepare_models(grid.workspace, *graph_models(grid.graph), console)

    def __call__(self, place: Place, console: Console) -> None:
        grid = self._here(place)
        work(grid, open_store(grid.stores), console, self.lease_s, place)


def grid_results(grid: PlannedGrid, store: JobStore, began: float) -> Results:
    """The grid's evaluations as the store has them once its workers have ended (`began`: the store's time when
    they were launched), with their metrics."""
    from bench.run.executor import evaluation_outcomes
    from bench.run.recorder import MlflowRecorder

    recorder = MlflowRecorder(grid.stores.tracking_uri, grid.stores.experiment, store)
    outcomes = evaluation_outcomes(grid.graph, store, began)
    metrics = recorder.metrics([o.run_id for o in outcomes if o.run_id and o.status in ("done", "earlier")])
    return Results([(o.spec, o.status, metrics.get(o.run_id, {}) if o.run_id else {}) for o in outcomes],
                   recorder.experiment_id)
