"""Timing two or more ways of doing the same work on a machine others share: run them in turns, several times, and
keep each one's least CPU time (and least wall time), so a burst of someone else's work does not decide a ratio."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


def cpu_seconds() -> float:
    """CPU seconds this process has used so far (user + system, every thread)."""
    times = os.times()
    return times.user + times.system


@dataclass(frozen=True)
class Timed:
    """Each side's least CPU and wall seconds over the repeats, and what its last run returned."""

    cpu: dict[str, float]
    wall: dict[str, float]
    results: dict[str, Any]


def alternate(sides: Mapping[str, Callable[[], Any]], repeats: int) -> Timed:
    """Run every side in turn, `repeats` rounds, timing each run."""
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    wall: dict[str, list[float]] = {name: [] for name in sides}
    results: dict[str, Any] = {}
    for _ in range(repeats):
        for name, run in sides.items():
            started, started_wall = cpu_seconds(), time.perf_counter()
            results[name] = run()
            cpu[name].append(cpu_seconds() - started)
            wall[name].append(time.perf_counter() - started_wall)
    return Timed({n: min(v) for n, v in cpu.items()}, {n: min(v) for n, v in wall.items()}, results)
