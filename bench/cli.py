"""`bench`: the command line. Every user error ends as one line on stderr with exit code 2."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from bench.dashboard import DEFAULT_PORT
from bench.plan.errors import UserError, printable
from bench.run.progress import TerminalConsole, say
from bench.run.store import DEFAULT_LEASE_S, MAX_LEASE_S, MIN_LEASE_S

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                  help="Benchmark training and inference strategies of LLM text classifiers.")
console = TerminalConsole(width=None if sys.stdout.isatty() else 120)  # logs get a readable table
DEFAULT_GRID = Path("grids/quick.yaml")
REPORTS = Path("report")  # `bench report` writes report/<experiment>/ by default
GridFileOption = Annotated[Path | None, typer.Option("--grid", help="grid file (default: grids/quick.yaml)")]
# what `bench run` changes in a grid: `bench status` takes them too, to describe the grid that ran
Limit = Annotated[int | None, typer.Option(min=1, help="cap the evaluation examples per run")]
DatasetOverride = Annotated[str | None, typer.Option("--dataset", help="replace the grid's datasets: name, file "
                                                                       "(relative to the working directory), hf:<id>")]
ModelOverride = Annotated[str | None, typer.Option("--model", help="replace the grid's models: alias, folder or Hub "
                                                                   "id")]
GridExperiment = Annotated[str | None, typer.Option(help="MLflow experiment (default: the grid's name)")]
DEFAULT_STORAGE = "sqlite:///optuna.db"  # `bench search`'s Optuna storage, which `bench dashboard` shows
TrackingUri = Annotated[str | None, typer.Option(
    "--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")]
StoreUri = Annotated[str | None, typer.Option(
    "--store", help="job store shared by workers (default: beside a SQLite or PostgreSQL MLflow store)")]
Workers = Annotated[int, typer.Option(min=1, help="workers: processes on this machine (CPU threads split among "
                                                  "them), Ray actors or Slurm array tasks (see --on)")]
On = Annotated[str, typer.Option("--on", help="where the workers run: local (this machine; more machines join "
                                              "with the same command), ray (a Ray cluster) or slurm (a job array)")]
RayAddress = Annotated[str | None, typer.Option(
    help="--on ray: the cluster's head node, host:port (default $RAY_ADDRESS; neither: a Ray started here)")]
CpusPerWorker = Annotated[int | None, typer.Option(
    min=1, help="--on ray/slurm: CPUs per worker (default: one with a GPU, else the CPUs split among the workers)")]
GpusPerWorker = Annotated[int | None, typer.Option(
    min=0, help="--on ray/slurm: GPUs per worker (default on Ray: 1 where the cluster has GPUs, else 0)")]
Partition = Annotated[str | None, typer.Option(help="--on slurm: the partition (default: the cluster's)")]
MemGb = Annotated[int | None, typer.Option(min=1, help="--on slurm: memory per worker in GB (default: the "
                                                       "partition's)")]
TimeMin = Annotated[int | None, typer.Option(min=1, help="--on slurm: time limit per worker in minutes (default: "
                                                         "the partition's)")]
SlurmLogs = Annotated[Path | None, typer.Option(help="--on slurm: folder for the job array's logs, on a disk the "
                                                     "nodes share (default: slurm-logs)")]
DashboardPort = Annotated[int, typer.Option(min=0, max=65535, help="the dashboard's port on 127.0.0.1 (0: a free "
                                                                    "one)")]
Wait = Annotated[bool, typer.Option("--wait", help="--on slurm: wait for the job array to end, then show the "
                                                   "results")]


LEASES = f"{MIN_LEASE_S:g} to {MAX_LEASE_S:g}"


def _bounded_lease(seconds: float) -> float:
    """`--lease` within the leases a worker may hold (`nan` too is refused, which typer's range lets through)."""
    if not MIN_LEASE_S <= seconds <= MAX_LEASE_S:
        raise typer.BadParameter(f"{seconds:g} seconds is not a lease a worker may hold: give {LEASES} seconds")
    return seconds


def _default_grid() -> Path:
    """grids/quick.yaml in the working directory, else the one shipped beside the package (editable install)."""
    return DEFAULT_GRID if DEFAULT_GRID.is_file() else Path(__file__).resolve().parent.parent / DEFAULT_GRID


class _HeadedTable(Table):
    """A table under a heading line of its own, wrapped (at word boundaries) only where the console is narrower than
    it: rich wraps a table's title at the table's width, mid-phrase ("...; baseline" above "zero")."""

    def __init__(self, heading: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.heading = Text(heading)

    def __rich_console__(self, console, options):
        yield self.heading
        yield from super().__rich_console__(console, options)


def _table(title: str, columns: list[str], wrap: tuple[str, ...] = ()) -> Table:
    """A compact table that fits an 80-column terminal: no vertical rules, numbers never wrap, the `wrap` columns
    (long labels) wrap instead of being cut. Its title, like the cells of `_add_row`, is shown as it is, on a line
    of its own (`_HeadedTable`)."""
    table = _HeadedTable(printable(title), box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column not in wrap, overflow="fold" if column in wrap else "ellipsis",
                         justify="left" if column in wrap else "right")
    return table


def _add_row(table: Table, *cells: str) -> None:
    """A row of cells shown as they are: a name holding brackets is no markup, one holding a control character
    stays on its line (`printable`)."""
    table.add_row(*(Text(printable(cell)) for cell in cells))


def _results_table(rows) -> Table:
    """One row per run ((spec, status, metrics)): what the run is in one wrapped column (dataset and model only when
    the grid has several; a classical baseline by its name), then its figures."""
    llm = [spec for spec, _, _ in rows if not spec.baseline]
    datasets = sorted({spec.dataset.name for spec, _, _ in rows})
    models = sorted({spec.model for spec in llm})

    def label(spec) -> str:
        parts = [spec.dataset.name] if len(datasets) > 1 else []
        if spec.baseline:
            return " / ".join([*parts, spec.strategy_label])
        parts += [spec.model] if len(models) > 1 else []
        parts += [spec.train.strategy.tag()] if spec.train else []
        return " / ".join([*parts, spec.strategy_label])

    scope = " / ".join(([datasets[0]] if len(datasets) == 1 else []) + ([models[0]] if len(models) == 1 else []))
    table = _table(f"results: {scope}" if scope else "results",
                   ["run", "acc", "F1", "invalid", "uncert.", "ex/s", "status"], wrap=("run",))
    for spec, status, m in rows:
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in ("accuracy", "macro_f1", "invalid_rate", "uncertain_rate")]
        speed = f"{m['examples_per_s']:.1f}" if "examples_per_s" in m else "-"
        _add_row(table, label(spec), *cells, speed, status)
    return table


def _profile_table(rows) -> Table:
    """Where the evaluations' time went (`runners/phases.py`): per phase, its seconds over every run, its share of
    their wall time, and the run that spent most in it; per-run figures are each run's time.<phase>_s metrics."""
    from runners.phases import PHASE_ORDER, phase_seconds

    timed = [(spec.name, phase_seconds(m)) for spec, _, m in rows if "wall_time_s" in m]
    wall = sum(m["wall_time_s"] for _, _, m in rows if "wall_time_s" in m)
    table = _table(f"where the time went: {len(timed)} run(s), {wall:.1f} s of wall time (record: after it)",
                   ["phase", "seconds", "share", "most in one run"], wrap=("most in one run",))
    for phase in (p for p in PHASE_ORDER if any(p in phases for _, phases in timed)):
        spent = [(phases.get(phase, 0.0), name) for name, phases in timed]
        most, where = max(spent)
        total = sum(seconds for seconds, _ in spent)
        _add_row(table, phase, f"{total:.2f}", f"{total / wall:.0%}" if wall else "-", f"{most:.2f} s {where}")
    counted = sum(v for _, phases in timed for p, v in phases.items() if p != "record")
    _add_row(table, "other", f"{wall - counted:.2f}", f"{(wall - counted) / wall:.0%}" if wall else "-", "")
    return table


def _writable_folder(folder: Path, option: str) -> None:
    """Fail with one line unless `folder` can take files: checked before any work, not after it."""
    from bench.run.locations import probe_writable

    try:
        probe_writable(folder)
    except OSError as exc:
        raise UserError(f"{option} {folder}: cannot write there ({exc.strerror}); give a folder you can write") \
            from None


def _tracking_at_the_edge(explicit: str | None, as_worker: bool = False) -> str | None:
    """The tracking URI a command names (--tracking-uri, else $MLFLOW_TRACKING_URI; a worker of `--workers N`: the
    one its parent handed over), without the `user:password@` of an http(s) URI: those go to MLflow as
    MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, the variables it reads basic-auth credentials from (a URI
    with them would be taken for a host name). That is process-global state by MLflow's design, so it is set here,
    at the edge, once, before any MlflowClient exists; worker processes inherit it."""
    from bench.run.locations import WORKER_ENVIRONMENT, split_credentials

    uri = os.environ[WORKER_ENVIRONMENT["--tracking-uri"]] if as_worker else \
        explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        return None
    bare, credentials = split_credentials(uri)
    os.environ.update(credentials)
    return bare


def _one_line_errors(command: Callable[..., None]) -> Callable[..., None]:
    """A UserError inside a command becomes one line on stderr (credentials masked) and exit code 2, never a
    traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs) -> None:
        try:
            for name, value in kwargs.items():  # `--experiment ''` would quietly mean the default
                if isinstance(value, str) and not value.strip():
                    raise UserError(f"--{name.replace('_', '-')} is empty; give a value, or leave the option out "
                                    "for its default")
            command(*args, **kwargs)
        except UserError as exc:
            from bench.run.locations import mask

            print(f"error: {mask(str(exc))}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("interrupted; finished runs are kept, re-run to resume", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@_one_line_errors
def run(
    grid: GridFileOption = None,
    limit: Limit = None,
    dataset: DatasetOverride = None,
    model: ModelOverride = None,
    tracking_uri: TrackingUri = None,
    store: StoreUri = None,
    experiment: GridExperiment = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="override the grid's inference batch size")] = None,
    workers: Workers = 1,
    on: On = "local",
    ray_address: RayAddress = None,
    cpus_per_worker: CpusPerWorker = None,
    gpus_per_worker: GpusPerWorker = None,
    partition: Partition = None,
    mem_gb: MemGb = None,
    time_min: TimeMin = None,
    slurm_logs: SlurmLogs = None,
    wait: Wait = False,
    lease: Annotated[float, typer.Option(callback=_bounded_lease, help=f"seconds ({LEASES}) a worker's claim lasts "
                                         "without a heartbeat: a dead worker's job is taken over after this")
                     ] = DEFAULT_LEASE_S,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the job graph and stop")] = False,
    profile: Annotated[bool, typer.Option("--profile", help="print where each evaluation's time went, by phase "
                                                            "(also logged on every run as time.<phase>_s)")] = False,
    as_worker: Annotated[bool, typer.Option("--as-worker", hidden=True)] = False,
) -> None:
    """Evaluate every strategy combination of a grid and log each one to MLflow."""
    from bench.run.launch import GridWork, Overrides, grid_results, open_store, prepare
    from bench.run.launchers import LAUNCHERS
    from bench.run.locations import WORKER_ENVIRONMENT, mask
    from bench.run.ui_view import runs_route
    from reports.vocabulary import ERROR_ARTIFACT, ERROR_TAG

    tracking_uri = _tracking_at_the_edge(tracking_uri, as_worker)
    store = os.environ[WORKER_ENVIRONMENT["--store"]] if as_worker else store  # see worker_handoff
    environment = dict(os.environ)
    overrides = Overrides(limit, dataset, model, batch_size)
    planned = prepare(grid or _default_grid(), overrides, tracking_uri, store, experiment, environment)
    grid_work = GridWork(planned, lease)
    if as_worker:  # one of the processes of `--workers N`: its parent printed the plan and prints the results
        grid_work(_local_worker(environment), console)
        return
    if dry_run:
        _print_plan(planned, open_store(planned.stores, create=False), dry_run=True)
        return
    stores = planned.stores
    chosen = _placement(on, workers, environment, planned.launcher.model_dump(),
                        {"--tracking-uri": stores.tracking_uri, "--store": stores.store_uri}, ray_address=ray_address,
                        cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker, partition=partition,
                        mem_gb=mem_gb, time_min=time_min, slurm_logs=slurm_logs, wait=wait)
    with LAUNCHERS[on].ready(chosen, console) as launch:
        jobs = open_store(stores)
        _print_plan(planned, jobs, dry_run=False)
        began = jobs.now()
        if not launch(grid_work):
            say(console, f"`bench status --grid {planned.path}{overrides.options()}` (with the same --tracking-uri "
                         "and --store) shows how far they are")
            return
    results = grid_results(planned, jobs, began)
    console.print(_results_table(results.rows))
    if profile:
        console.print(_profile_table(results.rows))
    route = runs_route(results.experiment_id, planned.name)  # the runs in the grid's view, not the GenAI overview
    tracking = planned.stores.tracking_uri
    say(console, f"browse: {mask(tracking).rstrip('/')}/{route}" if tracking.startswith("http") else
        f"browse: mlflow ui --backend-store-uri {mask(tracking)} --host 127.0.0.1 --port 5000, then "
        f"http://127.0.0.1:5000/{route}")
    failed = sum(status == "failed" for _, status, _ in results.rows)
    if failed:
        console.print(f"[red]{failed} run(s) failed[/red]; each MLflow run keeps the reason (tag {ERROR_TAG}) "
                      f"and its traceback ({ERROR_ARTIFACT}); re-run to retry them")
        raise typer.Exit(1)


def _print_plan(planned, jobs, dry_run: bool) -> None:
    """The plan of a grid as the job store `jobs` has it (None: nothing has run yet)."""
    from bench.run.launch import plan_lines

    states, now = (jobs.states(list(planned.graph.jobs)), jobs.now()) if jobs else ({}, time.time())
    for line in plan_lines(planned, states, now, dry_run):
        say(console, line)


def _placement(on: str, workers: int, environment: dict[str, str], section: dict[str, object],
               stores: dict[str, str], **options):
    """What `--on` is asked to start: the launch options given on the command line (an unset one is left to the
    file's `launcher:` section, then to the launcher; `--on ray` reads $RAY_ADDRESS here, at the edge). `stores`: the
    URIs this process resolved, by option; worker processes on this machine get them in their environment
    (`worker_handoff`), never on their command line."""
    from bench.run.launchers import placement
    from bench.run.locations import worker_handoff

    given = {name: value for name, value in options.items() if value not in (None, False)}
    if on == "ray" and "ray_address" not in given and environment.get("RAY_ADDRESS"):
        given["ray_address"] = environment["RAY_ADDRESS"]
    argv, handed = worker_handoff(sys.argv[1:], stores)
    return placement(on, workers, tuple(argv), environment | handed, given, section)


def _local_worker(environment: dict[str, str]):
    """The place of a worker process that `--workers N` started on this machine."""
    from bench.run.launchers.interface import Place

    return Place(None, "worker", _threads_per_worker(), environment)


def _threads_per_worker() -> int | None:
    """The torch threads a worker process was given (OMP_NUM_THREADS, set by the process that started it)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else None


@app.command()
@_one_line_errors
def search(
    space: Annotated[Path, typer.Option(help="space file: a grid whose blocks list the choices, with ranges")],
    trials: Annotated[int, typer.Option(min=1, help="trials in the study, every worker's together")] = 30,
    limit: Annotated[int | None, typer.Option(min=1, help="cap the evaluation examples per trial (part of the "
                                                          "study's space)")] = None,
    study: Annotated[str | None, typer.Option(help="Optuna study (default: the space's name)")] = None,
    storage: Annotated[str, typer.Option(help="Optuna storage: sqlite:///optuna.db for one machine, "
                                              "postgresql://... for many")] = DEFAULT_STORAGE,
    tracking_uri: TrackingUri = None,
    store: StoreUri = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: the space's name)")] = None,
    out: Annotated[Path, typer.Option(help="folder for best.yaml and search.html")] = Path("search"),
    workers: Workers = 1,
    on: On = "local",
    ray_address: RayAddress = None,
    cpus_per_worker: CpusPerWorker = None,
    gpus_per_worker: GpusPerWorker = None,
    partition: Partition = None,
    mem_gb: MemGb = None,
    time_min: TimeMin = None,
    slurm_logs: SlurmLogs = None,
    wait: Wait = False,
    lease: Annotated[float, typer.Option(callback=_bounded_lease, help=f"seconds ({LEASES}) a worker's claim on a "
                                         "job, and its trial, last without a heartbeat")] = DEFAULT_LEASE_S,
    dashboard: Annotated[bool, typer.Option("--dashboard", help="serve optuna-dashboard on the study while the "
                                                                "search runs, on 127.0.0.1 (see --dashboard-port)")
                         ] = False,
    dashboard_port: DashboardPort = DEFAULT_PORT,
    as_worker: Annotated[bool, typer.Option("--as-worker", hidden=True)] = False,
) -> None:
    """Find the best strategy combination of a space with Optuna: each trial is a RunSpec on the same job store as
    `bench run` (a spec already finished costs nothing), and clearly worse trials are pruned on examples."""
    from bench.dashboard import serving
    from bench.plan.datasets import DatasetCache
    from bench.plan.space import read_space
    from bench.run.launch import Stores
    from bench.run.launchers import LAUNCHERS
    from bench.run.locations import WORKER_ENVIRONMENT, absolute, check_reachable, mask, storage_uri
    from bench.search import SearchWork, open_search, summarise, travelling

    _writable_folder(out, "--out")
    tracking_uri = _tracking_at_the_edge(tracking_uri, as_worker)
    if as_worker:  # see worker_handoff
        store, storage = os.environ[WORKER_ENVIRONMENT["--store"]], os.environ[WORKER_ENVIRONMENT["--storage"]]
    environment = dict(os.environ)
    chosen, datasets = read_space(space).limited(limit), DatasetCache()
    chosen.check_inputs(datasets)
    stores = Stores.named(tracking_uri, store, experiment or chosen.name, environment)
    storage = absolute(storage_uri(storage))
    check_reachable(storage, "Optuna storage")  # before the job store is made: a refused search writes nothing
    search_work = SearchWork(travelling(chosen, datasets), study or chosen.name, storage, stores, lease, trials,
                             datasets)
    if as_worker:  # one of the processes of `--workers N`: its parent writes what the search found
        search_work(_local_worker(environment), console)
        return
    placement = _placement(on, workers, environment, chosen.grid.launcher.model_dump(),
                           {"--tracking-uri": stores.tracking_uri, "--store": stores.store_uri, "--storage": storage},
                           ray_address=ray_address, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                           partition=partition, mem_gb=mem_gb, time_min=time_min, slurm_logs=slurm_logs, wait=wait)
    searcher = None
    try:
        with LAUNCHERS[on].ready(placement, console) as launch:
            searcher = open_search(search_work.space, search_work.study, storage, stores, lease, console, environment,
                                   datasets)
            say(console, f"study {searcher.study.study_name} in {mask(storage)}: {len(searcher.study.trials)} trial(s) "
                         f"so far; objectives {', '.join(chosen.search.objectives)}, sampler {chosen.search.sampler}, "
                         f"pruner {chosen.search.pruner}; tracking {mask(stores.tracking_uri)}, experiment "
                         f"'{stores.experiment}'")
            with serving(storage, dashboard_port) if dashboard else contextlib.nullcontext() as address:
                if address:
                    say(console, f"optuna-dashboard: {address} (this machine only; it stops with this command)")
                finished = launch(search_work)
    except KeyboardInterrupt:
        if searcher is None:
            raise
        _interrupted_search(searcher, chosen, space, storage, out)
        raise typer.Exit(130) from None
    except BaseException:
        if searcher is not None:
            searcher.close("KILLED")
        raise
    if not finished:
        say(console, f"run the same `bench search` with --wait, or see the study in {mask(storage)}, when they are "
                     "done")
        return
    result = summarise(chosen, searcher.study)
    _write_search(searcher, chosen, space, storage, result, out)
    failed = [t for t in result.trials if t.state == "FAIL"]
    every_failed = bool(failed) and failed == result.trials
    searcher.close("FAILED" if every_failed else "FINISHED")
    _print_search(result, chosen.search.objectives, out)
    if every_failed:  # nothing to show for it: say why, as a grid whose runs failed does
        first = failed[0]
        print("error: " + mask(printable(f"every trial failed ({len(failed)}); the first, trial {first.number}: "
                                         f"{first.error}")), file=sys.stderr)
        raise typer.Exit(1)


def _write_search(searcher, space, path: Path, storage: str, result, out: Path) -> None:
    """best.yaml (when a trial completed) and search.html into `out`, also logged to the study's parent run."""
    import yaml

    from bench.run.locations import mask
    from bench.search import best_grid, lowered
    from reports.search_page import SearchPage, write_search_page

    study, objectives = searcher.study, space.search.objectives
    out.mkdir(parents=True, exist_ok=True)
    grid = best_grid(result, searcher.worker.recorder.experiment)
    if grid is not None:
        (out / "best.yaml").write_text(yaml.safe_dump(grid, sort_keys=False, allow_unicode=True), encoding="utf-8")
    page = SearchPage(study, f"genclsbench search: {study.study_name}",
                      f"space {path}; storage {mask(storage)}; objectives {', '.join(objectives)}; "
                      f"sampler {space.search.sampler}; pruner {space.search.pruner}", objectives,
                      result.trials, result.best, result.importances,
                      [lowered(space, i) for i in range(len(objectives))])
    write_search_page(page, out)
    searcher.worker.recorder.log_artifacts(searcher.parent, out, "search")


def _interrupted_search(searcher, space, path: Path, storage: str, out: Path) -> None:
    """Ctrl-C during a search: what the trials that ended found is written as after a whole search, the study's
    parent run ends KILLED, and one line says so; the same command goes on with the study."""
    from bench.search import summarise

    result = summarise(space, searcher.study)
    ended = [t for t in result.trials if t.state != "FAIL"]
    if ended:
        _write_search(searcher, space, path, storage, result, out)
    searcher.close("KILLED")
    wrote = "nothing written" if not ended else \
        f"wrote {out / 'best.yaml'} and {out / 'search.html'}" if result.best else \
        f"wrote {out / 'search.html'} (no trial completed, so no best.yaml)"
    print(f"interrupted: {len(ended)} trial(s) finished; {wrote}; the same command goes on with the study",
          file=sys.stderr)


@app.command()
@_one_line_errors
def dashboard(
    storage: Annotated[str, typer.Option(help="Optuna storage of the studies, as `bench search --storage` was "
                                              "given")] = DEFAULT_STORAGE,
    port: DashboardPort = DEFAULT_PORT,
) -> None:
    """Serve optuna-dashboard on a search's Optuna storage, on 127.0.0.1, until Ctrl-C."""
    import threading

    from bench.dashboard import serving
    from bench.run.locations import absolute, check_reachable, mask, sqlite_path, storage_uri

    storage = absolute(storage_uri(storage))
    path = sqlite_path(storage)
    if path is not None and not path.exists():
        raise UserError(f"no Optuna storage at {path}; run `bench search` here first, or give its --storage")
    check_reachable(storage, "Optuna storage", create=False, holds="studies")
    with serving(storage, port) as address:
        say(console, f"optuna-dashboard of {mask(storage)}:")
        say(console, f"{address} (this machine only); Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    say(console, "dashboard stopped")


def _print_search(result, objectives: list[str], out: Path) -> None:
    counts: dict[str, int] = {}
    for trial in result.trials:
        counts[trial.state] = counts.get(trial.state, 0) + 1
    say(console, f"trials: {', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}")
    best = _table("best trial" if len(objectives) == 1 else "Pareto front", ["trial", *objectives, "spec"],
                  wrap=("spec",))
    for trial in (t for t in result.trials if t.number in result.best):
        _add_row(best, str(trial.number), *(f"{v:.3f}" for v in trial.values or []), trial.spec)
    console.print(best)
    for objective, importance in result.importances.items():
        table = _table(f"parameter importance for {objective} (PED-ANOVA)", ["parameter", "importance"])
        for name, value in importance.items():
            _add_row(table, name, f"{value:.3f}")
        console.print(table)
    if not result.best:
        say(console, f"wrote {out / 'search.html'}; no trial finished, so no best.yaml")
        return
    say(console, f"wrote {out / 'best.yaml'} and {out / 'search.html'}; `bench run --grid {out / 'best.yaml'}` "
                 f"reproduces the {'best trial' if len(objectives) == 1 else 'Pareto front'}")


@app.command()
@_one_line_errors
def status(
    grid: GridFileOption = None,
    limit: Limit = None,
    dataset: DatasetOverride = None,
    model: ModelOverride = None,
    tracking_uri: TrackingUri = None,
    store: StoreUri = None,
    experiment: GridExperiment = None,
) -> None:
    """Show every job of a grid: done, running (where, since when), waiting (on what) or failed (why). Give it the
    --limit, --dataset and --model that `bench run` was given: they make another grid, with other jobs."""
    from bench.run.launch import Overrides, open_store, prepare
    from bench.run.status import GROUPS, job_statuses

    tracking_uri = _tracking_at_the_edge(tracking_uri)
    planned = prepare(grid or _default_grid(), Overrides(limit, dataset, model), tracking_uri, store, experiment,
                      dict(os.environ))
    jobs = open_store(planned.stores, create=False)
    states = jobs.states(list(planned.graph.jobs)) if jobs else {}
    statuses = job_statuses(planned.graph, states, jobs.now() if jobs else time.time())
    table = _table(f"grid {planned.name}, experiment '{planned.stores.experiment}'", ["job", "kind", "status"],
                   wrap=("job", "status"))
    counts = dict.fromkeys(GROUPS, 0)
    for key, job in planned.graph.jobs.items():
        counts[statuses[key].group] += 1
        _add_row(table, job.name, job.KIND, statuses[key].text)
    console.print(table)
    console.print(", ".join(f"{n} {name}" for name, n in counts.items()) + f" (of {len(planned.graph.jobs)} jobs)"
                  + ("" if jobs else "; nothing has run yet"), highlight=False, markup=False)


@app.command()
@_one_line_errors
def report(
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: the most recent one)")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for report.md and report.html (default: "
                                                  "report/<experiment>, one per experiment)")] = None,
    tracking_uri: TrackingUri = None,
    baseline: Annotated[str | None, typer.Option(
        help="row every other row is tested against, e.g. 'zero' or 'sft / zero' (default: the plainest)")] = None,
) -> None:
    """Leaderboards with intervals, paired tests, strategy effects and charts, from the finished runs in the store."""
    import polars as pl

    from bench.run.locations import MLFLOW_TABLE, check_reachable, mask
    from bench.run.locations import tracking_uri as resolve_tracking
    from bench.run.workspace import Workspace, default_cache
    from reports.analysis import board_frame, build_boards, reference_deltas, strategy_effects
    from reports.render import Report, references_frame, seeds_frame, templates_frame, write_report
    from reports.seeds import seed_summaries
    from reports.store import StoreError, log_report, read_store
    from reports.templates import template_summaries

    environment = dict(os.environ)
    uri = resolve_tracking(_tracking_at_the_edge(tracking_uri), environment)
    _writable_folder(out or REPORTS, "--out")
    check_reachable(uri, "tracking store", create=False, holds=MLFLOW_TABLE)  # a report reads a store: it must exist
    try:
        data = read_store(uri, experiment, Workspace(default_cache(environment)).report, mask(uri))
    except StoreError as exc:
        raise UserError(str(exc)) from None
    out = out or _report_folder(data.experiment)
    boards = build_boards(data, baseline)
    result = Report(data.experiment, mask(uri), boards, strategy_effects(boards),
                    reference_deltas(boards), data.unfinished, data.never_started, data.reasonings,
                    seed_summaries(boards), template_summaries(boards))
    md, page = write_report(result, out)
    for board in boards:
        frame = board_frame(board).select(
            pl.format("{} / {}", "training", "strategy").str.strip_prefix("none / ").alias("run"),
            pl.col("accuracy [95% CI]"), pl.col("macro-F1 [95% CI]"), pl.col("p acc (McNemar, Holm)").alias("p acc"))
        _print_frame(f"{board.title}; baseline {board.baseline.label if board.baseline else 'none'}", frame, ("run",))
    for title in dict.fromkeys(s.board for s in result.seeds):
        _print_frame(f"{title}: across seeds (mean; interval over examples and seeds)", seeds_frame(
            [s for s in result.seeds if s.board == title]).select(
            pl.col("strategy"), pl.col("seeds"), pl.col("accuracy [95% CI, examples+seeds]").alias("accuracy"),
            pl.col("sd"), pl.col("Δ acc vs baseline [95% CI]").alias("Δ acc"), pl.col("same sign")), ("strategy",))
    for title in dict.fromkeys(s.board for s in result.templates):
        _print_frame(f"{title}: across templates (mean; interval over examples and templates)", templates_frame(
            [s for s in result.templates if s.board == title]).select(
            pl.col("strategy"), pl.col("accuracy [95% CI, examples+templates]").alias("accuracy"), pl.col("sd"),
            pl.col("Δ acc vs baseline [95% CI]").alias("Δ acc"), pl.col("gain flips sign").alias("flips")),
            ("strategy",))
    if result.references:
        _print_frame("reference deltas from the papers (context, not targets)", references_frame(
            result.references).select(
            pl.col("claim"), pl.col("comparison"), pl.col("paper Δ (points)").alias("paper Δ"),
            pl.col("measured Δ (points) [95% CI]").alias("measured Δ [95% CI]"),
            pl.col("p (McNemar, Holm)").alias("p")),
            ("claim", "comparison"))
    if data.unfinished or data.never_started:
        console.print(f"[yellow]{len(data.unfinished)} run(s) not finished, {data.never_started} never started"
                      "[/yellow] (left out); re-run the grid")
    if data.parent_run_id:
        log_report(uri, data.parent_run_id, out)
    logged = f"; logged to parent run {data.parent_run_id}" if data.parent_run_id else ""
    console.print(f"wrote {md} and {page}{logged}", highlight=False, markup=False)


def _report_folder(experiment: str) -> Path:
    """report/<experiment>: each experiment's report apart, so that one never overwrites another's; a character a
    folder name should not hold (a slash, a control character, a leading dot) is written `_`."""
    return REPORTS / re.sub(r"[^\w.-]|^\.", "_", experiment)


def _print_frame(title: str, frame, wrap: tuple[str, ...]) -> None:
    table = _table(title, frame.columns, wrap)
    for row in frame.iter_rows():
        _add_row(table, *(str(v) for v in row))
    console.print(table)


@app.command("list")
@_one_line_errors
def list_registry() -> None:
    """Print every strategy dimension with its values and docs, the datasets and the models."""
    from bench.plan.datasets import DatasetConfig, bundled_names, load_dataset
    from bench.plan.reasoning_corpora import BUNDLED_CORPORA
    from runners.baselines import BASELINES
    from runners.model_registry import MODELS
    from strategies.demos import RETRIEVER_FOR_LANGUAGE
    from strategies.registry import DIMENSIONS
    from strategies.training import PROMPT_DIMENSIONS, TRAIN_DIMENSIONS

    for title, dimensions in (("inference strategy dimensions (grid: strategies)", DIMENSIONS),
                              ("training dimensions (grid: training.strategies; the prompt ones as above)",
                               {n: d for n, d in TRAIN_DIMENSIONS.items() if n not in PROMPT_DIMENSIONS})):
        table = Table(title=title)
        for column in ("dimension", "value", "doc"):
            table.add_column(column)
        for dim in dimensions.values():
            table.add_row(f"[bold]{dim.name}[/bold]", f"(default {dim.default})", dim.doc)
            for value in dim.values:
                table.add_row("", value.name, value.doc)
        console.print(table)
    console.print(_templates_table())
    data = Table(title="bundled datasets (or any JSONL/CSV file, or hf:<id>)")
    for column in ("dataset", "language", "classes", "pool", "evaluation", "similar demos by"):
        data.add_column(column)
    for name in bundled_names():
        d = load_dataset(DatasetConfig(name=name))
        evals = ", ".join(f"{k} {len(v)}" + (" (default)" if k == d.default_eval_split else "")
                          for k, v in d.eval_splits.items())
        data.add_row(name, d.card.language, str(len(d.card.categories)), str(len(d.pool)), evals,
                     RETRIEVER_FOR_LANGUAGE.get(d.card.language, "similar-K"))
    console.print(data)
    models = Table(title="models (or any local folder or Hub id)")
    models.add_column("model")
    models.add_column("role")
    models.add_column("doc")
    for name, entry in MODELS.items():
        models.add_row(name, entry.role, entry.doc)
    console.print(models)
    for name, baseline in BASELINES.items():
        console.print(f"baseline (grid: baselines): {name}: {baseline.doc}")
    console.print(f"reasoning corpora (grid: training.rgen.corpora; or a question/answer/reasoning JSONL/CSV file): "
                  f"{', '.join(BUNDLED_CORPORA)}")


def _templates_table() -> Table:
    """Each prompt template's wording in each prompt language ({task}: the dataset's task line; {what}: what an
    answer is called, e.g. 'name')."""
    from strategies.templates import PROMPT_TEMPLATES, TEMPLATES

    table = Table(title="prompt templates (grid: strategies.template): {task} is the dataset's task line, {what} "
                        "what an answer is called")
    for column in ("template", "language", "task line", "categories", "answer rule"):
        table.add_column(column, overflow="fold")
    for name, template in PROMPT_TEMPLATES.items():
        for language in TEMPLATES:
            wording = template.wording(language)
            table.add_row(name, language, wording.task_line, wording.categories, wording.answer_rule)
    return table


def main() -> None:
    """Entry point. A usage error (an unknown option, a value out of range) is one line and exit 2, like every other
    user error, and so is an output that cannot be written (a full disk, a closed pipe). MLflow's and alembic's INFO
    lines (store creation, migrations), its per-download progress bars and its "View run at" lines are kept out of
    the terminal: MLflow reads these settings from the environment, after this."""
    from typer._click.exceptions import UsageError  # typer 0.29 carries its own click, with no public alias

    from runners.quiet import quiet_mlflow

    quiet_mlflow(os.environ)
    try:
        code = app(standalone_mode=False, prog_name="bench")
        sys.stdout.flush()  # a full disk shows here, not in the interpreter's exit
    except UsageError as exc:
        from bench.run.locations import mask

        where = exc.ctx.command_path if exc.ctx else "bench"
        print(f"error: {mask(exc.format_message())} (see '{where} --help')", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EPIPE, errno.EDQUOT):
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        print(f"error: cannot write {exc.filename or 'the output'} ({exc.strerror}); free some space, or send the "
              "output elsewhere", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
