"""Where a run's records go: the MLflow tracking URI and the job store URI, resolved once at the edge from the
command line and the caller's environment, and shown with any password masked."""

from __future__ import annotations

import re
from pathlib import Path

from bench.errors import UserError

DEFAULT_STORE_FILE = "mlflow.db"


def with_driver(uri: str) -> str:
    """A `postgresql://` URI names the installed driver, psycopg 3 (SQLAlchemy would look for psycopg2)."""
    return "postgresql+psycopg://" + uri.removeprefix("postgresql://") if uri.startswith("postgresql://") else uri


def tracking_uri(explicit: str | None, environment: dict[str, str]) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else mlflow.db in the working directory (as an absolute path:
    MLflow caches stores by URI string, so a relative one would follow the first working directory)."""
    uri = explicit or environment.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE_FILE}"
    if uri == f"sqlite:///{DEFAULT_STORE_FILE}":
        return f"sqlite:///{Path(DEFAULT_STORE_FILE).resolve()}"
    return with_driver(uri)


def sqlite_path(uri: str) -> Path | None:
    """The file of a `sqlite:///` URI (None for other URIs)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def job_store_uri(explicit: str | None, tracking: str) -> str:
    """--store, else beside the tracking store: a SQLite tracking file gets a SQLite job store next to it
    (`mlflow.db` -> `mlflow-jobs.db`), a PostgreSQL tracking database holds the job tables itself. Behind an MLflow
    server the job store must be named: workers on several machines have to share it."""
    if explicit:
        return with_driver(explicit)
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


def check_reachable(uri: str, what: str, timeout_s: float = 8.0) -> None:
    """Fail within `timeout_s` with one line when the server behind `uri` (an MLflow tracking server, a PostgreSQL
    database) does not answer, instead of hanging in the client's retries."""
    if uri.startswith(("http://", "https://")):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
                return
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"cannot reach the {what} at {mask(uri)} ({reason}); start it (see the README's "
                            "'Many workers, many machines') or check the URI") from None
    if uri.startswith("postgresql"):
        from sqlalchemy import create_engine
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with create_engine(uri, connect_args={"connect_timeout": int(timeout_s)}).connect():
                return
        except SQLAlchemyError as exc:
            first = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
            raise UserError(f"cannot connect to the {what} at {mask(uri)} ({mask(first)}); check that PostgreSQL "
                            "runs and the URI's user, password and database") from None
