"""Exactly once through every fault: the executor's own code on the in-memory store and an in-memory MLflow, with its
worker killed (kill -9: nothing after that step runs), stalled past its lease (SIGSTOP, then SIGCONT once another
worker has taken its job over) or its output closed (`bench run | head`), before each step of its work in turn;
another worker then finishes the grid. Whatever the step: every job is done, its one FINISHED run is the run the
store linked to it, no run is left RUNNING, no run that ended changed its end; and on the way, no run starts while a
run of a done job, or an earlier run of its own job, is still RUNNING (a run ends with its job's verdict, a takeover
ends the runs of earlier attempts first)."""

from __future__ import annotations

import io
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from executor_fakes import Clock, FakePerformer, FakeRecorder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from bench.plan.datasets import DatasetCache
from bench.plan.graph import JobGraph, build_graph
from bench.plan.grid import expand, read_grid
from bench.run.executor import Executor
from bench.run.progress import LineReporter, TerminalConsole
from bench.run.store import DONE, MemoryStore
from bench.run.workspace import Workspace

GRID = """name: once
datasets: [emotion]
models: [tiny-random]
eval: {limit: 4}
baselines: []
training: {n_train: 8, strategies: {method: sft}}
strategies: {decoding: generate}
"""
LEASE = 60.0
KINDS = ("kill", "stall", "pipe")


class Killed(BaseException):
    """The worker's process is gone (not an exception any handler of the executor catches)."""


class Script:
    """The steps of one worker: every call it makes to the store, the recorder and the reporter, counted; before
    step `at` the fault `kind` strikes (no fault when `kind` is None)."""

    def __init__(self, kind: str | None = None, at: int = -1) -> None:
        self.kind, self.at, self.steps = kind, at, 0
        self.dead = self.closed = False
        self.stalled, self.resumed = threading.Event(), threading.Event()

    def step(self, counted: bool) -> None:
        if self.dead:
            raise Killed
        if counted and self.steps == self.at:
            if self.kind == "kill":
                self.dead = True
                raise Killed
            if self.kind == "stall":
                self.stalled.set()
                self.resumed.wait()
            self.closed = self.kind == "pipe"
        self.steps += counted


class Faulty:
    """`target`, each call a step of `script` (the heartbeat, which beats on a timer of its own, is not counted)."""

    def __init__(self, target: object, script: Script) -> None:
        self._target, self._script = target, script

    def __getattr__(self, name: str):
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        def call(*args, **kwargs):
            self._script.step(counted=name != "heartbeat")
            return attribute(*args, **kwargs)
        return call


class Pipe(io.StringIO):
    """A terminal that `script` closes: a write after that is a broken pipe."""

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script

    def write(self, text: str) -> int:
        if self.script.closed:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


class Watched(FakeRecorder):
    """The in-memory MLflow, noting (`late`) what is still RUNNING that should not be when a run starts: a run of a
    job the store has done, or an earlier run of the same job. (The workers that could still end them are frozen
    or dead by then, in these tests.)"""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__()
        self.store, self.late = store, []

    def start(self, job, parent_id, attempt: int) -> str:
        done = {k for k, s in self.store.states().items() if s.status == DONE} | {job.key}
        self.late += [f"{run_id} ({r['job'].name}) RUNNING when a run of {job.name} started"
                      for run_id, r in self.runs.items() if r["status"] == "RUNNING" and r["job"].key in done]
        return super().start(job, parent_id, attempt)


@dataclass
class World:
    """What the faults leave: the store, the record, the scripts of the faulty workers and whether each died, and
    what the last worker (no fault) performed."""

    store: MemoryStore
    recorder: Watched
    scripts: list[Script]
    died: list[bool]
    last: FakePerformer


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> JobGraph:
    path = tmp_path_factory.mktemp("grid") / "once.yaml"
    path.write_text(GRID, encoding="utf-8")
    return build_graph(expand(read_grid(path), path, DatasetCache(), "float32"))


def worker(graph: JobGraph, store, recorder, reporter, name: str, cache: Path) -> Executor:
    return Executor(graph, store, recorder, Workspace(cache), FakePerformer(), reporter, parent_id="parent",
                    worker=name, lease_s=LEASE, poll_s=0.001)


def play(graph: JobGraph, cache: Path, scripts: list[Script]) -> World:
    """Workers run the grid one after another, each on a machine of its own, each under its script; once one has
    died, stalled or ended, the clock moves past its lease and the next starts. A last worker, with no fault, runs
    the grid to its end; then the stalled workers resume, in the order they stalled."""
    clock = Clock()
    store = MemoryStore(clock)
    recorder = Watched(store)
    threads, died = [], [threading.Event() for _ in scripts]
    for n, script in enumerate(scripts):
        reporter = LineReporter(TerminalConsole(file=Pipe(script), width=200))
        faulty = worker(graph, Faulty(store, script), Faulty(recorder, script), Faulty(reporter, script), f"w{n}",
                        cache / f"w{n}")
        threads.append(threading.Thread(target=guarded(faulty.run, died[n]), daemon=True))
        threads[-1].start()
        while threads[-1].is_alive() and not script.stalled.is_set():
            threads[-1].join(0.0005)
        clock.now += LEASE + 1
    last = worker(graph, store, recorder, LineReporter(Console(file=io.StringIO())), "last", cache / "last")
    last.run()
    for script, thread in zip(scripts, threads):
        script.resumed.set()
        thread.join(5)
        assert not thread.is_alive()
    return World(store, recorder, scripts, [d.is_set() for d in died], last.perform)


def guarded(run: Callable[[], object], died: threading.Event) -> Callable[[], None]:
    def target() -> None:
        try:
            run()
        except Killed:
            died.set()
    return target


def exactly_once(graph: JobGraph, world: World) -> list[str]:
    """What is wrong at the end (nothing, when every job ran exactly once as far as the record can tell)."""
    states, runs = world.store.states(), world.recorder.runs
    wrong = [f"{graph.jobs[k].name} is {s.status}" for k, s in states.items() if s.status != DONE]
    for key in graph.jobs:
        finished = [run_id for run_id, r in runs.items() if r["job"].key == key and r["status"] == "FINISHED"]
        if finished != [states[key].run_id]:
            wrong.append(f"{graph.jobs[key].name}: FINISHED runs {finished}, linked {states[key].run_id}")
    wrong += [f"{run_id} ({r['job'].name}) went {' -> '.join(r['statuses'])}" for run_id, r in runs.items()
              if len(set(r["statuses"][1:])) != 1]  # left RUNNING, or its end changed (FINISHED then KILLED)
    return wrong + world.recorder.late


@pytest.fixture(scope="module")
def steps(graph, tmp_path_factory) -> int:
    """The steps of a worker that runs the whole grid without a fault."""
    world = play(graph, tmp_path_factory.mktemp("clean"), [Script()])
    assert not exactly_once(graph, world) and not world.last.done
    return world.scripts[0].steps


@pytest.mark.parametrize("kind", KINDS)
def test_every_job_runs_exactly_once_whatever_step_a_fault_strikes(graph, steps, tmp_path, kind):
    assert steps > 40  # three jobs: claim, start, link, perform, log, verdict, end, line, and what comes between
    started = time.monotonic()
    wrong = {}
    for at in range(steps):
        world = play(graph, tmp_path / str(at), [Script(kind, at)])
        problems = exactly_once(graph, world)
        struck = {"kill": world.died[0], "stall": world.scripts[0].stalled.is_set(), "pipe": world.scripts[0].closed}
        problems += [] if struck[kind] else [f"the {kind} did not strike"]
        if kind == "pipe":  # a closed terminal changes nothing: the first worker runs every job, and none is KILLED
            problems += ["the first worker died"] * world.died[0] + ["the last worker ran jobs"] * bool(
                world.last.done) + [f"{run_id} KILLED" for run_id, r in world.recorder.runs.items()
                                    if r["status"] == "KILLED"]
        if problems:
            wrong[at] = problems
    assert not wrong, wrong
    assert (time.monotonic() - started) / steps < 0.05  # milliseconds a case


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(faults=st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 60)), min_size=2, max_size=3))
def test_faults_that_strike_the_workers_who_take_over_lose_and_duplicate_nothing(graph, tmp_path, faults):
    """Two or three workers in a row, each struck at some step (a takeover killed or stalled in its turn)."""
    world = play(graph, Path(tempfile.mkdtemp(dir=tmp_path)), [Script(kind, at) for kind, at in faults])
    assert not exactly_once(graph, world)
