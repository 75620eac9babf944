"""What each job of a graph is doing, as the job store says: done, running (where, for how long, whether its lease
ran out), failed or pruned (why) or waiting (on what). One rule for `bench status` and `bench run --dry-run`."""

from __future__ import annotations

from dataclasses import dataclass

from bench.plan.graph import JobGraph
from bench.run.progress import clock
from bench.run.store import DONE, ENDED_WITHOUT_RESULT, FAILED, RUNNING, JobRow, JobState

WAITING = "waiting"
GROUPS = (DONE, RUNNING, WAITING, FAILED)


@dataclass(frozen=True)
class JobStatus:
    """A job's group (one of `GROUPS`) and the words that say it."""

    group: str
    text: str


def job_rows(graph: JobGraph) -> list[JobRow]:
    """The graph's jobs as the store keeps them."""
    return [JobRow(key, job.KIND, job.name, graph.needs[key]) for key, job in graph.jobs.items()]


def job_statuses(graph: JobGraph, states: dict[str, JobState], now: float) -> dict[str, JobStatus]:
    """Each job's status at store time `now` (a job the store does not know yet waits like a pending one)."""
    found = {}
    for key in graph.jobs:
        state = states.get(key)
        status = state.status if state else None
        if status == RUNNING:
            lapsed = "" if (state.lease_until or 0) >= now else ", lease expired: another worker takes it over"
            found[key] = JobStatus(RUNNING, f"running on {state.worker} for {clock(now - (state.started or now))}"
                                            f"{lapsed}")
        elif status == DONE:
            found[key] = JobStatus(DONE, "done")
        elif status in ENDED_WITHOUT_RESULT:  # failed, or pruned by a search
            found[key] = JobStatus(FAILED, f"{status}: {state.error}")
        else:
            needs = [graph.jobs[d].name for d in graph.needs[key] if not (d in states and states[d].status == DONE)]
            found[key] = JobStatus(WAITING, f"waits on {', '.join(needs)}" if needs else "ready")
    return found


def describe(graph: JobGraph, states: dict[str, JobState], now: float, notes: dict[str, str] | None = None
             ) -> list[str]:
    """One line per job for `--dry-run`: kind, key, name, status, and a note (its estimated cost) where `notes`
    has one."""
    statuses = job_statuses(graph, states, now)
    return [f"{job.KIND:<10} {key}  {job.name}  [{statuses[key].text}]"
            + (f"  {notes[key]}" if notes and key in notes else "") for key, job in graph.jobs.items()]
