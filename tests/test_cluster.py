"""Workers placed by real engines on this machine: a Ray cluster of two nodes (each with a cache of its own, as two
machines have) that a third node joins and leaves by SIGKILL, and a Slurm job array through submitit's local
executor. Every job finishes exactly once, dependants after their inputs; a trained adapter reaches an evaluation on
the other node through MLflow; a node killed while it runs a job loses nothing (its job is taken over through the
lease, its actor restarted elsewhere). Bad launch options are one line, exit 2, within seconds."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from cli_runner import bench
from mlflow.tracking import MlflowClient
from servers import free_port, require
from test_workers import GRID, KILL_GRID, assert_each_job_once, grid_file

from bench.run.store import RUNNING, SqlStore
from bench.run.workspace import COMPLETE
from reports.vocabulary import HASH_TAG, KIND_TAG

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray binds its nodes to 127.0.0.1, not the machine's address
HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000, "health_check_failure_threshold": 5}


class RayNodes:
    """A Ray cluster on this machine whose every node has a GENCLSBENCH_CACHE of its own (its workers inherit its
    raylet's environment), the tiny model linked into each."""

    def __init__(self, root: Path, tiny_folder: Path) -> None:
        from ray.cluster_utils import Cluster

        self.root, self.tiny_folder = root, tiny_folder
        self.cluster = Cluster()
        self.caches: dict[str, Path] = {}  # node id -> its cache folder
        self.head = self.add("head", include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=free_port(),
                             _system_config=HEALTH)
        self.second = self.add("second")

    def add(self, name: str, **args):
        cache = self.root / name
        (cache / "models").mkdir(parents=True)
        (cache / "models" / "tiny-random").symlink_to(self.tiny_folder)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("GENCLSBENCH_CACHE", str(cache))
            node = self.cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1", **args)
        self.caches[node.node_id[:8]] = cache
        return node

    @property
    def address(self) -> str:
        return self.cluster.address


@pytest.fixture(scope="module")
def ray_nodes(tmp_path_factory, tiny_folder):
    """Two nodes of two CPUs each, shared by the module's tests and shut down after them."""
    found = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("submitit") is not None
    require(found, "ray and submitit (pip install -c constraints.txt -e '.[cluster]')")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (LOOPBACK | {"PYTHONPATH": str(ROOT)}).items():
            patch.setenv(name, value)
        nodes = RayNodes(tmp_path_factory.mktemp("nodes"), tiny_folder)
        try:
            yield nodes
        finally:
            nodes.cluster.shutdown()


def start_on_ray(tmp_path: Path, nodes: RayNodes, grid: Path, *args: str) -> subprocess.Popen:
    """`bench run --on ray` against the cluster, as a user starts it (its own cache: it runs no job itself)."""
    env = os.environ | LOOPBACK | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0",
                                   "GENCLSBENCH_CACHE": str(tmp_path / "driver")}
    return subprocess.Popen([sys.executable, "-m", "bench", "run", "--grid", str(grid), "--on", "ray",
                             "--ray-address", nodes.address, "--workers", "3", *args],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def job_states(tmp_path: Path) -> dict:
    return SqlStore(f"sqlite:///{tmp_path / 'mlflow-jobs.db'}", "workers").states()


def node_of(worker: str) -> str:
    """The node id (prefix) in a Ray worker's name, ray:<ip>/<node id>:<actor id>."""
    return worker.split("/", 1)[1].split(":", 1)[0]


def test_three_ray_workers_on_two_nodes_run_each_job_once(tmp_path, ray_nodes, tracking_uri):
    grid = grid_file(tmp_path)
    worker = start_on_ray(tmp_path, ray_nodes, grid, "--lease", "10")
    out, _ = worker.communicate(timeout=900)
    assert worker.returncode == 0, out[-3000:]
    assert "2 node(s); 3 worker(s) with 1 CPU(s) and 0 GPU(s) each; dashboard http://127.0.0.1:" in out, out[:2000]
    assert_each_job_once(tracking_uri)
    states = job_states(tmp_path)
    for state in states.values():  # dependants ran after their inputs
        assert all(state.started >= states[dep].finished for dep in state.deps), state.name
    assert {node_of(s.worker) for s in states.values()} == {ray_nodes.head.node_id[:8],
                                                            ray_nodes.second.node_id[:8]}
    train = next(s for s in states.values() if s.kind == "train")
    elsewhere = [s for s in states.values() if train.key in s.deps and node_of(s.worker) != node_of(train.worker)]
    assert elsewhere, "no evaluation of the adapter ran on the other node"
    other = ray_nodes.caches[node_of(elsewhere[0].worker)]
    assert (other / "jobs" / train.key / COMPLETE).is_file()  # the adapter came there through MLflow


def test_a_node_killed_during_a_job_loses_nothing(tmp_path, ray_nodes, tracking_uri):
    """A third node joins; once its worker has run a job for a second, the node dies: its raylet and its processes
    are killed (SIGKILL). The job is taken over once its 5-second lease has run out and finishes once, its dead run
    ends KILLED, the actor comes back on a surviving node (one CPU a worker leaves it room there)."""
    from ray._private import ray_constants

    third = ray_nodes.add("third")
    grid = tmp_path / "workers.yaml"
    grid.write_text(KILL_GRID.replace("evaluate_base: false", "evaluate_base: true").replace("limit: 400", "limit: 120")
                    .replace("{icl: similar-1, decoding: [generate, ppl]}",
                             "{icl: [zero, similar-1], decoding: [generate, ppl]}"),
                    encoding="utf-8")  # 8 evaluations and the training: every worker has one to run
    worker = start_on_ray(tmp_path, ray_nodes, grid, "--lease", "5", "--cpus-per-worker", "1")
    try:
        victim = None
        while victim is None:
            assert worker.poll() is None, worker.stdout.read()[-3000:]
            time.sleep(0.3)
            states = job_states(tmp_path) if (tmp_path / "mlflow-jobs.db").exists() else {}
            victim = next((s for s in states.values() if s.status == RUNNING and s.run_id
                           and node_of(s.worker) == third.node_id[:8] and time.time() - s.started > 1.0), None)
        raylet = psutil.Process(third.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid)
        processes = [raylet, *raylet.children(recursive=True)]  # its workers: the node's processes die with it
        for process in processes:
            process.send_signal(signal.SIGKILL)
        killed_at = time.time()
        out, _ = worker.communicate(timeout=900)
    finally:
        worker.kill()
        ray_nodes.cluster.remove_node(third, allow_graceful=False)
    assert worker.returncode == 0, out[-3000:]
    assert_each_job_once(tracking_uri, killed=1, jobs=1 + 8)  # 0 lost, 0 twice, none RUNNING
    after = job_states(tmp_path)[victim.key]
    assert after.attempt >= 2 and node_of(after.worker) != third.node_id[:8]
    actor = victim.worker.rsplit(":", 1)[1]
    starts = [line for line in out.splitlines() if f":{actor} at work" in line]
    assert len(starts) >= 2, out[-3000:]  # the dead actor was restarted on another node
    print(f"{victim.name}: finished on {after.worker} {after.finished - killed_at:.1f} s after the SIGKILL "
          "(lease 5 s)")


SPACE = """name: workers
datasets: [emotion]
models: [tiny-random]
eval: {limit: 24}
inference: {batch_size: 8, max_new_tokens: 4}
search: {seed: 3, pruner: none}
strategies: {icl: [zero, random, fixed], shots: {low: 1, high: 2}, decoding: [generate, ppl]}
"""


def test_a_search_on_two_ray_workers_shares_one_study(tmp_path, ray_nodes, tracking_uri):
    """`bench search --on ray`: two actors run trials of one study (its trial budget shared), no spec evaluated
    twice; the launching command writes what the search found."""
    import optuna

    space = tmp_path / "space.yaml"
    space.write_text(SPACE, encoding="utf-8")
    env = os.environ | LOOPBACK | {"PYTHONPATH": str(ROOT), "GENCLSBENCH_CACHE": str(tmp_path / "driver")}
    done = subprocess.run([sys.executable, "-m", "bench", "search", "--space", str(space), "--trials", "4",
                           "--workers", "2", "--on", "ray", "--ray-address", ray_nodes.address], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    study = optuna.load_study(study_name="workers", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert 4 <= len([t for t in study.trials if t.state.is_finished()]) <= 5  # another may start as one ends
    states = job_states(tmp_path)
    assert states and {s.worker.split(":")[0] for s in states.values()} == {"ray"}
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("workers").experiment_id], max_results=500)
    evaluated = Counter(r.data.tags[HASH_TAG] for r in runs if r.data.tags.get(KIND_TAG) == "eval")
    assert set(evaluated) == set(states) and set(evaluated.values()) == {1}  # no spec evaluated twice
    assert (tmp_path / "search" / "best.yaml").is_file()


def test_a_slurm_array_through_submitits_local_executor_runs_each_job_once(tmp_path, fresh_cache, tracking_uri,
                                                                           monkeypatch, capsys):
    from bench.run.launchers import LAUNCHERS
    from bench.run.launchers.slurm import SlurmLauncher

    require(importlib.util.find_spec("submitit") is not None, "submitit (pip install -e '.[cluster]')")
    monkeypatch.setitem(LAUNCHERS, "slurm", SlurmLauncher(cluster="local"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    grid = tmp_path / "workers.yaml"
    grid.write_text(GRID.replace("icl: [zero, random-1, similar-1], decoding: [generate, ppl]",
                                 "icl: [zero, random-1], decoding: generate"), encoding="utf-8")
    assert bench(monkeypatch, "run", "--grid", str(grid), "--on", "slurm", "--workers", "2", "--wait",
                 "--slurm-logs", str(tmp_path / "logs")) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "submitted 2 worker(s) as local job" in out and "results: emotion / tiny-random" in out
    assert_each_job_once(tracking_uri, jobs=1 + 2 * 2 + 1)
    assert {s.worker.split(":")[0] for s in job_states(tmp_path).values()} == {"slurm"}


def test_bad_launch_options_are_one_line_within_seconds(tmp_path, ray_nodes, tracking_uri, monkeypatch, capsys):
    grid = grid_file(tmp_path)
    for args, message in (
        (["--on", "ray", "--ray-address", f"127.0.0.1:{free_port()}"], "cannot reach the Ray cluster at 127.0.0.1:"),
        (["--on", "ray", "--ray-address", ray_nodes.address, "--gpus-per-worker", "2"],
         "--gpus-per-worker 2: no node of the Ray cluster has 2 GPU(s) (the most on one node: 0)"),
        (["--on", "slurm"], "--on slurm: sbatch is not on this machine's PATH"),
        (["--on", "ray", "--partition", "gpu"], "--partition does not apply to --on ray; it is an option of --on "
                                                "slurm"),
        (["--on", "cloud"], "--on cloud: no such launcher; give one of local, ray, slurm"),
    ):
        if args == ["--on", "slurm"]:
            monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
        started = time.monotonic()
        assert bench(monkeypatch, "run", "--grid", str(grid), *args) == 2
        err = capsys.readouterr().err.strip()
        assert time.monotonic() - started < 10 and err.count("\n") == 0 and message in err, (args, err)
    assert not (tmp_path / "mlflow.db").exists()
