"""The executor's collaborators, faked for tests that run in milliseconds: MLflow's runs in memory, a performer that
notes the jobs it is given, and a clock that moves only when told."""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from pathlib import Path

from bench.plan.cost import Cost
from bench.plan.specs import Job
from bench.run.executor import JobCallbacks, Pruned
from bench.run.recorder import JobResult, OpenRun


class FakeRecorder:
    """MLflow's runs in memory, by run id: the job, attempt and parent of each, its status and every status it had
    (`statuses`), and what was logged to it."""

    def __init__(self) -> None:
        self.runs: dict[str, dict] = {}
        self._ids = itertools.count()

    def start(self, job: Job, parent_id, attempt: int) -> str:
        run_id = f"run{next(self._ids)}"
        self.runs[run_id] = {"job": job, "attempt": attempt, "status": "RUNNING", "statuses": ["RUNNING"],
                             "parent": parent_id}
        return run_id

    def log_step(self, run_id, metrics, step) -> None:
        self.runs[run_id].setdefault("steps", []).append((step, metrics))

    def log_result(self, run_id, result: JobResult) -> None:
        self.runs[run_id]["result"] = result

    def log_error(self, run_id, exc) -> None:
        self.runs[run_id]["error"] = exc

    def log_pruned(self, run_id, reason, metrics) -> None:
        self.runs[run_id]["pruned"] = reason

    def end(self, run_id, status: str) -> None:
        self.runs[run_id]["status"] = status
        self.runs[run_id]["statuses"].append(status)

    def running(self, keys: Collection[str]) -> list[OpenRun]:
        return [OpenRun(run_id, r["job"].key, r["attempt"]) for run_id, r in list(self.runs.items())
                if r["status"] == "RUNNING" and r["job"].key in keys]

    def download_output(self, run_id, into: Path) -> None:
        (into / "from-mlflow").write_text(run_id)

    def of(self, kind: str, status: str | None = None) -> list[dict]:
        return [r for r in self.runs.values() if r["job"].KIND == kind and (status is None or r["status"] == status)]


class FakePerformer:
    """Performs a job by noting it (and checking its dependencies' outputs); `fail` names jobs that raise,
    `interrupt` one that is interrupted (Ctrl-C), `prune` one that a search prunes."""

    def __init__(self, fail: tuple[str, ...] = (), interrupt: str | None = None, prune: str | None = None) -> None:
        self.done: list[Job] = []
        self.fail, self.interrupt, self.prune = fail, interrupt, prune

    def has_output(self, job: Job) -> bool:
        return job.KIND != "eval"

    def unit(self, job: Job) -> str:
        return "steps"

    def evaluation_examples(self, job: Job) -> int:
        return 4 if job.KIND == "eval" else 0

    def costs(self, jobs: Sequence[Job]) -> dict[str, Cost]:
        return {job.key: Cost(100.0, "a fake", "score" if job.KIND == "eval" else "train") for job in jobs}

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
    """Seconds that move only when a test moves them (`now += ...`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
