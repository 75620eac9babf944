"""Shared fixtures: a per-session model cache (tiny-random is built once) and a per-test MLflow store."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep tests away from the user's cache; tiny-random is built here once per session."""
    import os

    os.environ["GENCLSBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tiny_lm():
    from runners.models import load_model

    return load_model("tiny-random", "float32")


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch) -> str:
    """An empty SQLite MLflow store in the test's directory (which is also the working directory)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A model cache of the test's own (trained stages and reasonings start empty; the tiny model is shared)."""
    import os
    from pathlib import Path

    from runners.models import model_folder

    shared = Path(os.environ["GENCLSBENCH_CACHE"]) / "models" / "tiny-random"
    model_folder("tiny-random")
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "tiny-random").symlink_to(shared)
    monkeypatch.setenv("GENCLSBENCH_CACHE", str(cache))
    return cache
