"""Progress of a worker: what runs now, how far it is, and when the whole grid should be done.

The grid's ETA is counted in evaluation examples (not in runs, whose sizes differ by orders of magnitude): the rate
is measured on the examples this worker has evaluated. On a terminal a live display shows it; when the output is a
file (a log, a CI job) a line is written every `interval` seconds instead, so a long job never goes silent.

Output never stops the work: a line that cannot be written (`bench run | head`, the parent of `--workers` gone, a
full disk) is dropped, and a closed pipe silences the console (`TerminalConsole`) instead of ending the process.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

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
    written is dropped (see the module doc)."""
    with contextlib.suppress(OSError):
        console.print(printable(line), highlight=False, markup=False)


class Reporter(Protocol):
    """What the executor tells about its work."""

    def plan(self, examples: int) -> None:
        """The evaluation examples the grid still has to do (the unit of the grid's ETA)."""

    def start(self, name: str, unit: str) -> None:
        """A job begins (`unit`: what its progress counts: examples, steps)."""

    def advance(self, done: int, total: int) -> None:
        """The running job has done `done` of `total` units."""

    def end(self, line: str, examples: int = 0) -> None:
        """The running job ended (`line`: its outcome); it evaluated `examples` of the grid's examples."""

    def note(self, line: str) -> None:
        """A line that is no job's progress."""


class _Meter:
    """The grid's example count and rate, shared by both displays."""

    def __init__(self) -> None:
        self.total = self.done = 0
        self.started = time.monotonic()
        self.job_done = self.job_total = 0
        self.job_unit = ""

    def eta(self) -> float | None:
        """Seconds until the grid's examples are done, at the rate measured so far (running job included)."""
        done = self.done + (self.job_done if self.job_unit == "examples" else 0)
        if done <= 0 or self.total <= 0:
            return None
        return (time.monotonic() - self.started) / done * max(0, self.total - done)


class LineReporter(_Meter):
    """Plain lines: one per job start and end, and one every `interval` seconds while a job runs (from a timer, so a
    batch that takes minutes is no silence)."""

    def __init__(self, console: Console, interval: float = 30.0) -> None:
        super().__init__()
        self.console, self.interval = console, interval
        self.name, self.job_started = "", time.monotonic()
        self._stop: threading.Event | None = None

    def plan(self, examples: int) -> None:
        self.total = examples

    def start(self, name: str, unit: str) -> None:
        self.name, self.job_unit, self.job_done, self.job_total = name, unit, 0, 0
        self.job_started = time.monotonic()
        say(self.console, f"start {name}")
        self._stop = threading.Event()
        threading.Thread(target=self._tick, args=(self._stop,), daemon=True).start()

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            done = f"{self.job_done}/{self.job_total} {self.job_unit}" if self.job_total else f"0 {self.job_unit} yet"
            say(self.console, f"  {self.name}: {done}, running {clock(time.monotonic() - self.job_started)}; "
                              f"grid eta {clock(self.eta())}")

    def advance(self, done: int, total: int) -> None:
        self.job_done, self.job_total = done, total

    def end(self, line: str, examples: int = 0) -> None:
        if self._stop is not None:
            self._stop.set()
        self.done += examples
        self.job_unit = ""
        say(self.console, line)

    def note(self, line: str) -> None:
        say(self.console, line)


class LiveReporter(_Meter):
    """A live display on a terminal: the grid's examples with its ETA, and the running job's bar."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[unit]}"), TimeElapsedColumn(),
                                 TextColumn("{task.fields[eta]}"), console=console)
        self.grid: TaskID | None = None
        self.job: TaskID | None = None

    def __enter__(self) -> LiveReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def _refresh_grid(self) -> None:
        if self.grid is not None:
            done = self.done + (self.job_done if self.job_unit == "examples" else 0)
            self.progress.update(self.grid, completed=done, eta=f"eta {clock(self.eta())}")

    def plan(self, examples: int) -> None:
        self.total = examples
        self.grid = self.progress.add_task("grid", total=examples, unit="examples", eta="eta -:--:--")

    def start(self, name: str, unit: str) -> None:
        self.job_unit, self.job_done, self.job_total = unit, 0, 0
        self.job = self.progress.add_task(f"  {printable(name)}", total=None, unit=unit, eta="")

    def advance(self, done: int, total: int) -> None:
        self.job_done, self.job_total = done, total
        if self.job is not None:
            self.progress.update(self.job, completed=done, total=total)
        self._refresh_grid()

    def end(self, line: str, examples: int = 0) -> None:
        self.done += examples
        self.job_unit = ""
        if self.job is not None:
            self.progress.remove_task(self.job)
            self.job = None
        self._refresh_grid()
        say(self.progress.console, line)

    def note(self, line: str) -> None:
        say(self.progress.console, line)
