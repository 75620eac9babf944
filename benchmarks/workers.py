"""One tiny-random grid run with 1 and with 2 workers on this machine (`bench run --workers N`, each in a fresh
store), alternating, in one run: wall times, their ratio, and how many jobs finished more than once.

    python benchmarks/workers.py [--repeats 2] [--limit 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

GRID = """name: workers_bench
datasets: [emotion]
models: [tiny-random]
eval: {{limit: {limit}}}
inference: {{batch_size: 8, max_new_tokens: 8, reasoning_max_new_tokens: 24}}
training:
  n_train: 64
  lora: {{r: 4, alpha: 8}}
  sft: {{batch_size: 8, epochs: 2}}
  strategies: {{method: sft, icl: [zero, random-1]}}
strategies:
  - {{icl: [zero, random-2, similar-2], decoding: [generate, ppl]}}
  - {{reasoning: on}}
"""


def run(workers: int, limit: int, model: Path) -> tuple[float, int, int]:
    """(wall seconds, jobs finished, jobs finished more than once) of the grid with `workers` workers, from a fresh
    store and a fresh cache (so the training runs again) sharing the built `model`."""
    from mlflow.tracking import MlflowClient

    from reports.vocabulary import HASH_TAG

    with tempfile.TemporaryDirectory() as work:
        cache = Path(work) / "cache"
        (cache / "models").mkdir(parents=True)
        (cache / "models" / "tiny-random").symlink_to(model)
        grid = Path(work) / "grid.yaml"
        grid.write_text(GRID.format(limit=limit), encoding="utf-8")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench", "run", "--grid", str(grid), "--workers", str(workers)],
                       cwd=work, check=True, capture_output=True, env=os.environ | {"GENCLSBENCH_CACHE": str(cache)})
        wall = time.perf_counter() - started
        client = MlflowClient(f"sqlite:///{Path(work) / 'mlflow.db'}")
        runs = client.search_runs([client.get_experiment_by_name("workers_bench").experiment_id], max_results=5000)
        finished = Counter(r.data.tags[HASH_TAG] for r in runs if HASH_TAG in r.data.tags
                           and r.info.status == "FINISHED")
        return wall, len(finished), sum(n > 1 for n in finished.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, default=200)
    args = parser.parse_args()
    from runners.model_registry import model_folder

    with tempfile.TemporaryDirectory() as cache:
        model = model_folder("tiny-random", Path(cache))
        times: dict[int, list[float]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
                wall, jobs, duplicates = run(workers, args.limit, model)
                times[workers].append(wall)
                print(f"{workers} worker(s): {wall:.1f} s wall, {jobs} jobs finished, {duplicates} finished twice",
                      flush=True)
    one, two = (min(times[n]) for n in (1, 2))
    print(f"best of {args.repeats}: 1 worker {one:.1f} s, 2 workers {two:.1f} s, speed-up {one / two:.2f}x "
          f"({os.cpu_count()} CPU cores)")


if __name__ == "__main__":
    main()
