"""`--on local` (the default): this process is the first worker, and `--workers N` adds N-1 processes of the same
command on this machine (`python -m bench ARGS --as-worker`), the CPU cores split among them; their lines are relayed
to this terminal. More machines join with the same command (see docs/clusters.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence

from rich.console import Console

from bench.run.launchers.interface import Launch, Place, Placement, Work


def _relay(process: subprocess.Popen, label: str, console: Console) -> threading.Thread:
    """Print a worker process's lines, prefixed with its label, from a thread (the live display stays intact)."""
    def pump() -> None:
        for line in process.stdout:
            console.print(f"[{label}] {line.rstrip()}", highlight=False, markup=False)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def spawn_workers(argv: Sequence[str], count: int, threads: int, environment: dict[str, str],
                  console: Console) -> list[subprocess.Popen]:
    """`count` more worker processes of the same command (`argv`: its arguments), each with `threads` CPU threads for
    torch, their output relayed to this console."""
    command = [sys.executable, "-m", "bench", *argv, "--as-worker"]
    environment = environment | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                                 "PYTHONUNBUFFERED": "1"}  # lines, as they come
    processes = []
    for n in range(count):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=environment)
        _relay(process, f"worker {n + 2}", console)
        processes.append(process)
    return processes


def join_workers(processes: Sequence[subprocess.Popen], interrupted: bool) -> None:
    """Wait for the other workers: they end by themselves once nothing is left; when this one was interrupted, they
    are asked to stop first (each ends its running job KILLED and gives it back)."""
    for process in processes:
        if interrupted and process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=120)


class LocalLauncher:
    """Worker processes on this machine (see the module doc)."""

    accepts: tuple[str, ...] = ()

    @contextlib.contextmanager
    def ready(self, placement: Placement, console: Console) -> Iterator[Launch]:
        def launch(work: Work) -> bool:
            count = placement.workers
            threads = max(1, len(os.sched_getaffinity(0)) // count) if count > 1 else None
            here = Place(None, None, threads, placement.environment)
            work.prepare(here, console)
            others = spawn_workers(placement.argv, count - 1, threads, placement.environment, console) \
                if count > 1 else []
            try:
                work(here, console)
            except BaseException:
                join_workers(others, interrupted=True)
                raise
            join_workers(others, interrupted=False)
            return True

        yield launch
