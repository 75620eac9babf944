"""Where the suite keeps what it builds on this machine: converted models, job outputs (trained stages, written
reasonings, relabel confidences), per-example caches and the report's predictions. One root, chosen at the edge
(`--cache` / $GENCLSBENCH_CACHE / ~/.cache/genclsbench) and passed down: nothing below reads the environment."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runners.model_registry import CLASSIFIER, model_folder
from strategies.example import Example

COMPLETE = "genclsbench_complete.json"  # written last into a job's output folder: its presence means it is usable


def default_cache(environment: dict[str, str]) -> Path:
    """$GENCLSBENCH_CACHE, else ~/.cache/genclsbench (`environment`: the caller's, read once at the edge)."""
    return Path(environment.get("GENCLSBENCH_CACHE") or Path.home() / ".cache" / "genclsbench")


@dataclass(frozen=True)
class Workspace:
    """The cache root of this machine and the places under it."""

    root: Path

    def model(self, name: str, role: str = CLASSIFIER) -> Path:
        """The local folder of a model (built on first use for an alias)."""
        return model_folder(name, self.root, role)

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

    def embeddings(self, key: str) -> Path:
        """The cached sentence embeddings of one (retriever, demo pool), an .npy file."""
        return self.root / "embeddings" / f"{key}.npy"

    @property
    def report(self) -> Path:
        return self.root / "report"


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write` a file beside `path`, then rename it into place: a cache file is whole or absent, never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    write(staging)
    os.replace(staging, path)


def write_json(path: Path, data: object) -> None:
    _write_atomically(path, lambda staging: staging.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8"))


def cached_array(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """The array saved at `path`, computed and saved (atomically) on first use."""
    if path.is_file():
        return np.load(path)
    array = compute()

    def save(staging: Path) -> None:
        with staging.open("wb") as handle:
            np.save(handle, array)

    _write_atomically(path, save)
    return array


def per_example(cache: Path, examples: Sequence[Example], compute: Callable[[list[Example]], Sequence]) -> list:
    """One value per example from a JSON cache keyed by example id: `compute` runs on the missing examples only, and
    the cache is rewritten atomically with what it returns."""
    known = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
    missing = [e for e in examples if e.id not in known]
    if missing:
        known |= dict(zip((e.id for e in missing), compute(missing)))
        write_json(cache, known)
    return [known[e.id] for e in examples]
