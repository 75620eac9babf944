"""Where a run's records go: the MLflow tracking URI, the job store URI and the Optuna storage, resolved once at the
edge from the command line and the caller's environment, checked before anything is written, and shown with every
credential masked (`mask`, the one function every printer and writer of a URI or an error goes through)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote

from bench.plan.errors import UserError

DEFAULT_STORE_FILE = "mlflow.db"
DATABASES = ("sqlite:///", "postgresql://", "postgresql+psycopg://")  # a job store and an Optuna storage
TRACKING = (*DATABASES, "http://", "https://")  # an MLflow tracking store (MLflow 3 refuses a file: store)
MLFLOW_TABLE = "experiments"  # a SQLite file with tables, none of them this one, is not an MLflow tracking store
# `bench run --workers N` hands its stores to its worker processes in the environment (see `worker_handoff`)
WORKER_ENVIRONMENT = {"--tracking-uri": "GENCLSBENCH_WORKER_TRACKING_URI", "--store": "GENCLSBENCH_WORKER_STORE_URI",
                      "--storage": "GENCLSBENCH_WORKER_STORAGE_URI"}


def with_driver(uri: str) -> str:
    """A `postgresql://` URI names the installed driver, psycopg 3 (SQLAlchemy would look for psycopg2)."""
    return "postgresql+psycopg://" + uri.removeprefix("postgresql://") if uri.startswith("postgresql://") else uri


def tracking_uri(explicit: str | None, environment: dict[str, str]) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else mlflow.db in the working directory; a SQLite file as an
    absolute path (MLflow caches stores by URI string, so a relative one would follow the first working directory)."""
    uri = explicit or environment.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_STORE_FILE}"
    return absolute(usable(uri, "tracking store", TRACKING))


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
        return absolute(usable(explicit, "job store", DATABASES))
    path = sqlite_path(tracking)
    if path is not None:
        return f"sqlite:///{path.with_name(f'{path.stem}-jobs.db')}"
    if tracking.startswith("postgresql"):
        return tracking
    raise UserError(f"the tracking store {mask(tracking)} has no place for the job store: give --store "
                    "postgresql://user@host/db (workers on several machines) or --store sqlite:///jobs.db "
                    "(one machine)")


def storage_uri(uri: str) -> str:
    """--storage of `bench search`: an Optuna RDB storage, SQLite or PostgreSQL."""
    return usable(uri, "Optuna storage", DATABASES)


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_VALUE = re.compile(r"(?i)\b([\w.-]*(?:password|passwd|pwd|secret|token))(\s*=\s*)"  # then: not *** again
                           r"(?!\*\*\*(?:[\s&'\")]|$))('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&]*)")


def mask(text: str) -> str:
    """`text` (a URI, or a line quoting some) with every credential replaced by ***: the password of a URI's user
    part, whatever characters it holds (a PostgreSQL password may hold '/', '?' or '@': everything up to the last
    '@' before the next URI is taken as the user part, masking too much rather than too little), and the value of
    every password-like key, as a URI's query (`?password=...`) or PostgreSQL's keyword/value form
    (`host=... password=...`) writes it."""
    starts = [m.start() for m in _SCHEME.finditer(text)]
    pieces = [text[:starts[0]] if starts else text]
    for start, end in zip(starts, [*starts[1:], len(text)]):
        pieces.append(_masked_userinfo(text[start:end]))
    return _SECRET_VALUE.sub(r"\1\2***", "".join(pieces))


def _masked_userinfo(uri: str) -> str:
    """`uri` (and what follows it on its line) with the password of its user part masked."""
    scheme, rest = uri.split("://", 1)
    line, newline, after = rest.partition("\n")
    userinfo, at, host = line.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}{newline}{after}"


def split_credentials(uri: str) -> tuple[str, dict[str, str]]:
    """An http(s) tracking URI without its `user:password@`, and those (percent-decoded) as the variables MLflow
    reads its basic-auth credentials from, MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD; any other URI
    unchanged (a database driver reads the credentials of its own URI)."""
    if not uri.startswith(("http://", "https://")):
        return uri, {}
    scheme, rest = uri.split("://", 1)
    userinfo, at, host = rest.rpartition("@")
    if not at:
        return uri, {}
    user, _, password = userinfo.partition(":")
    return f"{scheme}://{host}", {"MLFLOW_TRACKING_USERNAME": unquote(user),
                                  "MLFLOW_TRACKING_PASSWORD": unquote(password)}


def worker_handoff(argv: Sequence[str], uris: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The arguments and the added environment of a worker process of `bench run ARGV` (or `bench search ARGV`;
    `uris`: the store URIs this process resolved, by option): those URIs, which may hold a password, travel in the
    environment (readable by its user only) instead of the arguments (which `ps` shows every user); the worker reads
    them back at the edge."""
    kept: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in WORKER_ENVIRONMENT:
            next(args, None)  # `--store URI`: its URI
        elif arg.split("=", 1)[0] not in WORKER_ENVIRONMENT:  # `--store=URI` goes whole
            kept.append(arg)
    return kept, {WORKER_ENVIRONMENT[option]: uri for option, uri in uris.items()}


def usable(uri: str, what: str, schemes: tuple[str, ...]) -> str:
    """`uri` with its driver named (`with_driver`), or one line when it is not of a kind a `what` can be (`schemes`)
    or a SQLite URI names no file."""
    if not uri.startswith(schemes):
        kinds = "sqlite:///path.db (one machine), postgresql://user@host/db or http://host:port (an mlflow server)" \
            if "http://" in schemes else "sqlite:///path.db (one machine) or postgresql://user@host/db (many machines)"
        raise UserError(f"the {what} URI '{mask(uri)[:80]}' is not one bench can use: give {kinds}")
    path = sqlite_path(uri)
    if path is not None and not path.name:
        raise UserError(f"the {what} URI '{uri}' names no file: give sqlite:///path/to/file.db")
    return with_driver(uri)


def rdb_storage(uri: str, **options):
    """Optuna's RDB storage at `uri` (resolved: `storage_uri`), with `options` (RDBStorage's); one that cannot be
    opened is one UserError line."""
    from optuna.storages import RDBStorage

    try:
        return RDBStorage(with_driver(uri), engine_kwargs={"pool_pre_ping": True}, **options)
    except Exception as exc:  # noqa: BLE001 - a database that cannot be opened: one line
        raise UserError(f"cannot open the Optuna storage {mask(uri)} ({type(exc).__name__}: "
                        f"{mask(str(exc).splitlines()[0])})") from None


def check_reachable(uri: str, what: str, timeout_s: float = 8.0, create: bool = True,
                    holds: str | None = None) -> None:
    """Fail at once with one line when the store at `uri` (resolved: `tracking_uri`, `job_store_uri`,
    `storage_uri`) cannot be used: a SQLite file that is not a database, not a file (a folder, a device), holds
    tables but not `holds` (another program's database, which the store would fill with its own tables), or is
    missing (`create`: it is to be made, so a folder on its path must take it; otherwise it must exist), a
    PostgreSQL driver that is not installed, or a server (an MLflow tracking server, a PostgreSQL database) that does
    not answer within `timeout_s` (instead of hanging in the client's retries). Writes nothing."""
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite(path, what, create, holds)
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


def _check_sqlite(path: Path, what: str, create: bool, holds: str | None) -> None:
    import sqlite3

    if path.exists() and not path.is_file():
        raise UserError(f"the {what} {path} is not a file (a folder or a device); give a .db file's path")
    if path.is_file():
        try:
            connection = sqlite3.connect(path)  # read-only mode cannot read a live WAL database
            try:
                tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            finally:
                connection.close()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"the {what} {path} is not a readable SQLite database ({exc}); give another file, or "
                            "move this one away to start afresh") from None
        if holds and tables and holds not in tables:
            raise UserError(f"the {what} {path} is another program's database (its tables: "
                            f"{', '.join(sorted(tables)[:4])}{', ...' if len(tables) > 4 else ''}), not a {what}; "
                            f"give the {what}'s own file")
    elif create:
        try:
            probe_writable(path.parent)  # the store is to be made there (its folders too)
        except OSError as exc:
            raise UserError(f"cannot create the {what} {path} ({exc.strerror}); give a file in a folder you can "
                            f"write, e.g. sqlite:///$HOME/{path.name}") from None
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
