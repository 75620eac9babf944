"""Bad stores and folders given on the command line: one line on stderr, exit code 2, nothing written."""

from __future__ import annotations

import json
import re
import sys

import pytest
from cli_runner import bench

BOGUS = "is not one bench can use: give sqlite:///path.db"


@pytest.mark.parametrize("args, message", [
    (["run", "--tracking-uri", "bogus://x"], f"the tracking store URI 'bogus://x' {BOGUS}"),
    (["report", "--tracking-uri", "bogus://x"], f"the tracking store URI 'bogus://x' {BOGUS}"),
    (["run", "--tracking-uri", "sqlite:////proc/x.db"], "cannot create the MLflow tracking store /proc/x.db"),
    (["report", "--out", "/proc/report"], "--out /proc/report: cannot write there"),
    (["search", "--space", "grids/search_quick.yaml", "--out", "/proc/s"], "--out /proc/s: cannot write there"),
    (["run", "--limit", str(10**12)], f"--limit {10**12}: at most 10,000,000 examples a run"),
])
def test_a_bad_store_or_folder_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert bench(monkeypatch, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not list(tmp_path.iterdir())


def test_a_corrupt_sqlite_store_is_one_line_for_report(tmp_path, monkeypatch, capsys):
    store = tmp_path / "mlflow.db"
    store.write_bytes(b"this is not a database" * 100)
    monkeypatch.chdir(tmp_path)
    assert bench(monkeypatch, "report", "--tracking-uri", f"sqlite:///{store}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a readable SQLite database (file is not a database)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_postgresql_without_its_driver_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if psycopg were not installed
    monkeypatch.chdir(tmp_path)
    assert bench(monkeypatch, "report", "--tracking-uri", "postgresql://bench@127.0.0.1:9/mlflow") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a PostgreSQL driver that is not installed" in err, err


def test_a_grid_limit_past_any_dataset_is_one_line(tmp_path, monkeypatch, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ndatasets: [emotion]\nmodels: [tiny-random]\neval: {limit: 1000000000000}\n")
    monkeypatch.chdir(tmp_path)
    assert bench(monkeypatch, "run", "--grid", str(grid), "--dry-run") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "eval.limit: Input should be less than or equal to 10000000" in err, err


@pytest.mark.parametrize("args, message", [
    (["run", "--limit", "-5"], "error: Invalid value for '--limit': Input should be greater than or equal to 1 "
                               "(see 'bench run --help')"),
    (["run", "--bogus"], "error: No such option: --bogus (see 'bench run --help')"),
    (["nosuch"], "error: No such command 'nosuch'. (see 'bench --help')"),
])
def test_a_usage_error_is_one_line_too(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert bench(monkeypatch, *args) == 2
    assert capsys.readouterr().err == message + "\n"


def test_a_row_longer_than_the_model_takes_is_refused_at_planning_naming_it(tmp_path, monkeypatch, capsys):
    rows = [{"text": f"short text {i}", "label": "ab"[i % 2]} for i in range(8)]
    rows[5]["text"] = "word " * 20_000  # 100,000 characters: past tiny-random's 4,096-token context
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    grid = tmp_path / "g.yaml"
    grid.write_text(f"name: g\ndatasets: [{{path: {data}, eval_path: {data}}}]\nmodels: [tiny-random]\n"
                    "baselines: []\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert bench(monkeypatch, "run", "--grid", str(grid)) == 2
    err = capsys.readouterr().err
    # counted by characters before tiny-random is first built, by its tokenizer after
    assert err.count("\n") == 1 and re.search(r"\(100,000 characters\): its zero prompt and answer are (about )?"
                                              r"[\d,]+ tokens", err), err
    assert "over the 4,096 of tiny-random's context; shorten or remove that row" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.yaml", "long.jsonl"]  # nothing written


def test_eval_max_input_tokens_is_a_lower_limit_of_ones_own(tmp_path, monkeypatch, capsys):
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ndatasets: [emotion]\nmodels: [tiny-random]\neval: {limit: 8, max_input_tokens: 40}\n"
                    "baselines: []\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert bench(monkeypatch, "run", "--grid", str(grid), "--dry-run") == 2
    assert "over the 40 of eval.max_input_tokens; shorten or remove that row" in capsys.readouterr().err
