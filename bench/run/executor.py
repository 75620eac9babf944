"""The executor: a worker that runs a job graph against a job store, recording each job with a recorder.

It repeatedly asks the store which jobs are done, claims the first job whose dependencies are all done (the store
makes the claim atomic, so any number of workers on any number of machines share one graph, each job running once),
performs it, records it, and completes it; it renews the claim's lease from a heartbeat thread while the job runs.
A job that fails keeps its traceback and fails exactly the jobs that depend on it (each claimed and failed with the
reason, without running); a later invocation retries both. A job whose worker died is claimed again once its lease
has run out. An interrupted worker (Ctrl-C, SIGTERM) ends its run KILLED and gives the job back at once. A worker
with nothing to claim says, once per attempt, which job of another worker it waits for and when that lease ends.

The order of truth. The job store decides; the MLflow record follows it, one attempt at a time:

1. claim: the store marks the job RUNNING for this worker, as attempt n, under a lease;
2. record start: a RUNNING run tagged with the job's hash and the attempt n;
3. link: the store keeps the run's id (`started`); a worker that lost its claim meanwhile stops here;
4. perform, and log what the run shows (metrics, tables, artifacts; a failure's traceback) while it is RUNNING;
5. the store's verdict: complete, fail or prune, taken only by the holder of attempt n;
6. the record's end follows the store: the run the store linked to a done job ends FINISHED, to a failed job
   FAILED; every other run ends KILLED, so a worker that lost its claim (its verdict refused) ends its run KILLED,
   never FINISHED; an interrupted worker gives the job back first, then ends its run the same way;
7. only then the worker's line on the terminal: output that cannot be written changes nothing above (and the
   reporters drop what they cannot write).

A run is RUNNING only while the store runs its attempt; whoever finds one that is not ends it as step 6 says
(*settles* it): a worker settles the runs of every job of its graph when it starts and when it ends, and those of a
job that was tried before when it claims it (a takeover). Runs are found by their hash tag in the tracking store, so a
run created just before a kill, never linked, is found too. Hence a kill at any step leaves at most a RUNNING run that
the next claim of its job, or the next start, ends (a done job's run FINISHED: its results were logged before the
verdict); a stalled worker that resumes after its job was taken over ends its run KILLED, never FINISHED; and nothing
after the verdict can turn a finished job's run into anything else.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.plan.cost import Cost
from bench.plan.graph import JobGraph
from bench.plan.specs import Job, RunSpec
from bench.run.progress import Reporter
from bench.run.recorder import JobResult, OpenRun, one_line
from bench.run.status import job_rows
from bench.run.store import (
    DEFAULT_LEASE_S,
    DONE,
    ENDED_WITHOUT_RESULT,
    FAILED,
    MAX_LEASE_S,
    MIN_LEASE_S,
    PRUNED,
    RUNNING,
    Claim,
    JobState,
    JobStore,
)
from bench.run.workspace import COMPLETE, Workspace
from runners.model_registry import build_once, staging_prefix, sweep_staging
from runners.phases import PHASE_PREFIX

RECORD_METRIC = f"{PHASE_PREFIX}record_s"  # a run's recording time, logged once its record is written

JobProgress = Callable[[float, int], None]  # (done, total) units of the running job: examples or steps
OnLog = Callable[[dict[str, float], int], None]  # (metrics, step): step-wise curves of the running job
OnPartial = Callable[[list[bool]], None]  # per-example correctness so far, in evaluation order (may raise Pruned)


class Performer(Protocol):
    """Computes jobs, and says what the executor needs to know of each (see `bench.run.jobs.KindPerformer`)."""

    def has_output(self, job: Job) -> bool:
        """The job leaves an output folder that later jobs read."""

    def unit(self, job: Job) -> str:
        """What the job's progress counts (examples, steps)."""

    def evaluation_examples(self, job: Job) -> int:
        """The evaluation examples the job predicts (0: it evaluates nothing): only a job that has some reports
        results so far to an observer."""

    def costs(self, jobs: Sequence[Job]) -> Mapping[str, Cost]:
        """The estimated cost of each of `jobs` that costs model time, by key: the unit of the grid's ETA."""

    def __call__(self, job: Job, out: Path | None, callbacks: JobCallbacks) -> JobResult:
        """Perform `job`, writing its output (if it has one) into `out`."""


class Recorder(Protocol):
    """What the executor records (see `bench.run.recorder.MlflowRecorder`)."""

    def start(self, job: Job, parent_id: str | None, attempt: int) -> str: ...

    def log_step(self, run_id: str, metrics: dict[str, float], step: int) -> None: ...

    def log_result(self, run_id: str, result: JobResult) -> None: ...

    def log_error(self, run_id: str, exc: BaseException) -> None: ...

    def log_pruned(self, run_id: str, reason: str, metrics: dict[str, float]) -> None: ...

    def end(self, run_id: str, status: str) -> None: ...

    def running(self, keys: Collection[str]) -> list[OpenRun]: ...

    def download_output(self, run_id: str, into: Path) -> None: ...


class DependencyFailed(RuntimeError):
    """A job that was not run because a job it needs failed."""


class Pruned(Exception):
    """An evaluation stopped on purpose before its end (a search's pruner judged it clearly worse), with the figures
    of the examples it had done: its run ends KILLED, tagged PRUNED, and the job counts as not done."""

    def __init__(self, reason: str, metrics: dict[str, float]) -> None:
        super().__init__(reason)
        self.metrics = metrics


@dataclass
class JobCallbacks:
    """What the executor lets a running job call: its dependencies' outputs, its progress, its step-wise curves, and
    an observer of an evaluation's results so far (which may raise `Pruned`)."""

    output_of: Callable[[Job], Path]
    on_progress: JobProgress
    on_log: OnLog
    on_partial: OnPartial | None = None


@dataclass(frozen=True)
class Outcome:
    """How an evaluation ended for this worker (done now, done earlier, failed, pruned, or not reached), and its run."""

    spec: RunSpec
    status: str  # done | earlier | failed | pruned | waiting
    run_id: str | None = None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def lost(job: Job) -> str:
    return f"lost the claim on {job.name} (its lease ran out): another worker runs it; this run ends KILLED"


def settled(state: JobState, run: OpenRun) -> str | None:
    """What a RUNNING run of `state`'s job becomes, as the store says (step 6 of the module doc): None while the store
    runs the run's attempt; FINISHED or FAILED for the run the store linked to its done or failed job; KILLED for any
    other (an attempt given back, pruned, taken over, or never linked)."""
    if state.status == RUNNING and state.attempt == run.attempt:
        return None
    if state.run_id != run.run_id:
        return "KILLED"
    return {DONE: "FINISHED", FAILED: "FAILED"}.get(state.status, "KILLED")


def evaluation_outcomes(graph: JobGraph, store: JobStore, began: float) -> list[Outcome]:
    """How each evaluation of `graph` stands in `store` for a worker (or a launching process) that began at store
    time `began`."""
    states = store.states(list(graph.jobs))
    found = []
    for spec in graph.evaluations:
        state = states[spec.key]
        status = {DONE: "earlier" if (state.finished or 0) < began else "done", FAILED: "failed",
                  PRUNED: "pruned"}.get(state.status, "waiting")
        found.append(Outcome(spec, status, state.run_id))
    return found


@dataclass
class Executor:
    """One worker over one graph (see the module doc). `perform` computes a job; `reporter` shows progress."""

    graph: JobGraph
    store: JobStore
    recorder: Recorder
    workspace: Workspace
    perform: Performer
    reporter: Reporter
    parent_id: str | None = None
    worker: str = field(default_factory=worker_name)
    lease_s: float = DEFAULT_LEASE_S
    poll_s: float = 2.0
    observe: Callable[[Job, str], OnPartial] | None = None  # (evaluation, its run id) -> its observer
    _claim: Claim | None = None
    _claim_lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not MIN_LEASE_S <= self.lease_s <= MAX_LEASE_S:
            raise ValueError(f"lease of {self.lease_s} s: a lease lasts {MIN_LEASE_S:g} to {MAX_LEASE_S:g} seconds")

    def run(self) -> list[Outcome]:
        """Work until every job of the graph is done or has failed since this worker began; return the outcome of
        every evaluation."""
        began = self.store.now()
        self.store.register(job_rows(self.graph))
        sweep_staging(self.workspace.jobs)
        self._settle(list(self.graph.jobs))
        states = self.store.states(list(self.graph.jobs))
        self.reporter.plan(self.perform.costs([j for k, j in self.graph.jobs.items() if states[k].status != DONE]))
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(stop,), daemon=True)
        beat.start()
        told: set[tuple[str, int]] = set()
        try:
            while True:
                states = self.store.states(list(self.graph.jobs))
                final = {k for k, s in states.items() if s.status == DONE or (
                    s.status in ENDED_WITHOUT_RESULT and (s.finished or 0) >= began)}
                if len(final) == len(self.graph.jobs):
                    break
                doomed = [k for k in self.graph.jobs if k not in final and any(
                    states[d].status in ENDED_WITHOUT_RESULT and d in final for d in self.graph.needs[k])]
                ready = [k for k in self.graph.jobs if k not in final and k not in doomed and all(
                    states[d].status == DONE for d in self.graph.needs[k])]
                claim = self.store.claim(doomed + ready, self.worker, self.lease_s, began)
                if claim is None:  # what is left runs elsewhere, or waits on what runs elsewhere
                    self._tell_waits(states, told)
                    time.sleep(self.poll_s)
                else:  # a doomed job is failed with the first of its dependencies that ended without a result
                    self._run(claim, next((states[d] for d in self.graph.needs[claim.key]
                                           if states[d].status in ENDED_WITHOUT_RESULT), None))
        finally:
            stop.set()
        self._settle(list(self.graph.jobs))
        return evaluation_outcomes(self.graph, self.store, began)

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.lease_s / 4):
            with self._claim_lock:
                if self._claim is not None:
                    self.store.heartbeat(self._claim, self.lease_s)

    def _hold(self, claim: Claim | None) -> None:
        with self._claim_lock:
            self._claim = claim

    def _settle(self, keys: list[str], runs: list[OpenRun] | None = None) -> None:
        """End the RUNNING runs of `keys`' jobs (`runs`; default: every one the tracking store has) as the store says
        (`settled`). The store is read after the runs: a run found was started after its attempt's claim."""
        runs = self.recorder.running(keys) if runs is None else runs
        states = self.store.states(keys) if runs else {}
        for run in runs:
            status = settled(states[run.key], run)
            if status is not None:
                self.recorder.end(run.run_id, status)

    def _tell_waits(self, states: dict[str, JobState], told: set[tuple[str, int]]) -> None:
        """Say once per attempt which job of another worker this idle worker waits for, and when its lease ends: a
        dead worker's job waits that long, which would otherwise look like a hang."""
        held = [s for s in states.values() if s.status == RUNNING and s.worker != self.worker
                and (s.key, s.attempt) not in told]
        now = self.store.now() if held else 0.0
        for state in held:
            told.add((state.key, state.attempt))
            self.reporter.note(f"waiting for {state.name} held by {state.worker} (lease ends in "
                               f"{max(0.0, (state.lease_until or now) - now):.0f} s; a dead worker's job is taken "
                               "over then)")

    def _run(self, claim: Claim, blocked_by: JobState | None) -> None:
        """One attempt at a claimed job, in the order of truth (module doc): performed, or failed without running
        when a job it needs ended without a result (`blocked_by`)."""
        job = self.graph.jobs[claim.key]
        self._hold(claim)
        run_id = None
        try:
            if claim.previous.attempt:  # tried before: end every run an earlier attempt left RUNNING
                if claim.previous.status == RUNNING:
                    self.reporter.note(f"taking over {job.name} from {claim.previous.worker} (its lease ran out)")
                self._settle([claim.key])
            run_id = self.recorder.start(job, self.parent_id, claim.attempt)
            line, finished = self._attempt(claim, job, run_id, blocked_by) if self.store.started(claim, run_id) \
                else (lost(job), False)
            self._settle([claim.key], [OpenRun(run_id, claim.key, claim.attempt)])
        except (KeyboardInterrupt, SystemExit):
            given_back = self.store.release(claim)
            if run_id is not None:
                self._settle([claim.key], [OpenRun(run_id, claim.key, claim.attempt)])
            if given_back:
                self.reporter.end(claim.key, f"KILLED {job.name}: interrupted; the job is free for the next worker")
            raise
        finally:
            self._hold(None)
        self.reporter.end(claim.key, line, finished)

    def _attempt(self, claim: Claim, job: Job, run_id: str, blocked_by: JobState | None) -> tuple[str, bool]:
        """Steps 4 and 5 of the order of truth: perform the job and log what its run shows, then give the store its
        verdict. Returns the line to show and whether the job is done."""
        examples = self.perform.evaluation_examples(job)
        if blocked_by is None:
            self.reporter.start(job.key, job.name, self.perform.unit(job))
        try:
            if blocked_by is not None:
                raise DependencyFailed(f"{blocked_by.name} {blocked_by.status}: {blocked_by.error}")  # or pruned
            callbacks = JobCallbacks(self.output_of, self.reporter.advance,
                                     lambda metrics, step: self.recorder.log_step(run_id, metrics, step),
                                     self.observe(job, run_id) if self.observe and examples else None)
            result = self._perform(job, callbacks)
            recording = time.perf_counter()
            self.recorder.log_result(run_id, result)
            self.recorder.log_step(run_id, {RECORD_METRIC: time.perf_counter() - recording}, 0)
            held, line, done = self.store.complete(claim, run_id), f"done {job.name}: {result.summary}", True
        except Pruned as pruned:  # not done: a later grid runs it whole
            self.recorder.log_pruned(run_id, str(pruned), pruned.metrics)
            held, line, done = self.store.prune(claim, str(pruned)), f"PRUNED {job.name}: {pruned}", False
        except Exception as exc:  # one failing job fails its dependents, never the grid
            self.recorder.log_error(run_id, exc)
            held, line, done = self.store.fail(claim, one_line(exc)), f"FAILED {job.name}: {one_line(exc)}", False
        return (line, done) if held else (lost(job), False)

    def _perform(self, job: Job, callbacks: JobCallbacks) -> JobResult:
        """Run the job; one with an output folder fills a staging folder that becomes its cache folder when
        complete (or is read from there, when this machine built it before)."""
        if not self.perform.has_output(job):
            return self.perform(job, None, callbacks)
        target = self.workspace.output(job.key)
        if self.workspace.is_complete(job.key):
            stored = json.loads((target / COMPLETE).read_text(encoding="utf-8"))
            return JobResult(stored.get("metrics", {}), output=target, summary="from this machine's cache")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=staging_prefix(job.key), dir=target.parent))
        try:
            result = self.perform(job, staging, callbacks)
            (staging / COMPLETE).write_text(json.dumps({"key": job.key, "metrics": result.metrics}, indent=1),
                                            encoding="utf-8")
            if target.exists():
                shutil.rmtree(target)  # an incomplete folder of an older crash
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        result.output = target
        return result

    def output_of(self, job: Job) -> Path:
        """A finished job's output folder: built here, or downloaded from its run (another machine built it)."""
        if self.workspace.is_complete(job.key):
            return self.workspace.output(job.key)
        state = self.store.states([job.key]).get(job.key)
        if state is None or state.status != DONE or not state.run_id:
            raise RuntimeError(f"{job.name} has no output: it is {state.status if state else 'unknown'}")
        return build_once(self.workspace.output(job.key), COMPLETE,
                          lambda staging: self.recorder.download_output(state.run_id, staging))
