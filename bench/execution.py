"""The path of one grid: plan (skip what is finished), pull models, evaluate each RunSpec, track it.

One failing RunSpec never stops the grid: its child run is marked FAILED with the reason and the rest go on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bench.datasets import Dataset, DatasetCache
from bench.metrics import classification_report
from bench.runspec import RunSpec
from bench.tracking import RunRecord, Tracker
from bench.training import TrainingContext, ensure_trained
from bench.trainspec import TrainSpec
from runners.baselines import BASELINES
from runners.models import check_trainable, load_model, model_folder
from runners.predict import DecodeSettings, predict
from strategies.example import Example
from strategies.prompts import PromptBuilder


@dataclass
class Plan:
    """Which specs run now and which were finished earlier (with their stored metrics)."""

    todo: list[RunSpec]
    done: dict[str, dict[str, float]]
    specs: list[RunSpec]


@dataclass(frozen=True)
class Outcome:
    spec: RunSpec
    status: str  # finished | failed | skipped
    metrics: dict[str, float]
    error: str = ""


def make_plan(specs: Sequence[RunSpec], tracker: Tracker) -> Plan:
    finished = tracker.finished()
    return Plan([s for s in specs if s.key() not in finished],
                {s.key(): finished[s.key()] for s in specs if s.key() in finished}, list(specs))


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console)


def evaluate_spec(spec: RunSpec, lm, dataset: Dataset, examples: list[Example], batch_size: int,
                  on_progress) -> RunRecord:
    """Predict and score one RunSpec on its evaluation `examples` (no tracking here)."""
    started = time.perf_counter()
    if spec.baseline:
        predictions = BASELINES[spec.baseline].predict(dataset.card, dataset.pool, examples, spec.seed)
        on_progress(len(examples))
    else:
        builder = PromptBuilder(dataset.card, spec.strategy, dataset.pool, spec.seed)
        predictions = predict(lm, builder, examples, DecodeSettings(batch_size, spec.max_new_tokens, spec.seed),
                              on_progress)
    wall = time.perf_counter() - started
    report = classification_report([e.label for e in examples], [p.label for p in predictions],
                                   [c.value for c in dataset.card.categories])
    return RunRecord(examples, predictions, report, wall, dataset.skipped_rows)


def _groups(specs: Sequence[RunSpec]) -> dict[tuple[str, TrainSpec | None], list[RunSpec]]:
    """Specs grouped by (model, training), untrained first: each group shares one loaded model."""
    groups: dict[tuple[str, TrainSpec | None], list[RunSpec]] = {}
    for spec in sorted(specs, key=lambda s: s.train is not None):
        groups.setdefault((spec.model, spec.train), []).append(spec)
    return groups


def run_plan(plan: Plan, tracker: Tracker, datasets: DatasetCache, grid_name: str, grid_path: Path,
             batch_size: int, console: Console) -> list[Outcome]:
    """Train what the specs still to do need (once per TrainSpec), then evaluate each under one parent run; return
    outcomes of all specs (skipped included). A failed training fails its evaluations and nothing else."""
    outcomes = {s.key(): Outcome(s, "skipped", plan.done[s.key()]) for s in plan.specs if s.key() in plan.done}
    if not plan.todo:
        return list(outcomes.values())
    for name in dict.fromkeys(s.model for s in plan.todo if not s.baseline):  # pull/convert first: one clear line
        with console.status(f"preparing model {name} (first use downloads and converts it)"):
            model_folder(name)
            if any(s.train for s in plan.todo if s.model == name):
                check_trainable(name)
    with tracker.parent_run(grid_name, grid_path, len(plan.todo)), _progress(console) as progress:
        overall = progress.add_task("runs", total=len(plan.todo))
        jobs: dict[str, int] = {}

        def on_step(job: str, step: int, total: int) -> None:
            if job not in jobs:
                jobs[job] = progress.add_task(f"  {job}", total=total)
            progress.update(jobs[job], completed=step, total=total)

        context = TrainingContext(datasets, tracker, batch_size, on_step, progress.console.print)
        for (name, train), specs in _groups(plan.todo).items():
            failure, lm = None, None  # drop the previous group's model before training the next one
            try:
                stages = ensure_trained(train, context) if train else []
                lm = None if specs[0].baseline else load_model(name, specs[0].dtype, stages)
            except Exception as exc:  # a failed training fails the evaluations that need it, nothing else
                failure = exc
                console.print(f"[red]FAILED[/red] {train.run_name if train else name}: {type(exc).__name__}: {exc}")
            for job in list(jobs):
                progress.remove_task(jobs.pop(job))
            for spec in specs:
                outcomes[spec.key()] = _evaluate(spec, lm, failure, datasets, tracker, batch_size, progress)
                progress.advance(overall)
    return [outcomes[s.key()] for s in plan.specs]


def _evaluate(spec: RunSpec, lm, failure: Exception | None, datasets: DatasetCache, tracker: Tracker,
              batch_size: int, progress: Progress) -> Outcome:
    """Evaluate and log one spec as a child run; any exception (or the training's `failure`) marks it FAILED."""
    dataset = datasets.get(spec.dataset)
    examples = dataset.evaluation(spec.eval.split, spec.eval.limit, spec.eval.sample_seed)
    task = progress.add_task(f"  {spec.run_name}", total=len(examples))
    try:
        with tracker.child_run(spec):
            if failure is not None:
                raise RuntimeError(f"training failed: {type(failure).__name__}: {failure}")
            record = evaluate_spec(spec, lm, dataset, examples, batch_size, lambda k: progress.advance(task, k))
            metrics = tracker.log_result(spec, record)
        progress.console.print(f"done {spec.run_name}: accuracy {metrics['accuracy']:.3f}, "
                               f"macro_f1 {metrics['macro_f1']:.3f} ({metrics['wall_time_s']:.1f} s)")
        return Outcome(spec, "finished", metrics)
    except Exception as exc:  # one failing spec never stops the grid
        if failure is None:
            progress.console.print(f"[red]FAILED[/red] {spec.run_name}: {type(exc).__name__}: {exc}")
        return Outcome(spec, "failed", {}, f"{type(exc).__name__}: {exc}")
    finally:
        progress.remove_task(task)
