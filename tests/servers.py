"""Real servers for the tests that need them, started here and stopped here, on 127.0.0.1 only: a throwaway
PostgreSQL cluster (Debian's `postgresql` package; .ci/run installs it) and an `mlflow server` on it; and the rule
for a server or program that is missing."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

USER, PASSWORD = "bench", "s3cret-pw"


def require(found: bool, what: str) -> None:
    """Skip a test whose server or program is missing on a developer's machine; fail it where `CI` is set, so CI
    never goes green with the test unrun (.ci/run installs what the tests need)."""
    if found:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide {what} (.ci/run installs it)")
    pytest.skip(f"needs {what} (.ci/run installs it)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def postgres_binary(name: str) -> str | None:
    """A PostgreSQL server program (Debian keeps them under /usr/lib/postgresql/<version>/bin)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@contextmanager
def postgres() -> Iterator[str]:
    """A PostgreSQL cluster of its own on 127.0.0.1 (password auth), with the databases `mlflow`, `jobs` and
    `optuna`; yields the URI of its server without a database name. Root runs the server as the `postgres` user, as
    Debian does."""
    initdb, pg_ctl = postgres_binary("initdb"), postgres_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL's server programs are not installed: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="genclsbench-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    password = root / "password"
    password.write_text(PASSWORD)
    if as_owner:
        shutil.chown(password, "postgres")
    port, data = free_port(), root / "data"
    subprocess.run([*as_owner, initdb, "-D", str(data), "-U", USER, "--auth=scram-sha-256",
                    f"--pwfile={password}"], check=True, capture_output=True)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root}"
    subprocess.run([*as_owner, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True)
    server = f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{port}"
    try:
        import psycopg

        with psycopg.connect(f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres", autocommit=True) as db:
            for name in ("mlflow", "jobs", "optuna"):
                db.execute(f"CREATE DATABASE {name}")
        yield server
    finally:
        subprocess.run([*as_owner, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mlflow_server(backend: str, artifacts: Path) -> Iterator[str]:
    """`mlflow server` on `backend` (a database URI), serving artifacts from `artifacts`; yields its address."""
    port = free_port()
    log = artifacts.parent / f"mlflow-server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination",
         str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{address}/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.5)
        yield address
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
