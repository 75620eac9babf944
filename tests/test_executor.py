"""The executor on the in-memory store, with a recording fake in place of MLflow and of the models: dependency
order, train once, fault isolation, retry, lease takeover and interruption, in milliseconds. (The MLflow path is
kept honest by the end-to-end grids.)"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from cli_runner import bench
from executor_fakes import Clock, FakePerformer, FakeRecorder
from rich.console import Console

from bench.plan.datasets import DatasetCache
from bench.plan.graph import build_graph
from bench.plan.grid import expand, read_grid
from bench.plan.specs import Job, RunSpec
from bench.run.executor import DependencyFailed, Executor
from bench.run.progress import LineReporter
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


def executor(graph, store, recorder, tmp_path, performer) -> Executor:
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


def test_a_dead_workers_job_is_taken_over_after_its_lease_and_its_runs_end_as_the_store_says(tmp_path):
    """Three workers killed (kill -9: nothing more is written) at three steps of a job's life: after linking its run,
    between creating its run and linking it, and between the store's verdict and the run's end."""
    graph = graph_of(tmp_path)
    clock = Clock()
    store, recorder = MemoryStore(clock), FakeRecorder()
    store.register(job_rows(graph))
    linked, unlinked, completed = [k for k in graph.jobs if not graph.needs[k]][:3]  # jobs that need none
    for key in (linked, unlinked, completed):
        claim = store.claim([key], "dead:1", lease_s=60, retry_failed_before=clock.now)
        run_id = recorder.start(graph.jobs[key], "parent", claim.attempt)
        if key != unlinked:
            store.started(claim, run_id)
        if key == completed:
            store.complete(claim, run_id)
    clock.now += 30
    live = executor(graph, store, recorder, tmp_path, FakePerformer())
    live.lease_s = 60
    assert store.claim([linked], "w2", 60, clock.now) is None  # the lease still holds
    clock.now += 31
    performer = FakePerformer()
    live.perform = performer
    live.run()
    assert {linked, unlinked} <= {j.key for j in performer.done} and completed not in {j.key for j in performer.done}
    for key in (linked, unlinked):  # the dead run ends KILLED, never RUNNING; the job finishes once
        assert [r["status"] for r in recorder.runs.values() if r["job"].key == key] == ["KILLED", "FINISHED"]
    assert [r["status"] for r in recorder.runs.values() if r["job"].key == completed] == ["FINISHED"]
    assert all(r["statuses"] in (["RUNNING", "FINISHED"], ["RUNNING", "KILLED"]) for r in recorder.runs.values())


def test_a_run_left_running_after_its_verdict_is_finished_by_a_worker_already_at_work(tmp_path):
    """Another worker completes a job in the store and dies before ending its run, while this one works: this one
    finishes that run when it ends (it settled the grid's runs when it began, before that death)."""
    graph = graph_of(tmp_path)
    store, recorder = MemoryStore(Clock()), FakeRecorder()
    left: list[str] = []

    class DyingNeighbour(FakePerformer):
        def __call__(self, job, out, callbacks):
            if not left:
                claim = store.claim([k for k in graph.jobs if not graph.needs[k]], "dead:1", 60, 0)
                left.append(recorder.start(graph.jobs[claim.key], "parent", claim.attempt))
                store.started(claim, left[0])
                store.complete(claim, left[0])
            return super().__call__(job, out, callbacks)

    executor(graph, store, recorder, tmp_path, DyingNeighbour()).run()
    assert recorder.runs[left[0]]["statuses"] == ["RUNNING", "FINISHED"]
    assert sorted(r["job"].key for r in recorder.runs.values() if r["status"] == "FINISHED") == sorted(graph.jobs)


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


def test_a_worker_waiting_on_another_says_so_once_then_takes_its_job_over(tmp_path):
    """A job held by a worker that is gone: the idle worker says what it waits for and for how long, once, rather
    than waiting in silence for the lease to end; then it says it takes the job over."""
    graph = graph_of(tmp_path)
    ticks = Clock()

    def ticking() -> float:  # five seconds a reading: the lease ends while the worker waits
        ticks.now += 5
        return ticks.now

    store, recorder, out = MemoryStore(ticking), FakeRecorder(), io.StringIO()
    store.register(job_rows(graph))
    held = next(k for k in graph.jobs if not graph.needs[k])
    store.claim([held], "gone:1", lease_s=1000, retry_failed_before=0)
    worker = executor(graph, store, recorder, tmp_path, FakePerformer())
    worker.reporter = LineReporter(Console(file=out, width=300))
    worker.run()
    name = graph.jobs[held].name
    waits = re.findall(rf"waiting for {re.escape(name)} held by gone:1 \(lease ends in (\d+) s; a dead worker's job "
                       r"is taken over then\)", out.getvalue())
    assert len(waits) == 1 and 0 < int(waits[0]) < 1000, out.getvalue()
    assert out.getvalue().count(f"taking over {name} from gone:1 (its lease ran out)") == 1
    assert store.states()[held].status == DONE


@pytest.mark.parametrize("lease", ["4.9", "86401", "inf", "1e308", "nan"])
def test_a_lease_out_of_bounds_is_refused_by_the_executor_and_the_command_line(tmp_path, monkeypatch, capsys, lease):
    with pytest.raises(ValueError, match="a lease lasts 5 to 86400 seconds"):
        Executor(graph_of(tmp_path), MemoryStore(), FakeRecorder(), Workspace(tmp_path), FakePerformer(),
                 LineReporter(Console(file=io.StringIO())), lease_s=float(lease))
    monkeypatch.chdir(tmp_path)
    for command in (["run"], ["search", "--space", "space.yaml"]):
        assert bench(monkeypatch, *command, "--lease", lease) == 2
        assert capsys.readouterr().err == (f"error: Invalid value for '--lease': {float(lease):g} seconds is not a "
                                           "lease a worker may hold: give 5 to 86400 seconds "
                                           f"(see 'bench {command[0]} --help')\n")


def test_a_ctrl_c_during_a_held_write_takes_effect_after_it_and_an_ignored_one_stays_ignored():
    import os
    import signal

    from bench.run.interrupts import held_signals

    steps = []
    with pytest.raises(KeyboardInterrupt):
        with held_signals():
            os.kill(os.getpid(), signal.SIGINT)  # delivered at once, held back until the write is over
            steps.append("write finished")
    assert steps == ["write finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a process started in the background
    try:
        with held_signals():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
