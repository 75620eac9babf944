"""From a grid file to workers at work: the grid read with the command line's overrides, its job graph, where it is
recorded (MLflow) and coordinated (the job store), the plan shown before anything runs, a worker of this process
(which `bench search` builds the same way), and the worker processes of `--workers N`, each an executor against the
same store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from bench.plan.datasets import DatasetCache
from bench.plan.errors import UserError
from bench.plan.graph import JobGraph, build_graph
from bench.plan.grid import experiment_name
from bench.plan.specs import Job, RunSpec, TrainSpec
from bench.run.locations import (
    MLFLOW_TABLE,
    check_reachable,
    job_store_uri,
    mask,
    sqlite_path,
    tracking_uri,
    worker_handoff,
)
from bench.run.store import DEFAULT_LEASE_S, DONE, ENDED_WITHOUT_RESULT, FAILED, RUNNING, JobState, JobStore, SqlStore
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


def prepare(path: Path, overrides: Overrides, tracking: str | None, store: str | None, experiment: str | None,
            environment: dict[str, str]) -> PlannedGrid:
    """Read and validate the grid, expand it and build its job graph (no torch, nothing written)."""
    from bench.plan.grid import MAX_EXAMPLES, expand, read_grid
    from bench.plan.lengths import check_lengths
    from runners.model_registry import default_dtype

    grid = read_grid(path)
    if overrides.limit is not None:
        if overrides.limit > MAX_EXAMPLES:
            raise UserError(f"--limit {overrides.limit}: at most {MAX_EXAMPLES:,} examples a run; leave it out to "
                            "evaluate the whole split")
        grid.eval.limit = overrides.limit
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
                       Stores.named(tracking, store, experiment or grid.name, environment))


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
                 observe: Callable[[Job, str], OnPartial] | None = None) -> Executor:
        """This worker at work on `graph`, its runs nested under `parent_id`."""
        from bench.run.executor import Executor

        return Executor(graph, self.store, self.recorder, self.workspace, self.performer, reporter,
                        parent_id=parent_id, lease_s=lease_s, observe=observe)


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
    """Pull or convert every model, and refuse one that cannot be trained, before any job runs."""
    from runners.model_registry import ModelError, check_trainable

    for model in models:
        with console.status(f"preparing model {model} (first use downloads and converts it)"):
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


def _relay(process: subprocess.Popen, label: str, console: Console) -> threading.Thread:
    """Print a worker process's lines, prefixed with its label, from a thread (the live display stays intact)."""
    def pump() -> None:
        for line in process.stdout:
            console.print(f"[{label}] {line.rstrip()}", highlight=False, markup=False)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def spawn_workers(argv: Sequence[str], stores: Stores, count: int, threads: int,
                  console: Console) -> list[subprocess.Popen]:
    """`count` more worker processes of the same `bench run` (`argv`: its arguments) on the same `stores` (handed
    over in the environment, not on the command line: `worker_handoff`), each with `threads` CPU threads for torch,
    their output relayed to this console."""
    arguments, handed = worker_handoff(argv, stores.tracking_uri, stores.store_uri)
    command = [sys.executable, "-m", "bench", *arguments, "--as-worker"]
    environment = os.environ | handed | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                                         "PYTHONUNBUFFERED": "1"}  # lines, as they come
    processes = []
    for n in range(count):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=environment)
        _relay(process, f"worker {n + 2}", console)
        processes.append(process)
    return processes


def join_workers(processes: Sequence[subprocess.Popen], interrupted: bool) -> None:
    """Wait for the other workers: they end by themselves once the grid is done; when this one was interrupted, they
    are asked to stop first (each ends its running job KILLED and gives it back)."""
    for process in processes:
        if interrupted and process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=120)


def work(grid: PlannedGrid, store: SqlStore, console: Console, lease_s: float = DEFAULT_LEASE_S,
         label: str | None = None, threads: int | None = None) -> Results:
    """Run the graph as one worker of this process against `store`, recording into the grid's experiment (the
    grid's parent run shared with every other worker). SIGTERM ends the running job KILLED and gives it back, like
    Ctrl-C. `label`: this worker's name in its lines (a worker started by `--workers`); `threads`: torch's CPU
    threads (the machine's cores shared among its workers)."""
    from bench.run.progress import LineReporter, LiveReporter

    worker = open_worker(grid.stores, store, grid.workspace, grid.datasets, grid.batching)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    recorder = worker.recorder
    parent = recorder.open_parent(store, grid.name, grid.path, len(grid.graph.evaluations))
    live = sys.stdout.isatty() and label is None
    reporter = LiveReporter(console) if live else LineReporter(console)
    executor = worker.executor(grid.graph, reporter, parent, lease_s)

    def terminated(signum, frame) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with reporter if live else contextlib.nullcontext():
            outcomes = executor.run()
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
    metrics = recorder.metrics([o.run_id for o in outcomes if o.run_id and o.status in ("done", "earlier")])
    return Results([(o.spec, o.status, metrics.get(o.run_id, {}) if o.run_id else {}) for o in outcomes],
                   recorder.experiment_id)
