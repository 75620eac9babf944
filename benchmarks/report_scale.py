"""How long `bench report` takes on a large store: builds a synthetic experiment of N evaluation runs (random
predictions for M examples, one dataset and model, N strategy combinations), then times reading it (cold, then
with the predictions cache warm), the analysis and the rendering, each in wall and CPU seconds (CPU: all of the
process's threads; the figure to compare on a shared machine), and then the macro-F1 randomization tests of the
leaderboards alone (they are part of "leaderboards").

    python benchmarks/report_scale.py [--runs 1000] [--examples 1000] [--dir /tmp/report_scale]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import numpy as np


def build_store(uri: str, runs: int, examples: int) -> None:
    import mlflow

    from reports.vocabulary import (
        BASELINE,
        DATASET,
        EVAL_KIND,
        EVAL_LIMIT,
        EVAL_SAMPLE_SEED,
        EVAL_SPLIT,
        GRID_TAG,
        HASH_TAG,
        INFER_PREFIX,
        KIND_TAG,
        MODEL,
        NONE,
        PREDICTIONS_ARTIFACT,
        SEED,
        TRAIN_METHOD,
    )
    from strategies.registry import Strategy

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("scale")
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, examples)
    ids = [f"test-{i:05d}" for i in range(examples)]
    points = itertools.product(["zero", "random-1", "random-3", "fixed-3", "similar-3", "similar-5"],
                               ["off", "on"], ["off", "on"], ["names", "numeric"], ["generate", "ppl"],
                               [str(s) for s in range(100)])
    with mlflow.start_run(run_name="grid", tags={GRID_TAG: "scale"}):
        for n, (icl, definitions, uncertain, labels, decoding, seed) in zip(range(runs), points):
            strategy = Strategy(icl=icl, definitions=definitions, uncertain=uncertain, labels=labels,
                                decoding=decoding, ppl_norm="mean" if decoding == "ppl" else "none")
            skill = rng.uniform(0.2, 0.8)
            pred = np.where(rng.random(examples) < skill, gold, rng.integers(0, 6, examples))
            with mlflow.start_run(run_name=f"r{n}", nested=True, tags={HASH_TAG: f"h{n}", KIND_TAG: EVAL_KIND}):
                mlflow.log_params({DATASET: "synthetic", MODEL: "m", SEED: seed, EVAL_SPLIT: "test",
                                   EVAL_LIMIT: NONE, EVAL_SAMPLE_SEED: "0", TRAIN_METHOD: NONE, BASELINE: NONE,
                                   **{INFER_PREFIX + k: v for k, v in strategy.as_dict().items()}})
                mlflow.log_metrics({"accuracy": float((pred == gold).mean()), "examples_per_s": float(skill * 10)})
                table = {"id": ids, "gold": gold.astype(str).tolist(), "prediction": pred.astype(str).tolist()}
                mlflow.log_table(table, artifact_file=PREDICTIONS_ARTIFACT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/report_scale"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    os.environ["GENCLSBENCH_CACHE"] = str(args.dir / "cache")
    uri = f"sqlite:///{args.dir / 'mlflow.db'}"
    if not (args.dir / "mlflow.db").exists():
        started = time.perf_counter()
        build_store(uri, args.runs, args.examples)
        print(f"built a store of {args.runs} runs x {args.examples} examples in {time.perf_counter() - started:.0f} s")

    from reports.analysis import build_boards, reference_deltas, strategy_effects
    from reports.render import Report, write_report
    from reports.seeds import seed_summaries
    from reports.store import read_store

    for label in ("cold predictions cache", "warm predictions cache"):
        clock = _Clock()
        data = read_store(uri, "scale", args.dir / "cache" / "report")
        clock.lap("read")
        boards = build_boards(data)
        clock.lap("leaderboards")
        effects = strategy_effects(boards)
        clock.lap("effects")
        seeds = seed_summaries(boards)
        clock.lap("seeds")
        write_report(Report("scale", uri, boards, effects, reference_deltas(boards), data.unfinished, seeds=seeds),
                     args.dir / "out")
        clock.lap("render")
        print(f"{label}, {len(data.runs)} runs: {clock}")
    clock = _Clock()
    tested = _randomization_tests(boards)
    clock.lap("macro-F1 randomization tests")
    print(f"of the leaderboards, for {tested} rows against their baseline: {clock}")


class _Clock:
    """Wall and CPU seconds of consecutive phases."""

    def __init__(self) -> None:
        self.phases: list[tuple[str, float, float]] = []
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.phases.append((name, wall - self.wall, cpu - self.cpu))
        self.wall, self.cpu = wall, cpu

    def __str__(self) -> str:
        phases = [f"{name} {wall:.1f} s ({cpu:.1f} CPU s)" for name, wall, cpu in self.phases]
        if len(self.phases) > 1:
            phases.append(f"total {sum(p[1] for p in self.phases):.1f} s ({sum(p[2] for p in self.phases):.1f} CPU s)")
        return ", ".join(phases)


def _randomization_tests(boards) -> int:
    """The leaderboards' macro-F1 paired randomization tests again, alone: every row against its board's baseline."""
    from reports.stats import permutation_ps

    tested = 0
    for board in boards:
        others = [r.predicted for r in board.rows if r is not board.baseline]
        if board.baseline is not None:
            permutation_ps(board.gold, others, board.baseline.predicted, board.n_classes)
            tested += len(others)
    return tested

if __name__ == "__main__":
    main()
