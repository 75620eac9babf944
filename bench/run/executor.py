"""The executor: a worker that runs a job graph against a job store, recording each job with a recorder.

It repeatedly asks the store which jobs are done, claims the first job whose dependencies are all done (the store
makes the claim atomic, so any number of workers on any number of machines share one graph, each job running once),
performs it, records it, and completes it; it renews the claim's lease from a heartbeat thread while the job runs.
A job that fails keeps its traceback and fails exactly the jobs that depend on it (each claimed and failed with the
reason, without running); a later invocation retries both. A job whose worker died is claimed again once its lease
has run out: its dead run is ended KILLED, or, if that run had finished, the job is completed without running
again. An interrupted worker (Ctrl-C, SIGTERM) ends its run KILLED and gives the job back at once.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.plan.graph import JobGraph
from bench.plan.specs import Job, RunSpec
from bench.run.progress import Reporter
from bench.run.recorder import JobResult, one_line
from bench.run.status import job_rows
from bench.run.store import (
    DEFAULT_LEASE_S,
    DONE,
    ENDED_WITHOUT_RESULT,
    FAILED,
    PRUNED,
    RUNNING,
    Claim,
    JobState,
    JobStore,
)
from bench.run.workspace import COMPLETE, Workspace
from runners.model_registry import build_once, staging_prefix, sweep_staging

JobProgress = Callable[[int, int], None]  # (done, total) units of the running job: examples or steps
OnLog = Callable[[dict[str, float], int], None]  # (metrics, step): step-wise curves of the running job
OnPartial = Callable[[list[bool]], None]  # per-example correctness so far, in evaluation order (may raise Pruned)


class Performer(Protocol):
    """Computes jobs, and says what the executor needs to know of each (see `bench.run.jobs.KindPerformer`)."""

    def has_output(self, job: Job) -> bool:
        """The job leaves an output folder that later jobs read."""

    def unit(self, job: Job) -> str:
        """What the job's progress counts (examples, steps)."""

    def evaluation_examples(self, job: Job) -> int:
        """The evaluation examples the job predicts (0: it evaluates nothing): they count toward the grid's ETA, and
        only a job that has some reports results so far to an observer."""

    def __call__(self, job: Job, out: Path | None, callbacks: JobCallbacks) -> JobResult:
        """Perform `job`, writing its output (if it has one) into `out`."""


class Recorder(Protocol):
    """What the executor records (see `bench.run.recorder.MlflowRecorder`)."""

    def start(self, job: Job, parent_id: str | None, tags: dict[str, str] | None = None) -> str: ...

    def log_step(self, run_id: str, metrics: dict[str, float], step: int) -> None: ...

    def finish(self, run_id: str, result: JobResult) -> None: ...

    def fail(self, run_id: str, exc: BaseException) -> None: ...

    def kill(self, run_id: str) -> None: ...

    def prune(self, run_id: str, reason: str, metrics: dict[str, float]) -> None: ...

    def status(self, run_id: str) -> str | None: ...

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

    def run(self) -> list[Outcome]:
        """Work until every job of the graph is done or has failed since this worker began; return the outcome of
        every evaluation."""
        began = self.store.now()
        self.store.register(job_rows(self.graph))
        sweep_staging(self.workspace.jobs)
        states = self.store.states(list(self.graph.jobs))
        todo = [s for s in self.graph.evaluations if states[s.key].status != DONE]
        self.reporter.plan(sum(self.perform.evaluation_examples(s) for s in todo))
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(stop,), daemon=True)
        beat.start()
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
                if claim is None:
                    time.sleep(self.poll_s)  # what is left runs elsewhere, or waits on what runs elsewhere
                elif claim.key in doomed:
                    self._fail_dependent(claim, states)
                else:
                    self._run(claim)
        finally:
            stop.set()
        return evaluation_outcomes(self.graph, self.store, began)

    def _heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(self.lease_s / 4):
            with self._claim_lock:
                if self._claim is not None:
                    self.store.heartbeat(self._claim, self.lease_s)

    def _hold(self, claim: Claim | None) -> None:
        with self._claim_lock:
            self._claim = claim

    def _fail_dependent(self, claim: Claim, states: dict[str, JobState]) -> None:
        job = self.graph.jobs[claim.key]
        failed = next(states[d] for d in self.graph.needs[claim.key] if states[d].status in ENDED_WITHOUT_RESULT)
        error = DependencyFailed(f"{failed.name} {failed.status}: {failed.error}")  # failed, or pruned
        run_id = self.recorder.start(job, self.parent_id)
        self.recorder.fail(run_id, error)
        self.store.fail(claim, one_line(error))
        self.reporter.note(f"FAILED {job.name}: {one_line(error)}")

    def _taken_over(self, claim: Claim) -> bool:
        """A job claimed from a worker that died: end its run KILLED; True if that run had in fact finished (then
        the job is complete, and is not run again)."""
        previous = claim.previous
        if previous.status != RUNNING or not previous.run_id:
            return False
        status = self.recorder.status(previous.run_id)
        if status == "FINISHED":
            self.store.complete(claim, previous.run_id)
            return True
        if status == "RUNNING":
            self.recorder.kill(previous.run_id)
        return False

    def _run(self, claim: Claim) -> None:
        job = self.graph.jobs[claim.key]
        if self._taken_over(claim):
            return
        self._hold(claim)
        run_id = self.recorder.start(job, self.parent_id)
        self.store.started(claim, run_id)
        self.reporter.start(job.name, self.perform.unit(job))
        examples = self.perform.evaluation_examples(job)
        callbacks = JobCallbacks(self.output_of, self.reporter.advance,
                                 lambda metrics, step: self.recorder.log_step(run_id, metrics, step),
                                 self.observe(job, run_id) if self.observe and examples else None)
        try:
            result = self._perform(job, callbacks)
            self.recorder.finish(run_id, result)
            if not self.store.complete(claim, run_id):
                self.reporter.note(f"lost the claim on {job.name} (lease expired); another worker runs it again")
            self.reporter.end(f"done {job.name}: {result.summary}", examples)
        except (KeyboardInterrupt, SystemExit):
            self.recorder.kill(run_id)
            self.store.release(claim)
            self.reporter.end(f"KILLED {job.name}: interrupted; the job is free for the next worker")
            raise
        except Pruned as pruned:  # not done: a later grid runs it whole
            self.recorder.prune(run_id, str(pruned), pruned.metrics)
            self.store.prune(claim, str(pruned))
            self.reporter.end(f"PRUNED {job.name}: {pruned}")
        except Exception as exc:  # one failing job fails its dependents, never the grid
            self.recorder.fail(run_id, exc)
            self.store.fail(claim, one_line(exc))
            self.reporter.end(f"FAILED {job.name}: {one_line(exc)}")
        finally:
            self._hold(None)

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
