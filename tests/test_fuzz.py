"""Property-based fuzzing of the input contract: whatever a grid file or the command line holds, `bench` either
accepts it or answers with one line on stderr and exit code 2: never a traceback, never a write."""

from __future__ import annotations

import string
from pathlib import Path

import yaml
from cli_runner import bench
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.plan.datasets import DatasetCache
from bench.plan.errors import UserError
from bench.plan.grid import expand, read_grid

BASE = {"name": "fuzz", "datasets": ["emotion"], "models": ["tiny-random"], "eval": {"limit": 4},
        "inference": {"batch_size": 4, "max_new_tokens": 4}, "baselines": [],
        "strategies": {"icl": ["zero", "fixed-2"], "decoding": ["generate", "ppl"]}}
PLACES = [("name",), ("datasets",), ("models",), ("seeds",), ("eval",), ("eval", "limit"), ("eval", "split"),
          ("eval", "sample_seed"), ("inference",), ("inference", "batch_size"), ("inference", "tokens_per_batch"),
          ("inference", "dtype"), ("strategies",), ("strategies", "icl"), ("strategies", "decoding"),
          ("strategies", "ppl_norm"), ("baselines",), ("training",), ("training", "sft"),
          ("training", "sft", "learning_rate"), ("training", "strategies"), ("training", "strategies", "method"),
          ("datasets", 0), ("nonsense",)]
FIT = settings(max_examples=300, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**15, 10**15) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["zero", "ppl", "random-99", "similar-0", "sft+rl", "on", "emotion", "tiny-random", "-1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)


def _mutated(place: tuple, value: object) -> dict:
    grid = yaml.safe_load(yaml.safe_dump(BASE))
    node = grid
    for key in place[:-1]:
        if not isinstance(node.get(key) if isinstance(node, dict) else None, dict | list):
            node[key] = {} if isinstance(key, str) else []
        node = node[key]
    if isinstance(node, list):
        node[:] = [value]
    else:
        node[place[-1]] = value
    return grid


def _one_line(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message and 0 < len(message) < 600, message


@FIT
@given(place=st.sampled_from(PLACES), value=values)
def test_a_grid_is_valid_or_one_line(tmp_path_factory, place, value):
    path = tmp_path_factory.mktemp("g") / "grid.yaml"
    path.write_text(yaml.safe_dump(_mutated(place, value), allow_unicode=True), encoding="utf-8")
    try:
        expand(read_grid(path), path, DATASETS, "float32")
    except UserError as exc:
        _one_line(str(exc))


DATASETS = DatasetCache()  # shared by the examples: only grids vary


@settings(max_examples=300, deadline=None, derandomize=True)
@given(data=st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8")))
def test_any_bytes_as_a_grid_file_are_valid_or_one_line(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("b") / "grid.yaml"
    path.write_bytes(data)
    try:
        read_grid(path)
    except UserError as exc:
        _one_line(str(exc))


SAFE_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " -_.:=@%", max_size=14)
OPTIONS = {
    "--limit": st.integers(-5, 10**13).map(str) | SAFE_TEXT,
    "--batch-size": st.integers(-5, 10**6).map(str) | SAFE_TEXT,
    "--dataset": SAFE_TEXT | st.sampled_from(["emotion", "missing.jsonl", "./x.csv", "hf:"]),
    "--model": SAFE_TEXT | st.sampled_from(["tiny-random", "./no-such-model", ""]),
    "--experiment": SAFE_TEXT,
    "--tracking-uri": SAFE_TEXT | st.sampled_from(["bogus://x", "sqlite:////proc/x.db", "http://", ""]),
    "--store": SAFE_TEXT | st.sampled_from(["sqlite:////proc/j.db", "bogus://y"]),
    "--workers": st.integers(-3, 5).map(str) | SAFE_TEXT,
    "--lease": SAFE_TEXT,
}


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(chosen=st.lists(st.sampled_from(sorted(OPTIONS)), min_size=1, max_size=3, unique=True), data=st.data())
def test_bench_run_arguments_are_accepted_or_one_line_and_nothing_is_written(tmp_path_factory, monkeypatch, capsys,
                                                                            chosen, data):
    folder = tmp_path_factory.mktemp("cli")
    grid = folder / "grid.yaml"
    grid.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    args = [x for option in chosen for x in (option, data.draw(OPTIONS[option], label=option))]
    monkeypatch.chdir(folder)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code = bench(monkeypatch, "run", "--grid", str(grid), "--dry-run", *args)
    err = capsys.readouterr().err
    assert code in (0, 2), (args, code, err)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)
    assert sorted(p.name for p in Path(folder).iterdir()) == ["grid.yaml"], args
