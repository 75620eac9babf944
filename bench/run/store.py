"""The job store: which jobs of a namespace (an MLflow experiment) exist, and who runs, ran or failed each of them.

Workers share one store; it hands each job to exactly one of them (`claim`), with a lease that the holder renews
(`heartbeat`) while it works, so the job of a worker that died is claimed again once its lease has run out. Only the
holder of the current attempt can `complete`, `fail`, `prune` or `release` a job. Two implementations of the one
interface:

- `MemoryStore`: a dict behind a lock, for tests (milliseconds, an injectable clock);
- `SqlStore`: SQLite (one machine: `BEGIN IMMEDIATE` serialises claims) or PostgreSQL (many machines:
  `SELECT ... FOR UPDATE SKIP LOCKED`), with the store's own clock, so machines need not agree on the time.

A job is *claimable* when it is pending, when it runs under a lease that has run out, or when it failed or was pruned
(stopped on purpose by a search's pruner) before the claiming worker began (a later invocation retries it; within
one, such an end is final).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from typing import Protocol

from bench.run.interrupts import held_signals

PENDING, RUNNING, DONE, FAILED, PRUNED = "pending", "running", "done", "failed", "pruned"
ENDED_WITHOUT_RESULT = (FAILED, PRUNED)  # final within an invocation (its dependents fail), retried by a later one
DEFAULT_LEASE_S = 120.0  # seconds a claim lasts without a heartbeat: a dead worker's job waits this long at most
# the leases a worker may hold: a shorter one lapses under a live worker whose heartbeat is late; a longer one keeps a
# dead worker's job waiting for more than a day (and an infinite one overflows the heartbeat's timer)
MIN_LEASE_S, MAX_LEASE_S = 5.0, 86400.0

# When a job is claimable (see the module doc), written once for `JobState.claimable` and the SQL stores' claims: its
# status is one of `statuses` and, where a column is named, that store time (absent: 0) lies before the bound
# (`now`: the claim's store time; `retry`: the claiming worker's start, before which failures are retried).
CLAIMABLE: tuple[tuple[tuple[str, ...], str | None, str | None], ...] = (
    ((PENDING,), None, None),
    ((RUNNING,), "lease_until", "now"),
    (ENDED_WITHOUT_RESULT, "finished", "retry"),
)


@dataclass(frozen=True)
class JobRow:
    """What the store keeps of a job from the graph: key, kind, name and the keys it depends on."""

    key: str
    kind: str
    name: str
    deps: tuple[str, ...] = ()


@dataclass(frozen=True)
class JobState:
    """A job's state in the store: status, holder, attempt, MLflow run, times (store clock) and, for a job that
    ended without a result, why (a failure's line, or the pruner's reason)."""

    key: str
    kind: str
    name: str
    deps: tuple[str, ...]
    status: str = PENDING
    worker: str | None = None
    attempt: int = 0
    run_id: str | None = None
    started: float | None = None
    finished: float | None = None
    lease_until: float | None = None
    error: str | None = None

    def claimable(self, now: float, retry_failed_before: float) -> bool:
        bounds = {"now": now, "retry": retry_failed_before}
        return any(self.status in statuses and (column is None or (getattr(self, column) or 0) < bounds[bound])
                   for statuses, column, bound in CLAIMABLE)


@dataclass(frozen=True)
class Claim:
    """A job handed to one worker: the attempt it holds, and the job's state before the claim (a run id there is an
    earlier attempt's, e.g. of a worker that died)."""

    key: str
    worker: str
    attempt: int
    previous: JobState


class JobStore(Protocol):
    """The operations an executor runs against (see the module doc)."""

    def now(self) -> float: ...

    def register(self, rows: Sequence[JobRow]) -> None:
        """Add the jobs the store does not know yet (as pending); known ones are left as they are."""

    def states(self, keys: Sequence[str] | None = None) -> dict[str, JobState]:
        """The state of each known job among `keys` (all of the namespace's when None)."""

    def claim(self, keys: Sequence[str], worker: str, lease_s: float, retry_failed_before: float) -> Claim | None:
        """Atomically take the first claimable job of `keys` (in that order) for `worker`; None if there is none."""

    def started(self, claim: Claim, run_id: str) -> bool:
        """Link the MLflow run of the claimed attempt; False (and no change) when the claim is no longer this
        worker's."""

    def heartbeat(self, claim: Claim, lease_s: float) -> bool:
        """Extend the claim's lease; False when the claim is no longer this worker's."""

    def complete(self, claim: Claim, run_id: str) -> bool:
        """The attempt finished; False (and no change) when the claim is no longer this worker's."""

    def fail(self, claim: Claim, error: str) -> bool:
        """The attempt failed with `error` (one line)."""

    def prune(self, claim: Claim, reason: str) -> bool:
        """The attempt was stopped on purpose (a search's pruner judged it clearly worse), for `reason`."""

    def release(self, claim: Claim) -> bool:
        """Give the job back (an interrupted worker): pending again, at once claimable by another; False (and no
        change) when the claim is no longer this worker's."""

    def parent_run(self, grid: str, create: Callable[[], str]) -> str:
        """The run id of `grid`'s parent run, made by `create` once for every worker and invocation."""

    def serialized(self) -> AbstractContextManager[None]:
        """A section no two workers of this store run at once (creating the tracking store and its experiment:
        MLflow's own schema creation is not safe when several processes start together)."""


def _holds(state: JobState | None, claim: Claim) -> bool:
    return state is not None and state.status == RUNNING and state.worker == claim.worker \
        and state.attempt == claim.attempt


class MemoryStore:
    """The job store as a dict behind a lock (tests). `clock` returns seconds; time.time by default."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._jobs: dict[str, JobState] = {}
        self._parents: dict[str, str] = {}
        self._lock = threading.RLock()

    def now(self) -> float:
        return self.clock()

    def register(self, rows: Sequence[JobRow]) -> None:
        with self._lock:
            for row in rows:
                self._jobs.setdefault(row.key, JobState(row.key, row.kind, row.name, row.deps))

    def states(self, keys: Sequence[str] | None = None) -> dict[str, JobState]:
        with self._lock:
            return {k: s for k, s in self._jobs.items() if keys is None or k in set(keys)}

    def claim(self, keys: Sequence[str], worker: str, lease_s: float, retry_failed_before: float) -> Claim | None:
        with self._lock:
            now = self.now()
            for key in keys:
                state = self._jobs.get(key)
                if state is not None and state.claimable(now, retry_failed_before):
                    self._jobs[key] = replace(state, status=RUNNING, worker=worker, attempt=state.attempt + 1,
                                              run_id=None, started=now, finished=None, lease_until=now + lease_s,
                                              error=None)
                    return Claim(key, worker, state.attempt + 1, state)
            return None

    def _update(self, claim: Claim, **changes) -> bool:
        with self._lock:
            if not _holds(self._jobs.get(claim.key), claim):
                return False
            self._jobs[claim.key] = replace(self._jobs[claim.key], **changes)
            return True

    def started(self, claim: Claim, run_id: str) -> bool:
        return self._update(claim, run_id=run_id)

    def heartbeat(self, claim: Claim, lease_s: float) -> bool:
        return self._update(claim, lease_until=self.now() + lease_s)

    def complete(self, claim: Claim, run_id: str) -> bool:
        return self._update(claim, status=DONE, run_id=run_id, finished=self.now(), lease_until=None)

    def fail(self, claim: Claim, error: str) -> bool:
        return self._end(claim, FAILED, error)

    def prune(self, claim: Claim, reason: str) -> bool:
        return self._end(claim, PRUNED, reason)

    def _end(self, claim: Claim, status: str, reason: str) -> bool:
        return self._update(claim, status=status, finished=self.now(), lease_until=None, error=reason)

    def release(self, claim: Claim) -> bool:
        return self._update(claim, status=PENDING, worker=None, lease_until=None)

    def parent_run(self, grid: str, create: Callable[[], str]) -> str:
        with self._lock:
            if grid not in self._parents:
                self._parents[grid] = create()
            return self._parents[grid]

    def serialized(self) -> AbstractContextManager[None]:
        return self._lock


_COLUMNS = ("key", "kind", "name", "deps", "status", "worker", "attempt", "run_id", "started", "finished",
            "lease_until", "error")
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS genclsbench_jobs (
        namespace VARCHAR(500) NOT NULL, key VARCHAR(64) NOT NULL, kind VARCHAR(32) NOT NULL,
        name TEXT NOT NULL, deps TEXT NOT NULL, status VARCHAR(16) NOT NULL, worker VARCHAR(300),
        attempt INTEGER NOT NULL, run_id VARCHAR(64), started DOUBLE PRECISION, finished DOUBLE PRECISION,
        lease_until DOUBLE PRECISION, error TEXT, PRIMARY KEY (namespace, key))""",
    """CREATE TABLE IF NOT EXISTS genclsbench_parents (
        namespace VARCHAR(500) NOT NULL, grid VARCHAR(500) NOT NULL, run_id VARCHAR(64) NOT NULL,
        PRIMARY KEY (namespace, grid))""",
)


def _claimable_sql() -> str:
    """`CLAIMABLE` as a SQL condition on a job's row, with the bounds as the parameters `:now` and `:retry`."""
    clauses = []
    for statuses, column, bound in CLAIMABLE:
        clause = "status IN (" + ", ".join(f"'{status}'" for status in statuses) + ")"
        clauses.append(f"({clause} AND COALESCE({column}, 0) < :{bound})" if column else f"({clause})")
    return "(" + " OR ".join(clauses) + ")"


class SqlStore:
    """The job store in a SQL database (SQLite or PostgreSQL, through SQLAlchemy), for one `namespace`."""

    def __init__(self, uri: str, namespace: str) -> None:
        from sqlalchemy import create_engine, event

        self.namespace = namespace
        self.postgres = uri.startswith("postgresql")
        if self.postgres:
            self.engine = create_engine(uri, pool_pre_ping=True, connect_args={"connect_timeout": 10})
        else:  # autocommit at the driver; every transaction is BEGIN IMMEDIATE, which serialises writers
            self.engine = create_engine(uri, connect_args={"timeout": 60, "isolation_level": None})
            event.listen(self.engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
        with self._transaction() as db:
            if self.postgres:  # concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalogue
                db.exec_driver_sql("SELECT pg_advisory_xact_lock(7468190)")
            for statement in _SCHEMA:
                db.exec_driver_sql(statement)

    @contextmanager
    def _transaction(self) -> Iterator:
        with held_signals(), self.engine.begin() as db:  # never cut by Ctrl-C (`bench.run.interrupts`)
            yield db

    def _now(self, db) -> float:
        query = "SELECT EXTRACT(EPOCH FROM clock_timestamp())" if self.postgres \
            else "SELECT (julianday('now') - 2440587.5) * 86400.0"
        return float(db.exec_driver_sql(query).scalar())

    def now(self) -> float:
        with self.engine.connect() as db:
            return self._now(db)

    def register(self, rows: Sequence[JobRow]) -> None:
        from sqlalchemy import text

        known = set(self.states())
        fresh = [r for r in rows if r.key not in known]
        if not fresh:
            return
        conflict = "ON CONFLICT (namespace, key) DO NOTHING"
        with self._transaction() as db:
            db.execute(text(f"INSERT INTO genclsbench_jobs (namespace, key, kind, name, deps, status, attempt) "
                            f"VALUES (:ns, :key, :kind, :name, :deps, '{PENDING}', 0) {conflict}"),
                       [{"ns": self.namespace, "key": r.key, "kind": r.kind, "name": r.name,
                         "deps": json.dumps(list(r.deps))} for r in fresh])

    @staticmethod
    def _state(row) -> JobState:
        values = dict(zip(_COLUMNS, row))
        return JobState(**(values | {"deps": tuple(json.loads(values["deps"]))}))

    def states(self, keys: Sequence[str] | None = None) -> dict[str, JobState]:
        from sqlalchemy import text

        with self.engine.connect() as db:
            rows = db.execute(text(f"SELECT {', '.join(_COLUMNS)} FROM genclsbench_jobs WHERE namespace = :ns"),
                              {"ns": self.namespace}).all()
        wanted = None if keys is None else set(keys)
        return {s.key: s for s in map(self._state, rows) if wanted is None or s.key in wanted}

    def claim(self, keys: Sequence[str], worker: str, lease_s: float, retry_failed_before: float) -> Claim | None:
        from sqlalchemy import text

        if not keys:
            return None
        claimable = _claimable_sql()
        with self._transaction() as db:
            now = self._now(db)
            values = {"ns": self.namespace, "running": RUNNING, "now": now, "retry": retry_failed_before}
            if self.postgres:
                found = db.execute(text(
                    f"SELECT {', '.join(_COLUMNS)} FROM genclsbench_jobs WHERE namespace = :ns AND key = ANY(:keys) "
                    f"AND {claimable} ORDER BY array_position(CAST(:keys AS TEXT[]), CAST(key AS TEXT)) LIMIT 1 "
                    "FOR UPDATE SKIP LOCKED"), values | {"keys": list(keys)}).first()
            else:
                rows = db.execute(text(f"SELECT {', '.join(_COLUMNS)} FROM genclsbench_jobs WHERE namespace = :ns "
                                       f"AND {claimable}"), values).all()
                by_key = {row[0]: row for row in rows}
                found = next((by_key[k] for k in keys if k in by_key), None)
            if found is None:
                return None
            previous = self._state(found)
            db.execute(text("UPDATE genclsbench_jobs SET status = :running, worker = :worker, attempt = :attempt, "
                            "run_id = NULL, started = :now, finished = NULL, lease_until = :lease, error = NULL "
                            "WHERE namespace = :ns AND key = :key"),
                       values | {"worker": worker, "attempt": previous.attempt + 1, "lease": now + lease_s,
                                 "key": previous.key})
        return Claim(previous.key, worker, previous.attempt + 1, previous)

    def _update(self, claim: Claim, assignments: str, **values) -> bool:
        """Apply `assignments` to the claimed job if the claim still holds it (`:now` is the store's clock)."""
        from sqlalchemy import text

        with self._transaction() as db:
            changed = db.execute(text(
                f"UPDATE genclsbench_jobs SET {assignments} WHERE namespace = :ns AND key = :key AND status = :running "
                "AND worker = :worker AND attempt = :attempt"),
                {"ns": self.namespace, "key": claim.key, "running": RUNNING, "worker": claim.worker,
                 "attempt": claim.attempt, "now": self._now(db), **values}).rowcount
        return changed == 1

    def started(self, claim: Claim, run_id: str) -> bool:
        return self._update(claim, "run_id = :run_id", run_id=run_id)

    def heartbeat(self, claim: Claim, lease_s: float) -> bool:
        return self._update(claim, "lease_until = :now + :lease", lease=lease_s)

    def complete(self, claim: Claim, run_id: str) -> bool:
        return self._update(claim, "status = :done, run_id = :run_id, finished = :now, lease_until = NULL",
                            done=DONE, run_id=run_id)

    def fail(self, claim: Claim, error: str) -> bool:
        return self._end(claim, FAILED, error)

    def prune(self, claim: Claim, reason: str) -> bool:
        return self._end(claim, PRUNED, reason)

    def _end(self, claim: Claim, status: str, reason: str) -> bool:
        return self._update(claim, "status = :status, finished = :now, lease_until = NULL, error = :error",
                            status=status, error=reason)

    def release(self, claim: Claim) -> bool:
        return self._update(claim, "status = :pending, worker = NULL, lease_until = NULL", pending=PENDING)

    def parent_run(self, grid: str, create: Callable[[], str]) -> str:
        from sqlalchemy import text

        with self._transaction() as db:
            if self.postgres:  # one creator per (namespace, grid); SQLite's BEGIN IMMEDIATE already serialises
                db.execute(text("SELECT pg_advisory_xact_lock(hashtext(:id))"), {"id": f"{self.namespace}/{grid}"})
            values = {"ns": self.namespace, "grid": grid}
            run_id = db.execute(text("SELECT run_id FROM genclsbench_parents WHERE namespace = :ns AND grid = :grid"),
                                values).scalar()
            if run_id is None:
                run_id = create()
                db.execute(text("INSERT INTO genclsbench_parents (namespace, grid, run_id) VALUES (:ns, :grid, :run)"),
                           values | {"run": run_id})
        return run_id

    @contextmanager
    def serialized(self) -> Iterator[None]:
        with self._transaction() as db:  # SQLite: BEGIN IMMEDIATE holds the store's write lock until the end
            if self.postgres:
                db.exec_driver_sql("SELECT pg_advisory_xact_lock(7468191)")
            yield
