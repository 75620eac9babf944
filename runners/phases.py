"""Where a run's time goes: wall seconds per named phase, summed over every time the phase is entered. A run owns
one `Phases` and hands it down to what it calls; the phases it records do not overlap, so their sum is the part of
the run's wall time they account for. Logged on every evaluation run as `time.<phase>_s` metrics and printed by
`bench run --profile`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

PHASE_PREFIX = "time."  # the metrics of an evaluation run's phases: time.<phase>_s
PHASE_ORDER = ("load", "retrieval", "prompts", "tokenise", "prefix", "score", "generate", "calibrate", "metrics",
               "record")  # the order a run goes through them, and `--profile` shows them


class Phases:
    """Seconds per phase of one run (see the module doc)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Time the block as (a part of) phase `name`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def metrics(self) -> dict[str, float]:
        """The phases as run metrics, `time.<phase>_s`."""
        return {f"{PHASE_PREFIX}{name}_s": seconds for name, seconds in self.seconds.items()}


def phase_seconds(metrics: dict[str, float]) -> dict[str, float]:
    """A run's phases read back from its metrics, in `PHASE_ORDER` (a phase the run did not enter left out)."""
    found = {key[len(PHASE_PREFIX):-2]: value for key, value in metrics.items()
             if key.startswith(PHASE_PREFIX) and key.endswith("_s")}
    return {name: found[name] for name in sorted(found, key=lambda n: (PHASE_ORDER + (n,)).index(n))}
