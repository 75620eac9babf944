"""The scorer's lead as a user sees it: effective prompt tokens per second of a whole `bench run` evaluation (every
prompt token, the shared prefix included, divided by the run's `wall_time_s` as MLflow has it) against a plain
batched forward pass over the same prompts (padded batches, no candidates, no cache), alternating the two in one
script, for zero-shot and fixed-5 perplexity decoding on emotion with SmolLM2-135M in fp32.

Each repeat is a fresh `bench run` (its own tracking store, so nothing is skipped) of both runs in one process: the
first run of the process also loads the model, so the ratio is printed on the run's wall time and on its wall time
without its `load` phase (the model load a grid pays once). The run's phases (`time.<phase>_s`) are printed too.

    python benchmarks/run_throughput.py [--examples 64] [--repeats 3] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from mlflow import MlflowClient

from bench.plan.datasets import DatasetConfig, load_dataset
from bench.run.workspace import Workspace, default_cache
from runners.inference import prompt_text
from runners.models import load_model
from runners.phases import phase_seconds
from strategies.prompts import PromptBuilder
from strategies.registry import Strategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scoring_roofline import plain_forward  # noqa: E402 - the same plain forward as the scorer's roofline

STRATEGIES = {"zero+ppl": Strategy(decoding="ppl"), "fixed-5+ppl": Strategy(icl="fixed-5", decoding="ppl")}


def grid(examples: int) -> dict:
    """The grid of both runs: emotion, SmolLM2-135M in fp32, `examples` test examples."""
    return {"name": "run_throughput", "datasets": ["emotion"], "models": ["smollm2-135m"], "baselines": [],
            "eval": {"split": "test", "limit": examples}, "inference": {"dtype": "float32"},
            "strategies": [{"icl": ["zero", "fixed-5"], "decoding": "ppl"}]}


def bench_run(folder: Path, examples: int) -> dict[str, dict[str, float]]:
    """One fresh `bench run` of the grid in `folder`; each run's metrics by strategy label."""
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid(examples)), encoding="utf-8")
    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    subprocess.run([sys.executable, "-m", "bench", "run", "--grid", str(path), "--tracking-uri", tracking],
                   check=True, stdout=subprocess.DEVNULL, env=os.environ | {"PYTHONPATH": os.getcwd()})
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("run_throughput")
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    return {run.info.run_name.rsplit("/", 1)[-1]: run.data.metrics for run in runs  # emotion/model/<label>
            if "wall_time_s" in run.data.metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="rows per pass of the plain forward")
    args = parser.parse_args()
    lm = load_model(Workspace(default_cache(dict(os.environ))).model("smollm2-135m"), "float32")
    dataset = load_dataset(DatasetConfig(name="emotion"))
    examples = dataset.evaluation("test", args.examples, 0)
    prompts = {label: [prompt_text(lm, PromptBuilder(dataset.card, strategy, dataset.pool, 0).messages(e))
                       for e in examples] for label, strategy in STRATEGIES.items()}
    tokens = {label: sum(len(x) for x in lm.tokenizer(p, add_special_tokens=False).input_ids)
              for label, p in prompts.items()}
    plain: dict[str, list[float]] = {label: [] for label in STRATEGIES}
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in STRATEGIES}
    for _ in range(args.repeats):
        for label in STRATEGIES:
            started = time.perf_counter()
            plain_forward(lm, prompts[label], args.batch_size)
            plain[label].append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as folder:
            for label, metrics in bench_run(Path(folder), args.examples).items():
                runs[label].append(metrics)
    for label in STRATEGIES:
        base = tokens[label] / min(plain[label])
        best = min(runs[label], key=lambda m: m["wall_time_s"])
        wall, load = best["wall_time_s"], best.get("time.load_s", 0.0)
        phases = ", ".join(f"{name} {seconds:.2f}" for name, seconds in phase_seconds(best).items())
        print(f"{label:<12} {args.examples} examples, {tokens[label] / args.examples:.0f} prompt tokens each; plain "
              f"forward {min(plain[label]):.2f} s ({base:.0f} tokens/s); bench run {wall:.2f} s: "
              f"{tokens[label] / wall / base:.2f}x, without its model load {tokens[label] / (wall - load) / base:.2f}x "
              f"(phases, s: {phases})")


if __name__ == "__main__":
    main()
