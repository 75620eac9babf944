"""Bad stores, folders and files given on the command line or in a grid: one line on stderr, exit code 2, nothing
written; the malformed inputs of issue 24 one by one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import bench

BOGUS = "is not one bench can use: give sqlite:///path.db"
ROOT = Path(__file__).resolve().parent.parent


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


GRID = "name: g\ndatasets: [emotion]\nmodels: [tiny-random]\neval: {limit: 4}\nbaselines: []\n"
SPACE = ("name: s\ndatasets: [emotion]\nmodels: [tiny-random]\neval: {limit: 8}\nbaselines: []\n"
         "search: {pruner: none}\n"
         "strategies: {icl: [zero, random], shots: {low: 1, high: 2}, decoding: [generate, ppl]}\n")
TRAINING = "training: {n_train: 8, strategies: {method: sft+rl}, %s}\n"
CARD = ("name: c\nlanguage: en\ntask: t\ninput_name: Text\nsplits: {train: train.jsonl, test: test.jsonl}\n"
        "pool_split: train\neval_split: test\nlabels: [{value: a}, {value: b}]\n")


def rows(*labels) -> str:
    return "".join(json.dumps({"text": f"text {i}", "label": label}) + "\n" for i, label in enumerate(labels * 4))


FOLDER = {"ds/train.jsonl": rows("a", "b"), "ds/test.jsonl": rows("a", "b")}
ON_FILE = GRID.replace("[emotion]", "[{path: d.jsonl}]")
ON_SKIP = GRID.replace("[emotion]", "[{path: d.jsonl, skip_invalid_rows: true}]")
RUN, DRY, SEARCH = ["run", "--grid", "g.yaml"], ["run", "--grid", "g.yaml", "--dry-run"], \
    ["search", "--space", "s.yaml", "--trials", "1"]
MALFORMED = {  # issue 24, one by one: the files a case starts with (None: a FIFO), its command, its line
    "gzip file that is not gzip": ({"g.yaml": GRID, "d.jsonl.gz": rows("a", "b")}, [*DRY, "--dataset", "d.jsonl.gz"],
                                   "d.jsonl.gz: not a whole gzip file"),
    "JSON line nested 100k deep": ({"g.yaml": GRID, "d.jsonl": rows("a", "b") + "[" * 100_000 + "]" * 100_000},
                                   [*DRY, "--dataset", "d.jsonl"], "d.jsonl:9: JSON nested too deeply to read"),
    "card.yaml a list": ({"g.yaml": GRID, **FOLDER, "ds/card.yaml": "- a\n"}, [*DRY, "--dataset", "./ds"],
                         "ds/card.yaml: Input should be a valid dictionary"),
    "card.yaml splits a list": ({"g.yaml": GRID, **FOLDER, "ds/card.yaml": CARD.replace(
        "{train: train.jsonl, test: test.jsonl}", "[train.jsonl]")}, [*DRY, "--dataset", "./ds"],
        "ds/card.yaml: splits: Input should be a valid dictionary"),
    "card.yaml naming a missing file": ({"g.yaml": GRID, **FOLDER, "ds/card.yaml": CARD.replace(
        "test.jsonl}", "gone.jsonl}")}, [*DRY, "--dataset", "./ds"], "ds/card.yaml: splits.test: the file "),
    "card.yaml not UTF-8": ({"g.yaml": GRID, **FOLDER, "ds/card.yaml": CARD.encode() + b"# \xff\n"},
                            [*DRY, "--dataset", "./ds"], "ds/card.yaml:9: not UTF-8 text (byte 0xff)"),
    "empty grid name": ({"g.yaml": GRID.replace("name: g", "name: ''")}, RUN,
                        "g.yaml: name: String should have at least 1 character"),
    "grid name of 900 KB": ({"g.yaml": GRID.replace("name: g", "name: " + "n" * 900_000)}, RUN,
                            "g.yaml: name: String should have at most 500 characters"),
    "--experiment of 600 characters": ({"g.yaml": GRID}, [*RUN, "--experiment", "e" * 600],
                                       "has 600 characters; MLflow takes 1 to 500"),
    "search range NaN": ({"s.yaml": SPACE + TRAINING % "sft: {epochs: {low: .nan, high: 2}}"}, SEARCH,
                         "training.sft.epochs: low is nan; give a finite number"),
    "search range inf": ({"s.yaml": SPACE + TRAINING % "sft: {epochs: {low: 1, high: .inf}}"}, SEARCH,
                         "training.sft.epochs: high is inf; give a finite number"),
    "search step 0": ({"s.yaml": SPACE + TRAINING % "sft: {epochs: {low: 1, high: 2, step: 0}}"}, SEARCH,
                      "training.sft.epochs: step 0 must be above 0"),
    "search.seed -1": ({"s.yaml": SPACE.replace("{pruner: none}", "{pruner: none, seed: -1}")}, SEARCH,
                       "search.seed: Input should be greater than or equal to 0"),
    "search.seed 2^40": ({"s.yaml": SPACE.replace("{pruner: none}", f"{{pruner: none, seed: {2**40}}}")}, SEARCH,
                         "search.seed: Input should be less than or equal to 4294967295"),
    "shots 0 in a space": ({"s.yaml": SPACE.replace("{low: 1", "{low: 0")}, SEARCH,
                           "strategies.shots: low 0 is below 1"),
    "--storage in a folder that cannot be made": ({"s.yaml": SPACE}, [*SEARCH, "--storage", "sqlite:////proc/x/o.db"],
                                                  "cannot create the Optuna storage /proc/x/o.db"),
    "--storage sqlite:///": ({"s.yaml": SPACE}, [*SEARCH, "--storage", "sqlite:///"],
                             "the Optuna storage URI 'sqlite:///' names no file"),
    "--storage sqlite:////dev/null": ({"s.yaml": SPACE}, [*SEARCH, "--storage", "sqlite:////dev/null"],
                                      "the Optuna storage /dev/null is not a file"),
    "--storage file:": ({"s.yaml": SPACE}, [*SEARCH, "--storage", "file:./o"],
                        "the Optuna storage URI 'file:./o' is not one bench can use"),
    "--storage redis://": ({"s.yaml": SPACE}, [*SEARCH, "--storage", "redis://x", "--tracking-uri", "sqlite:///m.db"],
                           "the Optuna storage URI 'redis://x' is not one bench can use"),
    "a search whose model is missing": ({"s.yaml": SPACE.replace("tiny-random", "./gone")},
                                        [*SEARCH, "--storage", "sqlite:///o.db", "--tracking-uri", "sqlite:///m.db"],
                                        "s.yaml: models[0]: model folder './gone' does not exist"),
    "--tracking-uri file:": ({"g.yaml": GRID}, [*RUN, "--tracking-uri", "file:./mlruns", "--store", "sqlite:///j.db"],
                             "the tracking store URI 'file:./mlruns' is not one bench can use"),
    "--store file:": ({"g.yaml": GRID}, [*RUN, "--store", "file:./jobs"],
                      "the job store URI 'file:./jobs' is not one bench can use"),
    "--tracking-uri sqlite:///": ({"g.yaml": GRID}, [*RUN, "--tracking-uri", "sqlite:///"],
                                  "the tracking store URI 'sqlite:///' names no file"),
    "--tracking-uri sqlite:////dev/null": ({"g.yaml": GRID}, [*RUN, "--tracking-uri", "sqlite:////dev/null"],
                                           "the MLflow tracking store /dev/null is not a file"),
    "--tracking-uri a directory": ({"g.yaml": GRID, "adir/x": ""}, [*RUN, "--tracking-uri", "sqlite:///adir"],
                                   "adir is not a file (a folder or a device)"),
    "seeds [-1]": ({"g.yaml": GRID + "seeds: [-1]\n"}, DRY, "g.yaml: seeds[0]: Input should be greater than"),
    "seeds [2^32]": ({"g.yaml": GRID + f"seeds: [{2**32}]\n"}, DRY, "g.yaml: seeds[0]: Input should be less than"),
    "sft.epochs .inf": ({"g.yaml": GRID + TRAINING % "sft: {epochs: .inf}"}, DRY,
                        "g.yaml: training.sft.epochs: Input should be a finite number"),
    "rl.temperature .inf": ({"g.yaml": GRID + TRAINING % "rl: {temperature: .inf}"}, DRY,
                            "g.yaml: training.rl.temperature: Input should be a finite number"),
    "rl.kl_coef .inf": ({"g.yaml": GRID + TRAINING % "rl: {kl_coef: .inf}"}, DRY,
                        "g.yaml: training.rl.kl_coef: Input should be a finite number"),
    "models ['']": ({"g.yaml": GRID.replace("[tiny-random]", "['']")}, DRY,
                    "g.yaml: models[0]: String should have at least 1 character"),
    "a folder that is no model": ({"g.yaml": GRID.replace("[tiny-random]", "[./folder]"), "folder/a.txt": "x"}, DRY,
                                  "g.yaml: models[0]: model folder './folder' has no readable config.json"),
    "labels 1 and \"1\"": ({"g.yaml": ON_FILE, "d.jsonl": rows(1, "1", "b")}, DRY,
                           "d.jsonl:2: label \"1\", but "),  # the file read beside the grid
    "label NaN": ({"g.yaml": ON_FILE, "d.jsonl": rows("a", "b", float("nan"))}, DRY,
                  "d.jsonl:3: label NaN is not a string or a whole number"),
    "label null": ({"g.yaml": ON_FILE, "d.jsonl": rows("a", "b", None)}, DRY,
                   "d.jsonl:3: label null is not a string or a whole number"),
    "label true": ({"g.yaml": ON_FILE, "d.jsonl": rows("a", "b", True)}, DRY,
                   "d.jsonl:3: label true is not a string or a whole number"),
    "no label column": ({"g.yaml": ON_FILE, "d.jsonl": rows("a", "b").replace('"label"', '"category"')}, DRY,
                        "d.jsonl:1: no 'label' column; its columns are 'text', 'category': set label_field"),
    "no label column, invalid rows skipped": ({"g.yaml": ON_SKIP, "d.jsonl": rows("a").replace('"label"', '"y"')},
                                              DRY, "d.jsonl:1: no 'label' column; its columns are 'text', 'y'"),
    "every row invalid, skipped": ({"g.yaml": ON_SKIP, "d.jsonl": rows(None)}, DRY,
                                   "d.jsonl: no usable row (4 invalid row(s) skipped); a dataset needs rows"),
    "one class": ({"g.yaml": ON_FILE, "d.jsonl": rows("a") * 5}, DRY,
                  "d.jsonl: every row has the label 'a'; classifying needs at least two classes"),
    "limit: true": ({"g.yaml": GRID.replace("{limit: 4}", "{limit: true}")}, DRY,
                    "g.yaml: eval.limit: Value error, true is not a number"),
    "split: ''": ({"g.yaml": GRID.replace("{limit: 4}", "{limit: 4, split: ''}")}, DRY,
                  "g.yaml: eval.split: String should have at least 1 character"),
    "report on another program's SQLite file": ({"other.db": ""}, ["report", "--tracking-uri", "sqlite:///other.db"],
                                                "other.db is another program's database (its tables: mine)"),
    "grid that is a folder": ({"gdir/x": ""}, ["run", "--grid", "gdir"], "grid file 'gdir' is a folder"),
    "grid that is /dev/zero": ({}, ["run", "--grid", "/dev/zero"], "grid file '/dev/zero' is a device or a pipe"),
    "grid that is a FIFO": ({"fifo": None}, ["run", "--grid", "fifo"], "grid file 'fifo' is a device or a pipe"),
}


def make(folder: Path, files: dict[str, str | bytes | None]) -> None:
    """The files of a case: text, bytes, a FIFO (None), or a SQLite database with a table of its own (*.db)."""
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            os.mkfifo(path)
        elif name.endswith(".db"):
            with contextlib.closing(sqlite3.connect(path)) as db:
                db.execute("CREATE TABLE mine (x)")
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def contents(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_malformed_input_is_one_line_at_planning_and_writes_nothing(tmp_path, monkeypatch, capsys, case):
    files, args, message = MALFORMED[case]
    make(tmp_path, files)
    before = contents(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert bench(monkeypatch, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert contents(tmp_path) == before


def test_an_output_that_cannot_be_written_is_one_line(tmp_path):
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "bench", "list"], stdout=full, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and done.stderr == \
        "error: cannot write the output (No space left on device); free some space, or send the output elsewhere\n"


def test_a_name_holding_a_newline_or_an_escape_cannot_forge_a_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "d.jsonl").write_text(rows("a", "b"), encoding="utf-8")
    grid = GRID.replace("name: g", 'name: "g\\nerror: forged"').replace(
        "[emotion]", '[{path: d.jsonl, name: "d\\e[31m[/x]"}]')
    (tmp_path / "g.yaml").write_text(grid, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert bench(monkeypatch, *DRY) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and not any(line.startswith("error: forged") for line in out.splitlines())
    assert "grid g\\nerror: forged (g.yaml)" in out and "d\\x1b[31m[/x]/tiny-random/zero" in out
