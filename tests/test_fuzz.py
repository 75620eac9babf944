"""Property-based fuzzing of the input contract: whatever a grid, space, dataset or card file or the command line
holds, `bench` either accepts it or answers with one line on stderr and exit code 2: never a traceback, never a
write, never a password. What it accepts is what the runs can take (finite numbers, seeds numpy takes, labels
that are strings or whole numbers written one way)."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import yaml
from cli_runner import bench
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.plan.datasets import DatasetCache, DatasetConfig, load_dataset
from bench.plan.errors import UserError
from bench.plan.grid import expand, read_grid
from bench.plan.space import read_space

BASE = {"name": "fuzz", "datasets": ["emotion"], "models": ["tiny-random"], "eval": {"limit": 4},
        "inference": {"batch_size": 4, "max_new_tokens": 4}, "baselines": [],
        "strategies": {"icl": ["zero", "fixed-2"], "decoding": ["generate", "ppl"]}}
PLACES = [("name",), ("datasets",), ("models",), ("seeds",), ("eval",), ("eval", "limit"), ("eval", "split"),
          ("eval", "sample_seed"), ("inference",), ("inference", "batch_size"), ("inference", "tokens_per_batch"),
          ("inference", "dtype"), ("strategies",), ("strategies", "icl"), ("strategies", "decoding"),
          ("strategies", "ppl_norm"), ("baselines",), ("training",), ("training", "sft"),
          ("training", "sft", "learning_rate"), ("training", "sft", "epochs"), ("training", "rl", "temperature"),
          ("training", "rl", "kl_coef"), ("training", "strategies"), ("training", "strategies", "method"),
          ("datasets", 0), ("models", 0), ("seeds", 0), ("nonsense",)]
NUMBERS = {"limit", "sample_seed", "batch_size", "tokens_per_batch", "learning_rate", "epochs", "temperature",
           "kl_coef"}  # where true/false would be read as 1/0
FIT = settings(max_examples=200, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**15, 10**15) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["zero", "ppl", "random-99", "similar-0", "sft+rl", "on", "emotion", "tiny-random", "-1", "", ".",
                       "/dev/zero", "a\nb", "\x1b[31m", -1, 2**32, 2**40, math.inf, math.nan]),
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
        grid = read_grid(path)
        expand(grid, path, DATASETS, "float32")
    except UserError as exc:
        _one_line(str(exc))
        return
    assert not (isinstance(value, bool) and place[-1] in NUMBERS), (place, value)
    assert _finite(grid.model_dump()) and all(0 <= seed < 2**32 for seed in grid.seeds), (place, value)
    assert grid.name and all(grid.models) and grid.eval.split != "", (place, value)


def _finite(node: object) -> bool:
    if isinstance(node, dict):
        return all(_finite(v) for v in node.values())
    if isinstance(node, list | tuple):
        return all(_finite(v) for v in node)
    return not isinstance(node, float) or math.isfinite(node)


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


labels = st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | st.sampled_from(["a", "b", "1", "0", ""]) \
    | st.lists(st.integers(0, 2), max_size=2)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(chosen=st.lists(labels, min_size=1, max_size=12), gzipped=st.booleans(), deep=st.integers(0, 3))
def test_a_data_file_is_valid_or_one_line(tmp_path_factory, chosen, gzipped, deep):
    rows = [{"text": f"text {i}", "label": label} for i, label in enumerate(["a", "b", *chosen])]
    text = "".join(json.dumps(r) + "\n" for r in rows) + "[" * 10**deep * 25 + "]" * 10**deep * 25
    path = tmp_path_factory.mktemp("d") / ("d.jsonl.gz" if gzipped else "d.jsonl")
    path.write_text(text, encoding="utf-8")  # a .gz name on plain text: not gzip
    try:
        dataset = load_dataset(DatasetConfig(path=str(path), skip_invalid_rows=True))
    except UserError as exc:
        _one_line(str(exc))
        return
    written = {str(label): type(label) for label in ["a", "b", *chosen] if isinstance(label, str | int)}
    assert all(type(label) is written.get(str(label)) for label in chosen if isinstance(label, str | int))
    assert all(not isinstance(label, bool) and isinstance(label, str | int) for label in chosen
               if str(label) in {e.label for e in dataset.pool} and label not in ("", "a", "b")), chosen


CARD = {"name": "c", "language": "en", "task": "t", "input_name": "Text", "splits": {"train": "train.jsonl"},
        "pool_split": "train", "eval_split": "train", "labels": [{"value": "a"}, {"value": "b"}]}


@settings(max_examples=100, deadline=None, derandomize=True)
@given(key=st.sampled_from([*CARD, "labels.0", "splits.train", "extra"]), value=values)
def test_a_dataset_card_is_valid_or_one_line(tmp_path_factory, key, value):
    folder = tmp_path_factory.mktemp("card")
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": f"t {i}", "label": "ab"[i % 2]}) + "\n"
                                                for i in range(6)), encoding="utf-8")
    card = yaml.safe_load(yaml.safe_dump(CARD))
    node, leaf = (card[key.split(".")[0]], key.split(".")[1]) if "." in key else (card, key)
    node[int(leaf) if leaf.isdigit() else leaf] = value
    (folder / "card.yaml").write_text(yaml.safe_dump(card, allow_unicode=True), encoding="utf-8")
    try:
        load_dataset(DatasetConfig(name=str(folder)))
    except UserError as exc:
        _one_line(str(exc))


SPACE = {"name": "fuzz", "datasets": ["emotion"], "models": ["tiny-random"], "eval": {"limit": 4}, "baselines": [],
         "search": {"pruner": "none"}, "strategies": {"icl": ["zero", "random"], "shots": {"low": 1, "high": 2}},
         "training": {"sft": {"epochs": {"low": 1, "high": 2}}, "strategies": {"method": ["sft"]}}}
RANGES = [("strategies", "shots"), ("training", "sft", "epochs")]


@settings(max_examples=100, deadline=None, derandomize=True)
@given(where=st.sampled_from(RANGES), end=st.sampled_from(["low", "high", "step", "log"]), value=values,
       seed=st.none() | values)
def test_a_space_is_valid_or_one_line(tmp_path_factory, where, end, value, seed):
    space = yaml.safe_load(yaml.safe_dump(SPACE))
    node = space
    for key in where:
        node = node[key]
    node[end] = value
    if seed is not None:
        space["search"]["seed"] = seed
    path = tmp_path_factory.mktemp("s") / "space.yaml"
    path.write_text(yaml.safe_dump(space, allow_unicode=True), encoding="utf-8")
    try:
        chosen = read_space(path)
    except UserError as exc:
        _one_line(str(exc))
        return
    spreads = [*chosen.ranges.values(), *chosen.shots.values()]
    assert all(math.isfinite(r.low) and math.isfinite(r.high) and (r.step is None or r.step > 0) for r in spreads)
    assert all(r.low >= 1 for r in chosen.shots.values()) and 0 <= chosen.search.seed < 2**32, (where, end, value)


SECRET = "se/c?r@t"  # a password with the characters a URI's masking must not stop at
SAFE_TEXT = st.text(alphabet=string.ascii_letters + string.digits + " -_.:=@%", max_size=14)
OPTIONS = {
    "--limit": st.integers(-5, 10**13).map(str) | SAFE_TEXT,
    "--batch-size": st.integers(-5, 10**6).map(str) | SAFE_TEXT,
    "--dataset": SAFE_TEXT | st.sampled_from(["emotion", "missing.jsonl", "./x.csv", "hf:"]),
    "--model": SAFE_TEXT | st.sampled_from(["tiny-random", "./no-such-model", ""]),
    "--experiment": SAFE_TEXT | st.just("e" * 501),
    "--tracking-uri": SAFE_TEXT | st.sampled_from(["bogus://x", "sqlite:////proc/x.db", "http://", "", "sqlite:///",
                                                   "sqlite:////dev/null", "sqlite:///.", "file:./m",
                                                   f"http://u:{SECRET}@127.0.0.1:9"]),
    "--store": SAFE_TEXT | st.sampled_from(["sqlite:////proc/j.db", "bogus://y", "file:./j", "sqlite:///",
                                            f"postgresql://u:{SECRET}@127.0.0.1:9/db",
                                            f"postgresql://u@127.0.0.1:9/db?password={SECRET}",
                                            f"host=127.0.0.1 password={SECRET}"]),
    "--workers": st.integers(-3, 5).map(str) | SAFE_TEXT,
    "--lease": SAFE_TEXT,
}


@settings(max_examples=80, deadline=None, derandomize=True,
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
    out, err = capsys.readouterr()
    assert code in (0, 2), (args, code, err)
    assert SECRET not in out + err, (args, out, err)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, (args, err)
    assert sorted(p.name for p in Path(folder).iterdir()) == ["grid.yaml"], args
