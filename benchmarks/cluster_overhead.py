"""What Ray costs against local worker processes, and how long a killed node's job takes to finish elsewhere.

1. Overhead: one tiny-random grid (with a training job and the evaluations that need it) run by `bench run
   --workers N --on local` and by `bench run --workers N --on ray` against a Ray cluster already up on this machine
   (each run in fresh stores and a fresh cache sharing the built model), for N = 1 and 2: wall times, the ratio
   Ray / local, and the difference per job in milliseconds.
2. Recovery: the same grid with longer evaluations on a cluster of three nodes (three workers, `--lease`
   seconds); once the worker on the third node has run a job for a second, that node dies (its raylet and its
   processes, SIGKILL). Printed: how long until the job was claimed again, and until it finished on another node.

    python benchmarks/cluster_overhead.py [--limit 60] [--lease 10]

Ray's nodes bind to 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is imported); every node is on this
machine, each with a cache folder of its own.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # this script's own process: before Ray is imported

GRID = """name: cluster_bench
datasets: [emotion]
models: [tiny-random]
eval: {{limit: {limit}}}
inference: {{batch_size: 8, max_new_tokens: 4}}
training:
  n_train: 32
  lora: {{r: 2, alpha: 4}}
  sft: {{batch_size: 8}}
  strategies: {{method: sft}}
strategies:
  - {{icl: [zero, random-1, similar-1], decoding: [generate, ppl]}}
"""
JOBS = 1 + 2 * 6 + 1


def node_cache(root: Path, model: Path) -> Path:
    """A cache folder with the built tiny model linked in."""
    (root / "models").mkdir(parents=True)
    (root / "models" / "tiny-random").symlink_to(model)
    return root


def run_grid(work: Path, model: Path, limit: int, *args: str) -> float:
    """Wall seconds of `bench run` on the grid in fresh stores under `work`; checks every job finished once."""
    from mlflow.tracking import MlflowClient

    from reports.vocabulary import HASH_TAG

    grid = work / "grid.yaml"
    grid.write_text(GRID.format(limit=limit), encoding="utf-8")
    env = os.environ | {"GENCLSBENCH_CACHE": str(node_cache(work / "cache", model))}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench", "run", "--grid", str(grid), *args], cwd=work,
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("cluster_bench").experiment_id], max_results=1000)
    finished = Counter(r.data.tags[HASH_TAG] for r in runs if HASH_TAG in r.data.tags and r.info.status == "FINISHED")
    assert len(finished) == JOBS and set(finished.values()) == {1}, finished
    return wall


class Nodes:
    """A Ray cluster on this machine, every node with a cache of its own (its workers inherit its environment)."""

    def __init__(self, root: Path, model: Path) -> None:
        from ray.cluster_utils import Cluster

        self.root, self.model, self.cluster = root, model, Cluster()
        self.add("head", include_dashboard=False,
                 _system_config={"health_check_period_ms": 1000, "health_check_failure_threshold": 5})

    def add(self, name: str, **args):
        previous = os.environ.get("GENCLSBENCH_CACHE")
        os.environ["GENCLSBENCH_CACHE"] = str(node_cache(self.root / name, self.model))
        try:
            return self.cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1", **args)
        finally:
            os.environ.pop("GENCLSBENCH_CACHE")
            if previous is not None:
                os.environ["GENCLSBENCH_CACHE"] = previous


def overhead(model: Path, limit: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        nodes = Nodes(Path(folder) / "nodes", model)
        try:
            times: dict[tuple[str, int], list[float]] = {}
            for repeat in range(repeats):
                for workers in (1, 2):
                    for on in ("local", "ray") if repeat % 2 == 0 else ("ray", "local"):
                        with tempfile.TemporaryDirectory() as work:
                            extra = ["--ray-address", nodes.cluster.address] if on == "ray" else []
                            wall = run_grid(Path(work), model, limit, "--workers", str(workers), "--on", on, *extra)
                        times.setdefault((on, workers), []).append(wall)
                        print(f"--on {on} --workers {workers}: {wall:.1f} s ({JOBS} jobs, each once)", flush=True)
        finally:
            nodes.cluster.shutdown()
    for workers in (1, 2):
        local, ray = min(times[("local", workers)]), min(times[("ray", workers)])
        print(f"{workers} worker(s), best of {repeats}: local {local:.1f} s, Ray {ray:.1f} s; Ray / local "
              f"{ray / local:.2f}; Ray adds {1000 * (ray - local) / JOBS:.0f} ms per job ({JOBS} jobs)")


def recovery(model: Path, limit: int, lease: float) -> None:
    import psutil
    from ray._private import ray_constants

    from bench.run.store import RUNNING, SqlStore

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        nodes = Nodes(work / "nodes", model)
        try:
            nodes.add("second")
            third = nodes.add("third")
            grid = work / "grid.yaml"
            grid.write_text(GRID.format(limit=limit), encoding="utf-8")
            env = os.environ | {"GENCLSBENCH_CACHE": str(work / "driver")}
            command = [sys.executable, "-m", "bench", "run", "--grid", str(grid), "--on", "ray", "--ray-address",
                       nodes.cluster.address, "--workers", "3", "--cpus-per-worker", "1", "--lease", str(lease)]
            process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            store, node = SqlStore(f"sqlite:///{work / 'mlflow-jobs.db'}", "cluster_bench"), third.node_id[:8]
            victim = None
            while victim is None and process.poll() is None:
                time.sleep(0.2)
                states = store.states() if (work / "mlflow-jobs.db").exists() else {}
                victim = next((s for s in states.values() if s.status == RUNNING and s.run_id and s.worker
                               and f"/{node}:" in s.worker and time.time() - s.started > 1.0), None)
            if victim is None:
                raise SystemExit("the third node's worker ran no job long enough to be killed; raise --limit")
            raylet = psutil.Process(third.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
            for doomed in [raylet, *raylet.children(recursive=True)]:
                doomed.send_signal(signal.SIGKILL)
            killed = time.time()
            process.wait(timeout=1800)
            after = store.states()[victim.key]
            print(f"recovery: {victim.name} ({victim.kind}) claimed again {after.started - killed:.1f} s and "
                  f"finished {after.finished - killed:.1f} s after its node was killed (lease {lease:g} s; attempt "
                  f"{after.attempt}, on {after.worker})")
        finally:
            nodes.cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=60, help="evaluation examples per run")
    parser.add_argument("--lease", type=float, default=10.0, help="the lease of the recovery run, seconds")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from runners.model_registry import model_folder

    with tempfile.TemporaryDirectory() as cache:
        model = model_folder("tiny-random", Path(cache))
        overhead(model, args.limit, args.repeats)
        recovery(model, args.limit * 4, args.lease)
    print(f"({os.cpu_count()} CPU cores, no GPU)")


if __name__ == "__main__":
    main()
