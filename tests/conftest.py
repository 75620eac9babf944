"""Shared fixtures: a per-session model cache (tiny-random is built once) and a per-test MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep tests away from the user's cache (the CLI reads $GENCLSBENCH_CACHE); tiny-random is built here once."""
    root = tmp_path_factory.mktemp("cache")
    os.environ["GENCLSBENCH_CACHE"] = str(root)
    return root


@pytest.fixture(scope="session")
def tiny_folder(model_cache: Path) -> Path:
    from runners.model_registry import model_folder

    return model_folder("tiny-random", model_cache)


@pytest.fixture(scope="session")
def tiny_lm(tiny_folder: Path):
    from runners.models import load_model

    return load_model(tiny_folder, "float32")


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch) -> str:
    """An empty SQLite MLflow store in the test's directory (which is also the working directory)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch, tiny_folder):
    """A model cache of the test's own (job outputs and reasonings start empty; the tiny model is shared)."""
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "tiny-random").symlink_to(tiny_folder)
    monkeypatch.setenv("GENCLSBENCH_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """A PostgreSQL server (the databases `jobs`, `mlflow`, `optuna`) and an MLflow tracking server on it, both on
    127.0.0.1, started once for the tests that need them and stopped after; yields (tracking URI, server URI)."""
    from servers import mlflow_server, postgres, postgres_binary, require

    require(postgres_binary("initdb") is not None, "Debian's postgresql package")
    with postgres() as server:
        with mlflow_server(f"{server}/mlflow", tmp_path_factory.mktemp("artifacts")) as tracking:
            yield tracking, server
