"""Where the suite keeps what it builds on this machine: converted models, job outputs (trained stages, written
reasonings, relabel confidences), per-example caches and the report's predictions. One root, chosen at the edge
(`--cache` / $GENCLSBENCH_CACHE / ~/.cache/genclsbench) and passed down: nothing below reads the environment."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runners.model_registry import model_folder
from strategies.example import Example

COMPLETE = "genclsbench_complete.json"  # written last into a job's output folder: its presence means it is usable


def default_cache(environment: dict[str, str]) -> Path:
    """$GENCLSBENCH_CACHE, else ~/.cache/genclsbench (`environment`: the caller's, read once at the edge)."""
    return Path(environment.get("GENCLSBENCH_CACHE") or Path.home() / ".cache" / "genclsbench")


@dataclass(frozen=True)
class Workspace:
    """The cache root of this machine and the places under it."""

    root: Path

    def model(self, name: str) -> Path:
        """The local folder of a model (built on first use for an alias)."""
        return model_folder(name, self.root)

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    def output(self, key: str) -> Path:
        """The output folder of a job: complete when it holds `COMPLETE`."""
        return self.jobs / key

    def is_complete(self, key: str) -> bool:
        return (self.output(key) / COMPLETE).is_file()

    def per_example(self, kind: str, identity: str) -> Path:
        """A JSON cache of one value per example id, shared by every job of `kind` with the same `identity`."""
        return self.root / kind / f"{identity.replace('/', '__')}.json"

    @property
    def report(self) -> Path:
        return self.root / "report"


def write_json(path: Path, data: object) -> None:
    """Write beside `path`, then rename: a cache file is whole or absent, never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(staging, path)


def per_example(cache: Path, examples: Sequence[Example], compute: Callable[[list[Example]], Sequence]) -> list:
    """One value per example from a JSON cache keyed by example id: `compute` runs on the missing examples only, and
    the cache is rewritten atomically with what it returns."""
    known = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
    missing = [e for e in examples if e.id not in known]
    if missing:
        known |= dict(zip((e.id for e in missing), compute(missing)))
        write_json(cache, known)
    return [known[e.id] for e in examples]
