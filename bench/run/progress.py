"""Progress of a worker: what runs now, how far it is, and when the whole grid should be done.

The grid's ETA is counted in the estimated model tokens of its jobs (`bench/plan/cost.py`), each at the rate
measured for its kind of work on this worker: a token scored, a token generated and a token trained take very
different times, so each kind's seconds per token come from the jobs of that kind done so far and the running
job's own progress (a kind not seen yet takes the rate of all the work so far). The running job's share advances
with it, a training job's with its steps, so the ETA moves while the work does. On a terminal a live display shows
it; when the output is a file (a log, a CI job) a line is written every `interval` seconds instead, so a long job
never goes silent.

Output never stops the work: a line that cannot be written (`bench run | head`, the parent of `--workers` gone, a
full disk) is dropped, and a closed pipe silences the console (`TerminalConsole`) instead of ending the process.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from bench.plan.cost import Cost
from bench.plan.errors import printable


def clock(seconds: float | None) -> str:
    """h:mm:ss (-:--:-- when unknown)."""
    if seconds is None:
        return "-:--:--"
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TerminalConsole(Console):
    """The command line's console. rich answers a closed pipe by ending the process (SystemExit), which would stop a
    worker in the middle of a job; this one falls silent and lets the work go on."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        with contextlib.suppress(OSError, ValueError):  # a file of no descriptor (a buffer) has nothing to redirect
            descriptor = self.file.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, descriptor)  # what is still buffered for it, flushed at exit, goes nowhere either
            os.close(devnull)


def say(console: Console, line: str) -> None:
    """Print one line as it is: no markup, no highlighting, and the names in it `printable`; a line that cannot be
    written is dropped (see the module doc). Into a file (a log, a CI job) it stays one line, however long: rich
    would break it at the console's width, inside a URI or a path; a terminal wraps it at word boundaries."""
    with contextlib.suppress(OSError):
        console.print(printable(line), highlight=False, markup=False, soft_wrap=not console.is_terminal)


class Reporter(Protocol):
    """What the executor tells about its work."""

    def plan(self, costs: Mapping[str, Cost]) -> None:
        """The estimated cost of each job the grid still has to do, by key (the unit of the grid's ETA)."""

    def start(self, key: str, name: str, unit: str) -> None:
        """Job `key` begins (`unit`: what its progress counts: examples, steps)."""

    def advance(self, done: float, total: int) -> None:
        """The running job has done `done` of `total` units (a fraction of one while a batch is under way)."""

    def end(self, key: str, line: str, finished: bool = False) -> None:
        """Job `key` ended, run here or failed without running (`line`: its outcome); `finished`: it is done, not
        failed, pruned or given back."""

    def note(self, line: str) -> None:
        """A line that is no job's progress."""


class _Meter:
    """The grid's estimated work and the rate of each kind of it, shared by both displays (see the module doc)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.costs: dict[str, Cost] = {}
        self.spent: dict[str, list[float]] = {}  # kind -> [seconds, tokens] of the jobs done here
        self.key, self.job_started = "", clock()
        self.job_done, self.job_total = 0.0, 0
        self.job_unit = ""

    def plan(self, costs: Mapping[str, Cost]) -> None:
        self.costs = {key: cost for key, cost in costs.items() if cost.tokens > 0}

    def _begin(self, key: str, unit: str) -> None:
        self.key, self.job_unit, self.job_done, self.job_total = key, unit, 0.0, 0
        self.job_started = self.clock()

    def _finish(self, key: str, finished: bool) -> None:
        cost = self.costs.pop(key, None)
        if finished and cost is not None and key == self.key:
            seconds_tokens = self.spent.setdefault(cost.kind, [0.0, 0.0])
            seconds_tokens[0] += self.clock() - self.job_started
            seconds_tokens[1] += cost.tokens
        self.key, self.job_unit = "", ""

    def _fraction(self) -> float:
        """How much of the running job is done, by its own progress."""
        return min(1.0, self.job_done / self.job_total) if self.job_total else 0.0

    def _seconds_per_token(self) -> dict[str, float]:
        """Each kind's measured seconds per token, the running job's progress included; "" for all the work."""
        spent = {kind: list(pair) for kind, pair in self.spent.items()}
        running = self.costs.get(self.key)
        if running is not None and self._fraction() > 0:
            pair = spent.setdefault(running.kind, [0.0, 0.0])
            pair[0] += self.clock() - self.job_started
            pair[1] += running.tokens * self._fraction()
        spent[""] = [sum(p[0] for p in spent.values()), sum(p[1] for p in spent.values())]
        return {kind: seconds / tokens for kind, (seconds, tokens) in spent.items() if tokens > 0}

    def eta(self) -> float | None:
        """Seconds until the grid's estimated work is done, each kind at its measured rate (None: nothing measured
        yet)."""
        rates = self._seconds_per_token()
        if "" not in rates:
            return None if self.costs else 0.0
        left = 0.0
        for key, cost in self.costs.items():
            share = 1.0 - self._fraction() if key == self.key else 1.0
            left += share * cost.tokens * rates.get(cost.kind, rates[""])
        return left


class LineReporter(_Meter):
    """Plain lines: one per job start and end, and one every `interval` seconds while a job runs (from a timer, so a
    batch that takes minutes is no silence). `scope`: what the ETA covers, the executor's plan: a grid (`bench run`)
    or a trial (`bench search` runs each trial's jobs as a plan of their own)."""

    def __init__(self, console: Console, interval: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 scope: str = "grid") -> None:
        super().__init__(clock)
        self.console, self.interval, self.scope = console, interval, scope
        self.name = ""
        self._stop: threading.Event | None = None

    def start(self, key: str, name: str, unit: str) -> None:
        self._begin(key, unit)
        self.name = name
        say(self.console, f"start {name}")
        self._stop = threading.Event()
        threading.Thread(target=self._tick, args=(self._stop,), daemon=True).start()

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            say(self.console, f"  {self.name}: {self._doing()}, running {clock(self.clock() - self.job_started)}; "
                              f"{self.scope} eta {clock(self.eta())}")

    def _doing(self) -> str:
        """How far the running job is: before its first unit, that it is loading; a generating batch counts its
        rows by the tokens written so far, so a fraction says it is under way (a reasoning batch writes for
        minutes before a whole example is done)."""
        if not self.job_total:
            return f"loading the model and data (no {self.job_unit} done yet)"
        if self.job_done % 1:
            return f"{self.job_done:.1f}/{self.job_total} {self.job_unit} (a batch is generating; counted by the " \
                   "tokens written)"
        return f"{int(self.job_done)}/{self.job_total} {self.job_unit}"

    def advance(self, done: float, total: int) -> None:
        self.job_done, self.job_total = done, total

    def end(self, key: str, line: str, finished: bool = False) -> None:
        if self._stop is not None:
            self._stop.set()
        self._finish(key, finished)
        say(self.console, line)

    def note(self, line: str) -> None:
        say(self.console, line)


class LiveReporter(_Meter):
    """A live display on a terminal: the grid's ETA, and the running job's bar."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[unit]}"), TimeElapsedColumn(),
                                 TextColumn("{task.fields[eta]}"), console=console)
        self.grid: TaskID | None = None
        self.job: TaskID | None = None
        self.jobs: dict[str, Cost] = {}  # every job of the plan, the grid bar's total

    def __enter__(self) -> LiveReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def _refresh_grid(self) -> None:
        if self.grid is not None:
            self.progress.update(self.grid, completed=len(self.jobs) - len(self.costs) + self._fraction(),
                                 eta=f"eta {clock(self.eta())}")

    def plan(self, costs: Mapping[str, Cost]) -> None:
        super().plan(costs)
        self.jobs = dict(self.costs)
        self.grid = self.progress.add_task("grid", total=len(self.jobs), unit="jobs", eta="eta -:--:--")

    def start(self, key: str, name: str, unit: str) -> None:
        self._begin(key, unit)
        self.job = self.progress.add_task(f"  {printable(name)}", total=None, unit=unit, eta="")

    def advance(self, done: float, total: int) -> None:
        self.job_done, self.job_total = done, total
        if self.job is not None:
            self.progress.update(self.job, completed=int(done), total=total)
        self._refresh_grid()

    def end(self, key: str, line: str, finished: bool = False) -> None:
        self._finish(key, finished)
        if self.job is not None:
            self.progress.remove_task(self.job)
            self.job = None
        self._refresh_grid()
        say(self.progress.console, line)

    def note(self, line: str) -> None:
        say(self.progress.console, line)
