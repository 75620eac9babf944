"""Many workers on one grid, as users run them: separate `bench run` processes on the embedded SQLite store, and on
a real PostgreSQL job store with a real `mlflow server` (both started by these tests, on 127.0.0.1). Every job
finishes exactly once; a worker killed with SIGKILL during training or evaluation loses nothing: its job is taken
over once its lease has run out, its run ends KILLED, its staging folder is swept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from mlflow.tracking import MlflowClient

from reports.vocabulary import GRID_TAG, HASH_TAG

ROOT = Path(__file__).resolve().parent.parent
GRID = """name: workers
datasets: [emotion]
models: [tiny-random]
eval: {limit: 24}
inference: {batch_size: 4, max_new_tokens: 4}
training:
  n_train: 16
  lora: {r: 2, alpha: 4}
  sft: {batch_size: 4}
  strategies: {method: sft}
strategies:
  - {icl: [zero, random-1, similar-1], decoding: [generate, ppl]}
"""
JOBS = 1 + 2 * 6 + 1  # the TF-IDF baseline, (untrained, sft) x 6 strategies, and the SFT job


def grid_file(tmp_path: Path) -> Path:
    path = tmp_path / "workers.yaml"
    path.write_text(GRID, encoding="utf-8")
    return path


def start(tmp_path: Path, *args: str, stderr=subprocess.STDOUT) -> subprocess.Popen:
    """A `bench run` worker process, as a user starts one in a terminal (its stderr in its stdout, or in `stderr`)."""
    return subprocess.Popen([sys.executable, "-m", "bench", "run", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=stderr, text=True,
                            env=os.environ | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})


def runs_by_status(uri: str) -> tuple[Counter, Counter, list]:
    """(FINISHED runs per job hash, runs per status, parent runs) of the experiment `workers`."""
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("workers").experiment_id], max_results=1000)
    jobs = [r for r in runs if HASH_TAG in r.data.tags]
    finished = Counter(r.data.tags[HASH_TAG] for r in jobs if r.info.status == "FINISHED")
    return finished, Counter(r.info.status for r in jobs), [r for r in runs if GRID_TAG in r.data.tags]


def assert_each_job_once(uri: str, killed: int = 0, jobs: int = JOBS) -> None:
    """Every job finished once, no run left RUNNING, and `killed` runs ended KILLED by the kills of the test: at
    least so many where it killed something (a worker starved past a short lease on a loaded machine loses its claim
    too, and its run ends KILLED the same way), none where it killed nothing."""
    finished, statuses, parents = runs_by_status(uri)
    assert len(finished) == jobs and set(finished.values()) == {1}, finished  # every job once, no duplicate
    assert statuses["FINISHED"] == jobs and set(statuses) <= {"FINISHED", "KILLED"}, statuses  # none RUNNING
    assert statuses["KILLED"] >= killed and (killed or not statuses["KILLED"]), statuses
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=600)
    assert process.returncode == 0, out
    return out


def test_three_workers_on_the_embedded_store_run_each_job_once(tmp_path, fresh_cache, tracking_uri):
    """`--workers 2`, and a second terminal joining with the same command: three workers, on a fresh store."""
    grid = grid_file(tmp_path)
    pair, joining = start(tmp_path, "--grid", str(grid), "--workers", "2"), start(tmp_path, "--grid", str(grid))
    outputs = [finish(pair), finish(joining)]
    assert_each_job_once(tracking_uri)
    started = [line for out in outputs for line in out.splitlines() if line.removeprefix("[worker 2] ")
               .startswith("start ")]
    assert len(started) == JOBS and any(line.startswith("[worker 2] ") for line in started)
    assert "results: emotion / tiny-random" in outputs[0]


def test_three_workers_on_postgresql_and_an_mlflow_server_run_each_job_once(tmp_path, fresh_cache, servers):
    tracking, server = servers
    jobs = f"{server}/jobs"
    grid = grid_file(tmp_path)
    workers = [start(tmp_path, "--grid", str(grid), "--tracking-uri", tracking, "--store", jobs) for _ in range(3)]
    outputs = [finish(w) for w in workers]
    assert_each_job_once(tracking)
    assert "s3cret-pw" not in "".join(outputs) and "bench:***@127.0.0.1" in outputs[0]  # never the password
    assert not (tmp_path / "mlflow.db").exists()


def test_a_terminal_closed_early_stops_no_worker_and_kills_no_run(tmp_path, fresh_cache, tracking_uri):
    """`bench run --workers 2 ... | head -n 4`: the reader goes after four lines; both workers work on in silence,
    every run ends FINISHED, once, none KILLED, and nothing is said of it on stderr."""
    grid = tmp_path / "workers.yaml"
    grid.write_text("name: workers\ndatasets: [emotion]\nmodels: [tiny-random]\neval: {limit: 8}\n"
                    "inference: {batch_size: 4, max_new_tokens: 4}\n"
                    "strategies: {icl: [zero, random-1], decoding: [generate, ppl]}\n", encoding="utf-8")
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as stderr:
        pair = start(tmp_path, "--grid", str(grid), "--workers", "2", stderr=stderr)
        for _ in range(4):
            pair.stdout.readline()
        pair.stdout.close()
        assert pair.wait(timeout=600) == 0
    assert_each_job_once(tracking_uri, jobs=1 + 4)  # the TF-IDF baseline, 2 x 2 strategies
    assert "Traceback" not in errors.read_text() and "Broken pipe" not in errors.read_text()


KILL_GRID = """name: workers
datasets: [emotion]
models: [tiny-random]
baselines: []
eval: {limit: 400}  # evaluations long enough to be killed midway (a tiny model reads 60 in under a second)
inference: {batch_size: 4, max_new_tokens: 4}
training: {n_train: 48, evaluate_base: false, lora: {r: 2, alpha: 4}, sft: {batch_size: 4, epochs: 3},
           strategies: {method: sft}}
strategies: {icl: similar-1, decoding: [generate, ppl]}
"""


def _kill_during(tmp_path: Path, grid: Path, marker: str) -> list[Path]:
    """Start a worker and SIGKILL it once `marker` has begun; the staging folders it left."""
    worker = start(tmp_path, "--grid", str(grid), "--lease", "5")
    for line in worker.stdout:
        if line.startswith(f"start {marker}"):
            break
    time.sleep(1.5)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    return list((tmp_path / "cache" / "jobs").glob(".*"))


def test_workers_killed_during_training_and_during_evaluation_lose_nothing(tmp_path, fresh_cache, tracking_uri):
    """A worker killed in the middle of the training job, the next one killed in the middle of an evaluation, and
    a third that finishes the grid: each job taken over once the dead worker's lease (5 s) ran out; every job
    finished once; both dead runs end KILLED, none RUNNING; the killed training's staging folder swept."""
    grid = tmp_path / "workers.yaml"
    grid.write_text(KILL_GRID, encoding="utf-8")
    assert _kill_during(tmp_path, grid, "train emotion/tiny-random/sft"), "the killed training left a staging folder"
    assert not _kill_during(tmp_path, grid, "emotion/tiny-random/sft/similar-1")  # ... which the next one swept
    out = finish(start(tmp_path, "--grid", str(grid), "--lease", "5"))
    assert "start emotion/tiny-random/sft/similar-1" in out  # taken over
    assert_each_job_once(tracking_uri, killed=2, jobs=1 + 2)


def test_unreachable_servers_fail_within_seconds_in_one_line_without_the_password(tmp_path, tracking_uri,
                                                                                  monkeypatch, capsys):
    from cli_runner import run_cli

    grid = grid_file(tmp_path)
    for args, message in (
        (["--tracking-uri", "http://127.0.0.1:9/", "--store", "sqlite:///jobs.db"],
         "cannot reach the MLflow tracking store at http://127.0.0.1:9/"),
        (["--store", "postgresql://bench:pw-secret@127.0.0.1:9/jobs"],
         "cannot connect to the job store at postgresql+psycopg://bench:***@127.0.0.1:9/jobs"),
        (["--tracking-uri", "http://127.0.0.1:9/"], "has no place for the job store: give --store"),
    ):
        started = time.monotonic()
        assert run_cli(monkeypatch, "--grid", str(grid), *args) == 2
        err = capsys.readouterr().err.strip()
        assert time.monotonic() - started < 10 and err.count("\n") == 0 and message in err, err
        assert "pw-secret" not in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "jobs.db").exists()

