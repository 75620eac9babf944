"""Where a run's records go: the MLflow tracking URI and the job store URI, resolved once at the edge from the
command line and the caller's environment, and shown with any password masked."""

from __future__ import annotations

import re
from pathlib import Path

from bench.plan.errors import UserError

DEFAULT_STORE_FILE = "mlflow.db"


def with_driver(uri: str) -> str:
    """A `postgresql://` URI names the installed driver, psycopg 3 (SQLAlchemy would look for psycopg2)."""
    return "postgresql+psycopg://" + uri.removeprefix("postgresql://") if uri.startswith("postgresql://") else uri


def tracking_uri(explicit: str | None, environment: dict[str, str]) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else mlflow.db in the working directory; a SQLite file as an
    absolute path (MLflow caches stores by URI string, so a relative one would follow the first working directory)."""
    uri = explicit or environment.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE_FILE}"
    known_scheme(uri, "tracking store")
    return absolute(with_driver(uri))


def absolute(uri: str) -> str:
    """A `sqlite:///` URI with its file as an absolute path, so that every worker opens the same file whatever its
    working directory (a Ray actor's or a Slurm task's is not the command's); other URIs as they are."""
    path = sqlite_path(uri)
    return f"sqlite:///{path.resolve()}" if path is not None else uri


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` URI (None for other URIs)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def job_store_uri(explicit: str | None, tracking: str) -> str:
    """--store, else beside the tracking store: a SQLite tracking file gets a SQLite job store next to it
    (`mlflow.db` -> `mlflow-jobs.db`), a PostgreSQL tracking database holds the job tables itself. Behind an MLflow
    server the job store must be named: workers on several machines have to share it."""
    if explicit:
        return absolute(with_driver(explicit))
    path = sqlite_path(tracking)
    if path is not None:
        return f"sqlite:///{path.with_name(f'{path.stem}-jobs.db')}"
    if tracking.startswith("postgresql"):
        return tracking
    raise UserError(f"the tracking store {mask(tracking)} has no place for the job store: give --store "
                    "postgresql://user@host/db (workers on several machines) or --store sqlite:///jobs.db "
                    "(one machine)")


def mask(uri: str) -> str:
    """`uri` with the password of its user part replaced by ***, for printing and writing."""
    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", uri)


SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg://", "http://", "https://", "file:")


def known_scheme(uri: str, what: str) -> None:
    """Fail with one line unless `uri` is of a kind bench can use."""
    if not uri.startswith(SCHEMES):
        raise UserError(f"the {what} URI '{mask(uri)[:80]}' is not one bench can use: give sqlite:///path.db (one "
                        "machine), postgresql://user@host/db or http://host:port (an mlflow server)")


def check_reachable(uri: str, what: str, timeout_s: float = 8.0, create: bool = True) -> None:
    """Fail at once with one line when the store at `uri` cannot be used: an unknown scheme, a SQLite file that is
    not a database, or that is missing (`create`: it is to be made, so its folder must take one; otherwise it must
    exist), a PostgreSQL driver that is not installed, or a server (an MLflow tracking server, a PostgreSQL
    database) that does not answer within `timeout_s` (instead of hanging in the client's retries)."""
    known_scheme(uri, what)
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite(path, what, create)
    elif uri.startswith(("http://", "https://")):
        _check_http(uri, what, timeout_s)
    elif uri.startswith("postgresql"):
        _check_postgresql(uri, what, timeout_s)


def probe_writable(folder: Path) -> None:
    """Raise OSError unless `folder` (or, while it does not exist, its nearest existing parent) takes a file; the
    probe leaves nothing behind."""
    import tempfile

    existing = next(p for p in [folder.absolute(), *folder.absolute().parents] if p.exists())
    with tempfile.TemporaryFile(dir=existing):
        pass


def _check_sqlite(path: Path, what: str, create: bool) -> None:
    import sqlite3

    if path.is_file():
        try:
            connection = sqlite3.connect(path)  # read-only mode cannot read a live WAL database
            try:
                connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                connection.close()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"the {what} {path} is not a readable SQLite database ({exc}); give another file, or "
                            "move this one away to start afresh") from None
    elif create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # the store is to be made there
            probe_writable(path.parent)
        except OSError as exc:
            raise UserError(f"cannot create the {what} {path} ({exc.strerror}); give a file in a folder you can "
                            "write, e.g. --tracking-uri sqlite:///$HOME/mlflow.db") from None
    else:
        raise UserError(f"no {what} at {path}; run `bench run` here first, or pass --tracking-uri")


def _check_http(uri: str, what: str, timeout_s: float) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot reach the {what} at {mask(uri)} ({reason}); start it (see "
                        "docs/clusters.md) or check the URI") from None


def _check_postgresql(uri: str, what: str, timeout_s: float) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = create_engine(uri, connect_args={"connect_timeout": int(timeout_s)})
    except ImportError as exc:
        raise UserError(f"the {what} at {mask(uri)} needs a PostgreSQL driver that is not installed ({exc.name}): "
                        "pip install 'psycopg[binary]'") from None
    try:
        with engine.connect():
            return
    except SQLAlchemyError as exc:
        first = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
        raise UserError(f"cannot connect to the {what} at {mask(uri)} ({mask(first)}); check that PostgreSQL "
                        "runs and the URI's user, password and database") from None
