"""A password never leaves the command line it was given on: in each credential form (a PostgreSQL URI's user part
holding '/', '?' and ':', a `?password=` query parameter, an MLflow server's `http://user:password@host`), `bench
run --workers 2`, `bench report` and `bench search` print it nowhere, write it into no file or MLflow artifact,
param or tag, and put it on no worker's command line (`ps`); the keyword/value form is refused without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.run.locations import mask, split_credentials, with_driver, worker_handoff

ROOT = Path(__file__).resolve().parent.parent
SECRET, HTTP_SECRET = "s/ec?re:t", "h/ttp?s3cret"  # a role's password; what the http form sends to the server
GRID = """name: masked
datasets: [emotion]
models: [tiny-random]
eval: {limit: 8}
inference: {batch_size: 4, max_new_tokens: 4}
baselines: []
strategies: {decoding: [generate, ppl]}
"""
SPACE = """name: masked_search
datasets: [emotion]
models: [tiny-random]
eval: {limit: 8}
inference: {batch_size: 4, max_new_tokens: 4}
search: {pruner: none}
strategies: {icl: [zero, random-1], decoding: [generate, ppl]}
"""


@pytest.mark.parametrize("text, shown", [
    ("postgresql://u:s/ec?re:t@h:5/db", "postgresql://u:***@h:5/db"),
    ("postgresql://u@h/db?sslmode=require&password=s/ec?re:t", "postgresql://u@h/db?sslmode=require&password=***"),
    ("host=h user=u password='s/ec re:t' dbname=d", "host=h user=u password=*** dbname=d"),
    ("http://u:h/ttp@h:5000", "http://u:***@h:5000"),
    ("tracking postgresql://u:a b@h/m, jobs postgresql+psycopg://u:c/d@h/j, experiment 'x'",
     "tracking postgresql://u:***@h/m, jobs postgresql+psycopg://u:***@h/j, experiment 'x'"),
    ("sqlite:////tmp/m.db and http://h:5000/#/experiments/1", "sqlite:////tmp/m.db and http://h:5000/#/experiments/1"),
])
def test_every_credential_form_is_masked_once_and_for_all(text, shown):
    assert mask(text) == shown and mask(shown) == shown


def test_http_credentials_go_to_mlflow_and_store_uris_to_workers_through_the_environment():
    assert split_credentials("https://us%40er:h/tt:p@host:5000/mlflow") == (
        "https://host:5000/mlflow", {"MLFLOW_TRACKING_USERNAME": "us@er", "MLFLOW_TRACKING_PASSWORD": "h/tt:p"})
    assert split_credentials("postgresql://u:p@h/db") == ("postgresql://u:p@h/db", {})
    argv, environment = worker_handoff(["search", "--tracking-uri", "T", "--store=S", "--workers", "2", "--storage",
                                        "O"], {"--tracking-uri": "t", "--store": "s", "--storage": "o"})
    assert argv == ["search", "--workers", "2"] and sorted(environment.values()) == ["o", "s", "t"]


def _bench(tmp_path: Path, *args: str, environment: dict[str, str] | None = None,
           seen: list[str] | None = None) -> str:
    """`bench ARGS` as a user runs it (exit 0 expected); `seen` collects the command lines of its worker processes
    (`ps`) while it runs."""
    process = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env=os.environ | {"PYTHONPATH": str(ROOT)} | (environment or {}))
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            listed = subprocess.run(["ps", "-eo", "args", "--no-headers", "-ww"], capture_output=True, text=True).stdout
            seen.extend(line for line in listed.splitlines() if "--as-worker" in line)

    watcher = threading.Thread(target=watch, daemon=True) if seen is not None else None
    if watcher:
        watcher.start()
    out, _ = process.communicate(timeout=600)
    done.set()
    assert process.returncode == 0, out
    return out


def _recorded(tracking: str, tmp_path: Path, experiments: tuple[str, ...]) -> str:
    """Every param and tag of every run of `experiments`, and every artifact they logged, as text."""
    client, texts = MlflowClient(tracking), []
    for name in experiments:
        for run in client.search_runs([client.get_experiment_by_name(name).experiment_id], max_results=500):
            texts.append(json.dumps([run.data.params, run.data.tags]))
            into = tmp_path / "artifacts" / run.info.run_id
            into.mkdir(parents=True)
            if client.list_artifacts(run.info.run_id):
                client.download_artifacts(run.info.run_id, "", str(into))
    return "\n".join(texts)


def _files(folder: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


def database(form: str, role: str, address: str, name: str) -> str:
    """The database `name` of `role` with its password in `form`: the query, else the user part (the job store and
    storage of the http form too)."""
    if form == "query":
        return f"postgresql://{role}@{address}/{role}_{name}?password={SECRET}"
    return f"postgresql://{role}:{SECRET}@{address}/{role}_{name}"


@pytest.mark.parametrize("form", ["user part", "query", "http"])
def test_no_output_file_artifact_or_worker_command_line_holds_the_password(tmp_path, fresh_cache, servers, form):
    server_uri, server = servers  # the MLflow server; postgresql+psycopg://bench:...@127.0.0.1:PORT, a superuser
    import psycopg

    address, role = server.split("@", 1)[1], f"masked_{form.replace(' ', '_')}"
    with psycopg.connect(server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True) as db:
        db.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
        for name in ("mlflow", "optuna"):
            db.execute(f"CREATE DATABASE {role}_{name} OWNER {role}")
    if form == "http":
        tracking = server_uri.replace("http://", f"http://someone:{HTTP_SECRET}@")
        stores = ["--tracking-uri", tracking, "--store", database(form, role, address, "mlflow")]
    else:
        tracking = database(form, role, address, "mlflow")
        stores = ["--tracking-uri", tracking]
    (tmp_path / "grid.yaml").write_text(GRID, encoding="utf-8")
    (tmp_path / "space.yaml").write_text(SPACE, encoding="utf-8")
    workers: list[str] = []
    outputs = [
        _bench(tmp_path, "run", "--grid", "grid.yaml", "--workers", "2", *stores, seen=workers),
        _bench(tmp_path, "report", "--experiment", "masked", "--tracking-uri", tracking),
        _bench(tmp_path, "search", "--space", "space.yaml", "--trials", "1", "--storage",
               database(form, role, address, "optuna"), *stores),
    ]
    assert workers, "ps saw the second worker's command line"
    assert (tmp_path / "report" / "masked" / "report.html").is_file()
    assert (tmp_path / "search" / "search.html").is_file()
    recorded = _recorded(with_driver(split_credentials(tracking)[0]), tmp_path, ("masked", "masked_search"))
    everything = "\n".join([*outputs, *workers, recorded, _files(tmp_path)])
    assert SECRET not in everything and HTTP_SECRET not in everything
    assert "***" in outputs[0]  # the plan line says where the runs go, masked


def test_the_keyword_value_form_is_refused_without_the_password(tmp_path, monkeypatch, capsys):
    from cli_runner import run_cli

    (tmp_path / "grid.yaml").write_text(GRID, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert run_cli(monkeypatch, "--grid", "grid.yaml", "--store", f"host=127.0.0.1 password='{SECRET}'") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the job store URI 'host=127.0.0.1 password=***' is not one bench can use" in err
    assert SECRET not in err and sorted(p.name for p in tmp_path.iterdir()) == ["grid.yaml"]
