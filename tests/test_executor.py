"""The executor on the in-memory store, with a recording fake in place of MLflow and of the models: dependency
order, train once, fault isolation, retry, lease takeover and interruption, in milliseconds. (The MLflow path is
kept honest by the end-to-end grids.)"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench.plan.datasets import DatasetCache
from bench.plan.graph import build_graph
from bench.plan.grid import expand, read_grid
from bench.plan.specs import Job, RunSpec
from bench.run.executor import DependencyFailed, Executor, JobCallbacks, Pruned
from bench.run.progress import LineReporter
from bench.run.recorder import JobResult
from bench.run.status import job_rows
from bench.run.store import DONE, FAILED, PENDING, PRUNED, JobRow, MemoryStore, SqlStore
from bench.run.workspace import Workspace

GRID = """name: t
datasets: [emotion]
models: [tiny-random]
seeds: SEEDS
eval: {limit: 4}
baselines: []
training:
  n_train: 8
  relabel: {fraction: 0.25}
  strategies:
    - {method: [sft, sft+rl], rl_algo: [grpo, rloo]}
    - {method: sft, uncertain: on}
    - {reasoning: on, reasoning_source: rgen}
strategies:
  - decoding: [generate, ppl]
"""


def graph_of(tmp_path: Path, seeds: str = "[0]"):
    path = tmp_path / "g.yaml"
    path.write_text(GRID.replace("SEEDS", seeds), encoding="utf-8")
    return build_graph(expand(read_grid(path), path, DatasetCache(), "float32"))


class FakeRecorder:
    """Records what the executor logs, by run id."""

    def __init__(self) -> None:
        self.runs: dict[str, dict] = {}

    def start(self, job: Job, parent_id, tags=None) -> str:
        run_id = f"run{len(self.runs)}"
        self.runs[run_id] = {"job": job, "status": "RUNNING", "parent": parent_id}
        return run_id

    def log_step(self, run_id, metrics, step) -> None:
        self.runs[run_id].setdefault("steps", []).append((step, metrics))

    def finish(self, run_id, result: JobResult) -> None:
        self.runs[run_id] |= {"status": "FINISHED", "result": result}

    def fail(self, run_id, exc) -> None:
        self.runs[run_id] |= {"status": "FAILED", "error": exc}

    def kill(self, run_id) -> None:
        self.runs[run_id]["status"] = "KILLED"

    def prune(self, run_id, reason, metrics) -> None:
        self.runs[run_id] |= {"status": "KILLED", "pruned": reason}

    def status(self, run_id):
        return self.runs[run_id]["status"] if run_id in self.runs else None

    def download_output(self, run_id, into: Path) -> None:
        (into / "from-mlflow").write_text(run_id)

    def of(self, kind: str, status: str | None = None) -> list[dict]:
        return [r for r in self.runs.values() if r["job"].KIND == kind and (status is None or r["status"] == status)]


class FakePerformer:
    """Performs a job by noting it (and its dependencies' outputs); `fail` names jobs that raise."""

    def __init__(self, fail: tuple[str, ...] = (), interrupt: str | None = None, prune: str | None = None) -> None:
        self.done: list[Job] = []
        self.fail, self.interrupt, self.prune = fail, interrupt, prune

    def has_output(self, job: Job) -> bool:
        return job.KIND != "eval"

    def unit(self, job: Job) -> str:
        return "steps"

    def evaluation_examples(self, job: Job) -> int:
        return 4 if job.KIND == "eval" else 0

    def __call__(self, job: Job, out: Path | None, callbacks: JobCallbacks) -> JobResult:
        for dependency in job.dependencies():
            assert callbacks.output_of(dependency).is_dir()  # a dependency's output is there before the job runs
        if job.name == self.interrupt:
            raise KeyboardInterrupt
        if job.name in self.fail:
            raise RuntimeError(f"simulated crash in {job.name}")
        if job.name == self.prune:
            raise Pruned("clearly worse", {"accuracy_partial": 0.1})
        callbacks.on_log({"loss": 1.0}, 1)
        callbacks.on_progress(1, 1)
        if out is not None:
            (out / "weights").write_text(job.key)
        self.done.append(job)
        return JobResult({"accuracy": 0.5}, summary="ok")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def executor(graph, store, recorder, tmp_path, performer) -> Executor:
    from rich.console import Console

    reporter = LineReporter(Console(file=io.StringIO()))
    return Executor(graph, store, recorder, Workspace(tmp_path / "cache"), performer, reporter, parent_id="parent",
                    worker="w1", poll_s=0.001)


def test_jobs_run_once_each_after_what_they_need(tmp_path):
    graph = graph_of(tmp_path)
    clock = Clock()
    store, recorder, performer = MemoryStore(clock), FakeRecorder(), FakePerformer()
    outcomes = executor(graph, store, recorder, tmp_path, performer).run()
    assert sorted(j.key for j in performer.done) == sorted(graph.jobs)  # every job once
    position = {j.key: i for i, j in enumerate(performer.done)}
    assert all(position[d] < position[k] for k, needs in graph.needs.items() for d in needs)
    kinds = [j.KIND for j in graph.jobs.values()]
    # sft, sft+grpo, sft+rloo share one warm-up; sft(uncertain) has a relabel job; the reasoning recipe an R-Gen
    assert sorted(set(kinds)) == ["eval", "reasonings", "relabel", "rgen", "train"]
    assert kinds.count("train") == 5 and kinds.count("rgen") == 1 and kinds.count("eval") == 2 * 6
    assert {o.status for o in outcomes} == {"done"} and all(r["parent"] == "parent" for r in recorder.runs.values())
    assert all(store.states()[k].status == DONE for k in graph.jobs)
    assert all((tmp_path / "cache" / "jobs" / j.key / "weights").is_file() for j in performer.done if j.KIND != "eval")

    clock.now += 1
    again = FakePerformer()
    assert {o.status for o in executor(graph, store, recorder, tmp_path, again).run()} == {"earlier"}
    assert again.done == []  # a later invocation finds everything done


def dependents_of(graph, key: str) -> set[str]:
    """Every job that needs `key`, directly or not."""
    found, frontier = set(), [key]
    while frontier:
        current = frontier.pop()
        for other, needs in graph.needs.items():
            if current in needs and other not in found:
                found.add(other)
                frontier.append(other)
    return found


def test_a_failing_job_fails_exactly_its_dependents_and_is_retried_later(tmp_path):
    graph = graph_of(tmp_path)
    clock = Clock()
    store, recorder = MemoryStore(clock), FakeRecorder()
    warmup = next(j for j in graph.jobs.values() if j.KIND == "train" and j.strategy.tag() == "sft")
    outcomes = executor(graph, store, recorder, tmp_path, FakePerformer(fail=(warmup.name,))).run()
    doomed = dependents_of(graph, warmup.key)
    assert len(doomed) == 2 + 2 * 3  # sft+grpo, sft+rloo; 2 evaluations each of sft, sft+grpo, sft+rloo
    states = store.states()
    assert {k for k, s in states.items() if s.status == FAILED} == doomed | {warmup.key}
    assert all(s.status == DONE for k, s in states.items() if k not in doomed | {warmup.key})
    crashed = recorder.of("train", "FAILED")
    assert "simulated crash" in str(next(r["error"] for r in crashed if r["job"].key == warmup.key))
    dependents = [r for r in recorder.runs.values() if isinstance(r.get("error"), DependencyFailed)]
    assert len(dependents) == len(doomed) and all(warmup.name in str(r["error"]) for r in dependents)
    assert states[next(iter(doomed))].error.startswith("DependencyFailed: ")
    assert sum(o.status == "failed" for o in outcomes) == 6

    clock.now += 10  # a later invocation: the failures are retried, the rest is not run again
    retry = FakePerformer()
    outcomes = executor(graph, store, recorder, tmp_path, retry).run()
    assert {j.key for j in retry.done} == doomed | {warmup.key}
    assert {o.status for o in outcomes} == {"done", "earlier"}


def test_a_dead_workers_job_is_taken_over_after_its_lease(tmp_path):
    graph = graph_of(tmp_path)
    clock = Clock()
    store, recorder = MemoryStore(clock), FakeRecorder()
    store.register(job_rows(graph))
    first, second = [k for k, j in graph.jobs.items() if j.KIND == "rgen"] + \
        [k for k, j in graph.jobs.items() if j.KIND == "relabel"]
    for key in (first, second):  # a worker claims, starts a run, and dies (kill -9: nothing more is written)
        claim = store.claim([key], "dead:1", lease_s=60, retry_failed_before=clock.now)
        store.started(claim, recorder.start(graph.jobs[key], "parent"))
    recorder.finish(store.states()[second].run_id, JobResult())  # ... one after its run had finished
    clock.now += 30
    live = executor(graph, store, recorder, tmp_path, FakePerformer())
    live.lease_s = 60
    assert store.claim([first], "w2", 60, clock.now) is None  # the lease still holds
    clock.now += 31
    performer = FakePerformer()
    live.perform = performer
    live.run()
    assert first in {j.key for j in performer.done} and second not in {j.key for j in performer.done}
    runs = [r for r in recorder.runs.values() if r["job"].key == first]
    assert [r["status"] for r in runs] == ["KILLED", "FINISHED"]  # the dead run ends KILLED, never RUNNING
    assert store.states()[second].status == DONE and store.states()[second].run_id == "run1"


def test_an_interrupted_worker_kills_its_run_and_gives_the_job_back(tmp_path):
    graph = graph_of(tmp_path)
    store, recorder = MemoryStore(Clock()), FakeRecorder()
    target = next(j for j in graph.jobs.values() if j.KIND == "train")
    with pytest.raises(KeyboardInterrupt):
        executor(graph, store, recorder, tmp_path, FakePerformer(interrupt=target.name)).run()
    assert store.states()[target.key].status == PENDING  # at once claimable by another worker
    assert [r["status"] for r in recorder.runs.values() if r["job"].key == target.key] == ["KILLED"]
    assert not any(r["status"] == "RUNNING" for r in recorder.runs.values())
    assert not list((tmp_path / "cache" / "jobs").glob(".*"))  # no staging folder left behind


def test_duplicate_specs_collapse_with_a_note(tmp_path):
    graph = graph_of(tmp_path, seeds="[0, 0]")
    assert len(graph.evaluations) == 12 and len(graph.notes) == 12
    assert "listed 2 times" in graph.notes[0]


def test_two_workers_share_one_graph_and_run_each_job_once(tmp_path):
    import threading

    graph = graph_of(tmp_path)
    store, recorder = MemoryStore(), FakeRecorder()
    performers = [FakePerformer(), FakePerformer()]
    workers = [executor(graph, store, recorder, tmp_path, p) for p in performers]
    for n, worker in enumerate(workers):
        worker.worker = f"w{n}"
    threads = [threading.Thread(target=w.run) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done = [j.key for p in performers for j in p.done]
    assert sorted(done) == sorted(graph.jobs)  # each job once, whichever worker took it
    assert all(isinstance(j, Job) for j in performers[0].done)
    assert len(recorder.runs) == len(graph.jobs)


def test_outputs_of_jobs_done_elsewhere_are_downloaded(tmp_path):
    graph = graph_of(tmp_path)
    store, recorder = MemoryStore(Clock()), FakeRecorder()
    executor(graph, store, recorder, tmp_path, FakePerformer()).run()
    other_machine = executor(graph, store, recorder, tmp_path / "elsewhere", FakePerformer())
    trained = next(j for j in graph.jobs.values() if j.KIND == "train")
    folder = other_machine.output_of(trained)
    assert (folder / "from-mlflow").read_text() == store.states()[trained.key].run_id
    assert isinstance(next(iter(graph.evaluations)), RunSpec)


def test_a_pruned_evaluation_is_not_done_and_runs_whole_next_time(tmp_path):
    graph = graph_of(tmp_path)
    clock = Clock()
    store, recorder = MemoryStore(clock), FakeRecorder()
    target = next(iter(graph.evaluations))
    outcomes = executor(graph, store, recorder, tmp_path, FakePerformer(prune=target.name)).run()
    assert store.states()[target.key].status == PRUNED and store.states()[target.key].error == "clearly worse"
    assert {o.spec.key: o.status for o in outcomes}[target.key] == "pruned"
    assert [r["pruned"] for r in recorder.runs.values() if "pruned" in r] == ["clearly worse"]
    clock.now += 1
    again = FakePerformer()
    executor(graph, store, recorder, tmp_path, again).run()
    assert [j.key for j in again.done] == [target.key]


CLAIMABLE_WHEN = {  # (how the job was left, failures retried) -> claimable
    (PENDING, False): True, ("running", False): False, ("lapsed", False): True, (DONE, False): False,
    (DONE, True): False, (FAILED, False): False, (FAILED, True): True, (PRUNED, False): False, (PRUNED, True): True,
}


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("left, retried", list(CLAIMABLE_WHEN))
def test_every_store_claims_by_the_one_claimable_rule(tmp_path, kind, left, retried):
    store = MemoryStore() if kind == "memory" else SqlStore(f"sqlite:///{tmp_path / 'jobs.db'}", "t")
    store.register([JobRow("k", "eval", "job")])
    if left != PENDING:
        claim = store.claim(["k"], "first", -10 if left == "lapsed" else 60, 0)
        {DONE: lambda: store.complete(claim, "r"), FAILED: lambda: store.fail(claim, "boom"),
         PRUNED: lambda: store.prune(claim, "worse")}.get(left, lambda: None)()
    retry = store.now() + 10 if retried else 0.0  # failures before the claiming worker began are retried
    assert store.states()["k"].claimable(store.now(), retry) == CLAIMABLE_WHEN[left, retried]
    assert (store.claim(["k"], "second", 60, retry) is not None) == CLAIMABLE_WHEN[left, retried]
