"""How much of a grid's compute does `bench search` need to find as good a strategy combination?

1. The grid: `grids/quick.yaml`'s inference strategies on 200 emotion test examples (`bench run --limit 200`), once;
   its best accuracy and its evaluation compute (example evaluations, and the evaluation runs' wall seconds; the
   TF-IDF baseline is neither a candidate nor counted).
2. For each search seed: `bench search` on `grids/search_quick.yaml` (TPE + Wilcoxon pruning on examples, the same
   200 examples) with its own fresh job store, MLflow store and Optuna study, so nothing is taken from the grid or
   from another seed, stopped once it holds a completed trial within `--within` accuracy of the grid's best, or when
   it has spent `--cap` times the grid's example evaluations.
3. Per seed and as a median: the share of the grid's example evaluations and wall time spent until that first
   trial (a trial's cost: the examples it evaluated before it ended or was pruned, and its wall seconds; a cached
   trial costs nothing).

    python benchmarks/search_efficiency.py [--seeds 0 1 2 3 4] [--within 0.01] [--cap 1.0] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
GRID, SPACE, LIMIT = ROOT / "grids" / "quick.yaml", ROOT / "grids" / "search_quick.yaml", 200


def grid_figures(work: Path) -> tuple[float, int, float, int]:
    """Run the grid (once: a second call finds it finished) and return its best accuracy, example evaluations,
    evaluation wall seconds and number of evaluation runs."""
    from mlflow.tracking import MlflowClient

    from reports.vocabulary import EVAL_KIND, KIND_TAG

    uri = f"sqlite:///{work / 'grid.db'}"
    subprocess.run([sys.executable, "-m", "bench", "run", "--grid", str(GRID), "--limit", str(LIMIT),
                    "--tracking-uri", uri, "--experiment", "grid"], check=True, cwd=work)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("grid")
    runs = [r for r in client.search_runs([experiment.experiment_id], f"tags.`{KIND_TAG}` = '{EVAL_KIND}'")
            if r.info.status == "FINISHED" and "baseline:" not in r.info.run_name]
    best = max(r.data.metrics["accuracy"] for r in runs)
    seconds = sum(r.data.metrics["wall_time_s"] for r in runs)
    return best, LIMIT * len(runs), seconds, len(runs)


def search_until(work: Path, seed: int, target: float, cap_examples: float, console: Console) -> dict:
    """One seed's search, in fresh stores, until a trial reaches `target` or the spend reaches `cap_examples`."""
    from optuna.trial import TrialState

    from bench.plan.space import read_space
    from bench.run.launch import Stores
    from bench.run.store import DEFAULT_LEASE_S
    from bench.search import open_search

    folder = work / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    space = yaml.safe_load(SPACE.read_text(encoding="utf-8"))
    space["search"]["seed"] = seed
    space_file = folder / "space.yaml"
    space_file.write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
    chosen, environment = read_space(space_file), dict(os.environ)
    stores = Stores.named(f"sqlite:///{folder / 'mlflow.db'}", None, chosen.name, environment)
    searcher = open_search(chosen, f"seed-{seed}", f"sqlite:///{folder / 'optuna.db'}", stores, DEFAULT_LEASE_S,
                           console, environment)
    spent = {"examples": 0, "seconds": 0.0, "trials": 0, "reached": None}

    def account(study, trial) -> None:
        spent["examples"] += int(trial.user_attrs.get("examples", 0))
        spent["seconds"] += 0.0 if trial.user_attrs.get("cached") else float(trial.user_attrs.get("seconds", 0.0))
        spent["trials"] += 1
        if trial.state == TrialState.COMPLETE and trial.values[0] >= target - 1e-9:
            spent["reached"] = (trial.number, trial.values[0], trial.user_attrs.get("spec"))
        if spent["reached"] or spent["examples"] >= cap_examples:
            study.stop()

    searcher.optimize(10_000, callbacks=[account])
    searcher.close("FINISHED")
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--within", type=float, default=0.01, help="accuracy below the grid's best that counts")
    parser.add_argument("--cap", type=float, default=1.0, help="stop a seed after this share of the grid's examples")
    parser.add_argument("--work", type=Path, default=None, help="folder for the stores (default: a fresh temporary)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="search-efficiency-"))
    work.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    best, examples, seconds, runs = grid_figures(work)
    print(f"grid: {runs} evaluation runs x {LIMIT} examples = {examples} example evaluations, {seconds:.0f} s of "
          f"evaluation; best accuracy {best:.3f}; target {best - args.within:.3f}", flush=True)
    shares: list[tuple[float, float]] = []
    for seed in args.seeds:
        spent = search_until(work, seed, best - args.within, args.cap * examples, console)
        share = (spent["examples"] / examples, spent["seconds"] / seconds)
        found = spent["reached"]
        if found:
            shares.append(share)
            print(f"seed {seed}: trial {found[0]} ({found[2]}) reached {found[1]:.3f} after {spent['trials']} "
                  f"trials: {share[0]:.1%} of the grid's example evaluations, {share[1]:.1%} of its wall time",
                  flush=True)
        else:
            shares.append((float("inf"), float("inf")))
            print(f"seed {seed}: not reached within {spent['trials']} trials ({share[0]:.1%} of the grid's example "
                  f"evaluations, {share[1]:.1%} of its wall time)", flush=True)
    print(f"median over {len(shares)} seeds: {statistics.median(s[0] for s in shares):.1%} of the grid's example "
          f"evaluations, {statistics.median(s[1] for s in shares):.1%} of its wall time (goal: at most 30%)")


if __name__ == "__main__":
    main()
