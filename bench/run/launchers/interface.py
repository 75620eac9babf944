"""What every launcher shares: the `Work` each worker runs wherever it is placed, the `Place` a launcher gives one
worker, the `Placement` a command asks for (how many workers, what each needs), and the `Launcher` that starts them.

A launcher decides *where* workers run; what runs is decided by the job graph and the job store, as ever: every
worker runs the same loop (an executor against the command's job store and tracking server), and a worker that
dies loses its job for a lease, nothing more."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rich.console import Console

from bench.plan.errors import UserError
from runners.quiet import quiet_mlflow


@dataclass(frozen=True)
class Place:
    """One worker as its launcher placed it: its name in the job store (None: host:pid), the label of its lines
    (None: the terminal's own worker, with the live display), torch's CPU threads (None: torch's default), and the
    environment of the process it runs in (its node's: that node's cache folder is used)."""

    name: str | None
    label: str | None
    threads: int | None
    environment: dict[str, str]


class Work(Protocol):
    """What every worker of a command runs, wherever it is placed. Picklable: Ray and Slurm carry it to other nodes,
    with the rows of the datasets it reads and the URIs of its stores (never on a command line)."""

    def prepare(self, place: Place, console: Console) -> None:
        """Make this node ready: models pulled or converted once (an atomic folder build), and the files the jobs
        read checked; what is missing is a UserError."""

    def __call__(self, place: Place, console: Console) -> None:
        """Work as one worker until nothing is left to claim."""


@dataclass(frozen=True)
class Placement:
    """How many workers to start and what each asks for: the command line's options over the grid file's
    `launcher:` section. A launcher reads the fields it `accepts`; `argv` and `environment` are the command's own
    (local worker processes repeat the one and inherit the other)."""

    workers: int = 1
    argv: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)
    cpus_per_worker: int | None = None
    gpus_per_worker: int | None = None
    ray_address: str | None = None
    partition: str | None = None
    mem_gb: int | None = None
    time_min: int | None = None
    slurm_logs: Path = Path("slurm-logs")
    wait: bool = False


Launch = Callable[[Work], bool]  # start the workers; True once all have ended, False when submitted to run later


class Launcher(Protocol):
    """Starts a command's workers somewhere (see the module doc)."""

    accepts: tuple[str, ...]  # the `Placement` fields it reads beyond `workers`

    def ready(self, placement: Placement, console: Console) -> AbstractContextManager[Launch]:
        """Get ready to start the workers of `placement`, failing with one line (a UserError, within seconds, before
        anything is written) when they cannot start: the engine is not installed, its cluster does not answer, the
        resources asked for are absent. Inside, the launch; on leaving, what the launcher holds is let go."""


def run_placed(work: Work, place: Place, console: Console) -> None:
    """A worker placed on a node by Ray or Slurm (its process's entry point, as the command line is a command's: MLflow
    is quieted before it is imported): make the node ready, then work; what the node lacks is one line that names
    the worker (and so the node)."""
    quiet_mlflow(os.environ)
    try:
        work.prepare(place, console)
    except UserError as exc:
        raise UserError(f"worker {place.name}: {exc}") from None
    work(place, console)


def missing_engine(what: str, package: str) -> UserError:
    """The one line for a launcher whose engine is not installed."""
    return UserError(f"--on {what} needs {package}, which is not installed: pip install 'genclsbench[cluster]' (or, "
                     "in a checkout, pip install -c constraints.txt -e '.[cluster]')")
