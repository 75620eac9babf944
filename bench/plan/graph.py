"""The job graph: what a grid runs, and in which order. The one place that turns RunSpecs into jobs.

Every RunSpec pulls in the jobs it needs (`Job.dependencies`: reasoning generator -> written reasonings -> SFT
warm-up -> RL stage -> evaluation, and relabel scoring where used); jobs are keyed by their hashes, so a job that
many specs share (a warm-up, an R-Gen) is one node, and a spec listed twice in a grid (`seeds: [0, 0]`, a model
named twice) collapses to one, with a note. The order puts every job after what it needs and keeps the evaluations
of one trained model together (one loaded model serves them all).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.plan.specs import Job, RunSpec


@dataclass
class JobGraph:
    """Jobs by key in dependency order, what each needs, and notes on duplicates collapsed."""

    jobs: dict[str, Job]
    needs: dict[str, tuple[str, ...]]
    notes: list[str] = field(default_factory=list)

    @property
    def evaluations(self) -> list[RunSpec]:
        return [j for j in self.jobs.values() if isinstance(j, RunSpec)]


def _locality(spec: RunSpec) -> tuple:
    """Evaluations sharing a model (and its training) run back to back, untrained first."""
    return (spec.train is not None, spec.model, spec.dataset.name, spec.train.key if spec.train else "")


def build_graph(specs: Sequence[RunSpec]) -> JobGraph:
    """The job graph of `specs` (see the module doc)."""
    jobs: dict[str, Job] = {}
    needs: dict[str, tuple[str, ...]] = {}
    notes: list[str] = []

    def add(job: Job) -> None:
        if job.key in jobs:
            return
        for dependency in job.dependencies():
            add(dependency)
        needs[job.key] = tuple(d.key for d in job.dependencies())
        jobs[job.key] = job

    seen: dict[str, int] = {}
    for spec in specs:
        seen[spec.key] = seen.get(spec.key, 0) + 1
    for key, count in seen.items():
        if count > 1:
            name = next(s.name for s in specs if s.key == key)
            notes.append(f"{name} is listed {count} times in the grid (same seed, model or dataset twice?): run once")
    baselines = [s for s in specs if s.baseline]
    for spec in baselines + sorted((s for s in specs if not s.baseline), key=_locality):
        add(spec)
    return JobGraph(jobs, needs, notes)
