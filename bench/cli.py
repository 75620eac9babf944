"""`bench`: the command line. Every user error ends as one line on stderr with exit code 2."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from bench.errors import UserError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Benchmark training and inference strategies of LLM text classifiers.")
console = Console(width=None if sys.stdout.isatty() else 120)  # logs get a readable table
DEFAULT_GRID = Path("grids/quick.yaml")


def _default_grid() -> Path:
    """grids/quick.yaml in the working directory, else the one shipped beside the package (editable install)."""
    return DEFAULT_GRID if DEFAULT_GRID.is_file() else Path(__file__).resolve().parent.parent / DEFAULT_GRID


def _table(title: str, columns: list[str], wrap: tuple[str, ...] = ()) -> Table:
    """A compact table that fits an 80-column terminal: no vertical rules, numbers never wrap, the `wrap` columns
    (long labels) wrap instead of being cut."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    for column in columns:
        table.add_column(column, no_wrap=column not in wrap, overflow="fold" if column in wrap else "ellipsis",
                         justify="left" if column in wrap else "right")
    return table


def _results_table(rows) -> Table:
    """One row per run ((spec, status, metrics)); dataset and model go to the title when the grid has only one."""
    scope = [("dataset", lambda r: r[0].dataset.name), ("model", lambda r: r[0].model),
             ("training", lambda r: r[0].train.strategy.tag() if r[0].train else "none")]
    shared = {name: {get(r) for r in rows} for name, get in scope}
    varying = [(name, get) for name, get in scope if len(shared[name]) > 1]
    title = " / ".join(next(iter(v)) for v in shared.values() if len(v) == 1 and v != {"none"})
    labels = [name for name, _ in varying] + ["strategy"]
    table = _table(f"results: {title}" if title else "results",
                   labels + ["acc", "F1", "invalid", "uncert.", "ex/s", "status"], wrap=tuple(labels))
    for row in rows:
        spec, status, m = row
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in ("accuracy", "macro_f1", "invalid_rate", "uncertain_rate")]
        speed = f"{m['examples_per_s']:.1f}" if "examples_per_s" in m else "-"
        table.add_row(*(get(row) for _, get in varying), spec.strategy_label, *cells, speed, status)
    return table


def _one_line_errors(command: Callable[..., None]) -> Callable[..., None]:
    """A UserError inside a command becomes one line on stderr and exit code 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs) -> None:
        try:
            command(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            print("interrupted; finished runs are kept, re-run to resume", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@_one_line_errors
def run(
    grid: Annotated[Path | None, typer.Option(help="grid file (default: grids/quick.yaml)")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="cap the evaluation examples per run")] = None,
    dataset: Annotated[str | None, typer.Option(help="replace the grid's datasets: bundled name, file, hf:<id>")] = None,
    model: Annotated[str | None, typer.Option(help="replace the grid's models: alias, folder or Hub id")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")] = None,
    store: Annotated[str | None, typer.Option(help="job store shared by workers (default: beside the MLflow store)")] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: the grid's name)")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="override the grid's inference batch size")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the job graph and stop")] = False,
) -> None:
    """Evaluate every strategy combination of a grid and log each one to MLflow."""
    from bench.datasets import DatasetCache
    from bench.graph import build_graph, describe
    from bench.grid import expand, read_grid
    from bench.locations import job_store_uri, mask, sqlite_path
    from bench.locations import tracking_uri as resolve_tracking
    from bench.store import DONE, SqlStore
    from runners.model_registry import default_dtype

    environment = dict(os.environ)
    path = grid or _default_grid()
    spec = read_grid(path)
    if limit is not None:
        spec.eval.limit = limit
    if dataset is not None:
        spec.datasets, spec.eval.split = [dataset], None  # split names are per dataset: use its default
    if model is not None:
        spec.models = [model]
    datasets = DatasetCache()
    specs = expand(spec, path, datasets, default_dtype())
    graph = build_graph(specs)
    tracking = resolve_tracking(tracking_uri, environment)
    store_uri = job_store_uri(store, tracking)
    name = experiment or spec.name
    exists = sqlite_path(store_uri) is None or sqlite_path(store_uri).is_file()
    jobs = SqlStore(store_uri, name) if exists or not dry_run else None
    states = jobs.states(list(graph.jobs)) if jobs else {}
    evaluations = graph.evaluations
    done = sum(states.get(s.key) is not None and states[s.key].status == DONE for s in evaluations)
    others = len(graph.jobs) - len(evaluations)
    console.print(f"grid [bold]{spec.name}[/bold] ({path}): {len(evaluations)} runs, {done} already finished, "
                  f"{len(evaluations) - done} to run" + (f"; {others} other jobs (training, reasonings, relabelling)"
                                                         if others else "")
                  + f"; tracking {mask(tracking)}, jobs {mask(store_uri)}, experiment '{name}'", highlight=False)
    for note in graph.notes:
        console.print(f"note: {note}", highlight=False)
    if dry_run:
        for line in describe(graph, states):
            console.print(f"  {line}", highlight=False)
        return
    outcomes = _work(graph, jobs, tracking, name, spec.name, path, datasets, environment,
                     batch_size or spec.inference.batch_size)
    console.print(_results_table(outcomes.rows))
    failed = sum(status == "failed" for _, status, _ in outcomes.rows)
    if failed:
        console.print(f"[red]{failed} run(s) failed[/red]; each MLflow run keeps the reason (tag genclsbench.error) "
                      "and its traceback (error.txt); re-run to retry them")
        raise typer.Exit(1)


@dataclass
class _Results:
    rows: list  # (spec, status, metrics) per evaluation, in grid order


def _work(graph, jobs, tracking: str, experiment: str, grid_name: str, path: Path, datasets, environment,
          batch_size: int) -> _Results:
    """Run the graph as one worker of this process, recording into `experiment`; the rows of the results table."""
    from bench.executor import Executor
    from bench.jobs import Performer
    from bench.progress import LineReporter, LiveReporter
    from bench.recorder import MlflowRecorder
    from bench.specs import TrainSpec
    from bench.workspace import Workspace, default_cache
    from runners.model_registry import ModelError, check_trainable
    from runners.quiet import quiet_libraries

    quiet_libraries()
    workspace = Workspace(default_cache(environment))
    trained = {j.model for j in graph.jobs.values() if isinstance(j, TrainSpec)}
    for model in dict.fromkeys(s.model for s in graph.evaluations if not s.baseline):
        with console.status(f"preparing model {model} (first use downloads and converts it)"):
            try:
                folder = workspace.model(model)
                if model in trained:
                    check_trainable(model, folder)
            except ModelError as exc:
                raise UserError(str(exc)) from None
    recorder = MlflowRecorder(tracking, experiment)
    parent = recorder.open_parent(jobs, grid_name, path, len(graph.evaluations))
    live = sys.stdout.isatty()
    reporter = LiveReporter(console) if live else LineReporter(console)
    executor = Executor(graph, jobs, recorder, workspace, Performer(workspace, datasets, batch_size), reporter,
                        parent_id=parent, examples_of=lambda s: len(datasets.get(s.dataset.config).evaluation(
                            s.eval.split, s.eval.limit, s.eval.sample_seed)))
    try:
        with reporter if live else contextlib.nullcontext():
            outcomes = executor.run()
    except BaseException:
        if not any(s.status == "running" for s in jobs.states(list(graph.jobs)).values()):
            recorder.close_parent(parent, "KILLED")
        raise
    recorder.close_parent(parent, "FAILED" if any(o.status == "failed" for o in outcomes) else "FINISHED")
    metrics = recorder.metrics([o.run_id for o in outcomes if o.run_id and o.status in ("done", "earlier")])
    return _Results([(o.spec, o.status, metrics.get(o.run_id, {}) if o.run_id else {}) for o in outcomes])


@app.command()
@_one_line_errors
def report(
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: the most recent one)")] = None,
    out: Annotated[Path, typer.Option(help="folder for report.md and report.html")] = Path("report"),
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")] = None,
    baseline: Annotated[str | None, typer.Option(help="row every other row is tested against, e.g. 'zero' or 'sft / zero' (default: the plainest)")] = None,
) -> None:
    """Leaderboards with intervals, paired tests, strategy effects and charts, from the finished runs in the store."""
    import polars as pl

    from bench.locations import mask
    from bench.locations import tracking_uri as resolve_tracking
    from bench.workspace import Workspace, default_cache
    from reports.analysis import board_frame, build_boards, reference_deltas, strategy_effects
    from reports.render import Report, references_frame, write_report
    from reports.store import log_report, read_store

    environment = dict(os.environ)
    uri = resolve_tracking(tracking_uri, environment)
    data = read_store(uri, experiment, Workspace(default_cache(environment)).report)
    boards = build_boards(data, baseline)
    result = Report(data.experiment, mask(uri), boards, strategy_effects(boards),
                    reference_deltas(boards), data.unfinished, data.never_started, data.reasonings)
    md, page = write_report(result, out)
    for board in boards:
        frame = board_frame(board).select(
            pl.format("{} / {}", "training", "strategy").str.strip_prefix("none / ").alias("run"),
            pl.col("accuracy [95% CI]"), pl.col("macro-F1 [95% CI]"), pl.col("p acc (McNemar, Holm)").alias("p acc"))
        _print_frame(f"{board.title}; baseline {board.baseline.label if board.baseline else 'none'}", frame, ("run",))
    if result.references:
        _print_frame("reference deltas from the papers (context, not targets)", references_frame(
            result.references).select(pl.col("claim"), pl.col("comparison"), pl.col("paper Δ (points)").alias("paper Δ"),
                                      pl.col("measured Δ (points) [95% CI]").alias("measured Δ [95% CI]"),
                                      pl.col("p (McNemar, Holm)").alias("p")), ("claim", "comparison"))
    if data.unfinished or data.never_started:
        console.print(f"[yellow]{len(data.unfinished)} run(s) not finished, {data.never_started} never started"
                      "[/yellow] (left out); re-run the grid")
    if data.parent_run_id:
        log_report(uri, data.parent_run_id, out)
    console.print(f"wrote {md} and {page}" + (f"; logged to parent run {data.parent_run_id}" if data.parent_run_id else ""))


def _print_frame(title: str, frame, wrap: tuple[str, ...]) -> None:
    table = _table(title, frame.columns, wrap)
    for row in frame.iter_rows():
        table.add_row(*(str(v) for v in row))
    console.print(table)


@app.command("list")
@_one_line_errors
def list_registry() -> None:
    """Print every strategy dimension with its values and docs, the datasets and the models."""
    from bench.datasets import DatasetConfig, bundled_names, load_dataset
    from bench.reasoning_corpora import BUNDLED_CORPORA
    from runners.baselines import BASELINES
    from runners.model_registry import MODELS
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
    data = Table(title="bundled datasets (or any JSONL/CSV file, or hf:<id>)")
    for column in ("dataset", "language", "classes", "pool", "evaluation"):
        data.add_column(column)
    for name in bundled_names():
        d = load_dataset(DatasetConfig(name=name))
        evals = ", ".join(f"{k} {len(v)}" + (" (default)" if k == d.default_eval_split else "")
                          for k, v in d.eval_splits.items())
        data.add_row(name, d.card.language, str(len(d.card.categories)), str(len(d.pool)), evals)
    console.print(data)
    models = Table(title="models (or any local folder or Hub id)")
    models.add_column("model")
    models.add_column("doc")
    for name, entry in MODELS.items():
        models.add_row(name, entry.doc)
    console.print(models)
    for name, baseline in BASELINES.items():
        console.print(f"baseline (grid: baselines): {name}: {baseline.doc}")
    console.print(f"reasoning corpora (grid: training.rgen.corpora; or a question/answer/reasoning JSONL/CSV file): "
                  f"{', '.join(BUNDLED_CORPORA)}")


def main() -> None:
    """Entry point (typer's standalone mode: usage errors print one box and exit 2). MLflow's and alembic's INFO
    lines (store creation, migrations) and its per-download progress bars are kept out of the terminal."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    app()
