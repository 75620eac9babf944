"""A grid in a chosen dtype, run in this process: every evaluation's effective prompt tokens per second and the
process's peak GPU memory (benchmarks/gpu.sh runs it on a GPU in bf16).

It writes a copy of the grid with `inference: {dtype: ...}` into --out, runs `bench run --grid <copy> --tracking-uri
sqlite:///<out>/gpu.db --profile` in this process (so this process's peak GPU memory is the grid's), then reads
every finished evaluation run back from MLflow and prints its prompt tokens (prompt_tokens_mean x examples) over its
wall time. Other arguments go to `bench run` (e.g. `--limit 4 --dataset emotion`).

    python benchmarks/gpu_grid.py --out DIR [--grid grids/quick.yaml] [--dtype bfloat16] [bench run options]
"""

from __future__ import annotations

import argparse
import resource
import runpy
import sys
from pathlib import Path

import torch
import yaml

from reports.vocabulary import EVAL_KIND, KIND_TAG


def grid_copy(grid: Path, dtype: str, out: Path) -> Path:
    """A copy of `grid` in `out` whose inference runs in `dtype`."""
    data = yaml.safe_load(grid.read_text(encoding="utf-8"))
    data["inference"] = (data.get("inference") or {}) | {"dtype": dtype}
    copy = out / grid.name
    copy.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return copy


def run_bench(argv: list[str]) -> int:
    """`bench ARGV` in this process, as `python -m bench` runs it; its exit code."""
    sys.argv = ["bench", *argv]
    try:
        runpy.run_module("bench", run_name="__main__")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


def print_peak_memory() -> None:
    """The most GPU memory torch held at once in this process (on a CPU, its peak resident memory instead)."""
    if torch.cuda.is_available():
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB allocated, "
              f"{torch.cuda.max_memory_reserved() / 2**20:,.0f} MiB reserved ({torch.cuda.get_device_name(0)})")
    else:
        print(f"no GPU: peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


def print_token_rates(uri: str, experiment: str) -> None:
    """Each finished evaluation's prompt tokens per second of its wall time, and all of them together (a classical
    baseline reads no prompt: left out). MLflow is imported here, after `bench` has set how quietly it logs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"tags.`{KIND_TAG}` = '{EVAL_KIND}' and "
                              "attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"],
                              max_results=50000) if found else []
    runs = [run for run in runs if run.data.metrics.get("prompt_tokens_mean")]
    tokens = seconds = 0.0
    for run in runs:
        m = run.data.metrics
        examples = round(m["examples_per_s"] * m["wall_time_s"])
        run_tokens = m["prompt_tokens_mean"] * examples
        tokens, seconds = tokens + run_tokens, seconds + m["wall_time_s"]
        print(f"{run.info.run_name:<40} {examples:>6} examples {run_tokens:>10,.0f} prompt tokens "
              f"{m['wall_time_s']:>8.1f} s {run_tokens / m['wall_time_s']:>10,.0f} tokens/s")
    print(f"{len(runs)} evaluation runs: {tokens:,.0f} prompt tokens in {seconds:.1f} s, "
          f"{tokens / seconds if seconds else 0:,.0f} effective prompt tokens/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the grid copy and the MLflow store")
    parser.add_argument("--grid", type=Path, default=Path("grids/quick.yaml"))
    parser.add_argument("--dtype", default="bfloat16")
    args, bench_args = parser.parse_known_args()
    uri, experiment = f"sqlite:///{args.out.resolve() / 'gpu.db'}", f"gpu-{args.dtype}"
    code = run_bench(["run", "--grid", str(grid_copy(args.grid, args.dtype, args.out)), "--tracking-uri", uri,
                      "--experiment", experiment, "--profile", *bench_args])
    print_peak_memory()
    if code:
        raise SystemExit(code)
    print_token_rates(uri, experiment)


if __name__ == "__main__":
    main()
