"""`bench`: the command line. Every user error ends as one line on stderr with exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bench.errors import UserError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help="Benchmark training and inference strategies of LLM text classifiers.")
console = Console(width=None if sys.stdout.isatty() else 120)  # logs get a readable table
DEFAULT_GRID = Path("grids/quick.yaml")


def _default_grid() -> Path:
    """grids/quick.yaml in the working directory, else the one shipped beside the package (editable install)."""
    return DEFAULT_GRID if DEFAULT_GRID.is_file() else Path(__file__).resolve().parent.parent / DEFAULT_GRID


def _results_table(outcomes) -> Table:
    """One row per run; dataset and model go to the title when the grid has only one of each."""
    scope = [("dataset", lambda o: o.spec.dataset_name), ("model", lambda o: o.spec.model),
             ("training", lambda o: o.spec.train.strategy.tag() if o.spec.train else "none")]
    shared = {name: {get(o) for o in outcomes} for name, get in scope}
    varying = [(name, get) for name, get in scope if len(shared[name]) > 1]
    title = " / ".join(next(iter(v)) for v in shared.values() if len(v) == 1 and v != {"none"})
    table = Table(title=f"results: {title}" if title else "results")
    for name, _ in varying:
        table.add_column(name)
    table.add_column("strategy", no_wrap=True)
    for column in ("accuracy", "macro_f1", "invalid", "uncertain", "ex/s"):
        table.add_column(column, justify="right")
    table.add_column("status")
    for o in outcomes:
        m = o.metrics
        cells = [f"{m[k]:.3f}" if k in m else "-" for k in ("accuracy", "macro_f1", "invalid_rate", "uncertain_rate")]
        speed = f"{m['examples_per_s']:.1f}" if "examples_per_s" in m else "-"
        status = o.status if o.status != "skipped" else "earlier"
        table.add_row(*(get(o) for _, get in varying), o.spec.strategy_label, *cells, speed, status)
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
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: the grid's name)")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="override the grid's inference batch size")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and stop")] = False,
) -> None:
    """Evaluate every strategy combination of a grid and log each one to MLflow."""
    from bench.datasets import DatasetCache
    from bench.execution import make_plan, run_plan
    from bench.grid import expand, read_grid
    from bench.tracking import Tracker
    from bench.training import training_jobs
    from runners.models import default_dtype

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
    tracker = Tracker(tracking_uri, experiment or spec.name)
    plan = make_plan(specs, tracker)
    jobs, cached = training_jobs(plan.todo)
    training = f"; {len(jobs)} training jobs ({cached} cached)" if jobs else ""
    console.print(f"grid [bold]{spec.name}[/bold] ({path}): {len(specs)} runs, {len(plan.done)} already finished "
                  f"(skipped), {len(plan.todo)} to run{training}; tracking {tracker.uri}, experiment "
                  f"'{tracker.experiment}'")
    if dry_run:
        for s in plan.specs:
            console.print(f"  {'done' if s.key() in plan.done else 'todo'}  {s.run_name}  [dim]{s.key()}[/dim]")
        return
    outcomes = run_plan(plan, tracker, datasets, spec.name, path, batch_size or spec.inference.batch_size, console)
    console.print(_results_table(outcomes))
    failed = sum(o.status == "failed" for o in outcomes)
    if failed:
        console.print(f"[red]{failed} run(s) failed[/red]; their MLflow runs carry the reason in tag genclsbench.error")
        raise typer.Exit(1)


@app.command()
@_one_line_errors
def report(
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment (default: the most recent one)")] = None,
    out: Annotated[Path, typer.Option(help="folder for report.md and report.html")] = Path("report"),
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")] = None,
    baseline: Annotated[str | None, typer.Option(help="row every other row is tested against, e.g. 'zero' or 'sft / zero' (default: the plainest)")] = None,
) -> None:
    """Leaderboards with intervals, paired tests, strategy effects and charts, from the finished runs in the store."""
    from bench.tracking import tracking_uri as resolve_uri
    from reports.analysis import board_frame, build_boards, reference_deltas, strategy_effects
    from reports.render import Report, references_frame, write_report
    from reports.store import log_report, read_store

    data = read_store(tracking_uri, experiment)
    boards = build_boards(data, baseline)
    result = Report(data.experiment, resolve_uri(tracking_uri), boards, strategy_effects(boards),
                    reference_deltas(boards), data.unfinished, data.never_started, data.reasonings)
    md, page = write_report(result, out)
    shown = ("training", "strategy", "accuracy [95% CI]", "macro-F1 [95% CI]", "p acc (McNemar, Holm)")
    for board in boards:
        _print_frame(f"{board.title}; baseline {board.baseline.label if board.baseline else 'none'}",
                     board_frame(board).select(shown))
    if result.references:
        _print_frame("reference deltas from the papers (context, not targets)", references_frame(
            result.references).select("claim", "comparison", "paper Δ (points)", "measured Δ (points) [95% CI]",
                                      "p (McNemar, Holm)"))
    if data.unfinished or data.never_started:
        console.print(f"[yellow]{len(data.unfinished)} run(s) not finished, {data.never_started} never started"
                      "[/yellow] (left out); re-run the grid")
    if data.parent_run_id:
        log_report(data.parent_run_id, out)
    console.print(f"wrote {md} and {page}" + (f"; logged to parent run {data.parent_run_id}" if data.parent_run_id else ""))


def _print_frame(title: str, frame) -> None:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(column, no_wrap=column not in ("claim", "comparison"))
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
    from runners.models import MODELS
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
    """Entry point (typer's standalone mode: usage errors print one box and exit 2)."""
    app()
