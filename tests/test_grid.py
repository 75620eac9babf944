"""Grid files are validated at the edge: one line naming file, key and what is allowed; exit code 2."""

import re
import sys
import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.plan.datasets import DatasetCache
from bench.plan.errors import UserError
from bench.plan.grid import expand, read_grid
from bench.plan.identity import params
from bench.plan.specs import RunSpec

BASE = """
name: t
datasets: [emotion]
models: [tiny-random]
eval: {limit: 4}
baselines: []
"""


def write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(BASE + textwrap.dedent(extra), encoding="utf-8")
    return path


def specs_of(path: Path):
    return expand(read_grid(path), path, DatasetCache(), "float32")


def test_blocks_expand_to_the_union_without_duplicates(tmp_path):
    path = write(tmp_path, """
        strategies:
          - {icl: [zero, random-2], decoding: [generate, ppl]}
          - {decoding: ppl, icl: zero}
          - {decoding: generate, ppl_norm: [mean, sum]}
    """)
    specs = specs_of(path)
    assert [s.strategy.tag() for s in specs] == ["zero", "zero+ppl", "random-2", "random-2+ppl"]
    assert len({s.key for s in specs}) == 4
    assert all(s.max_new_tokens == 16 and s.dtype == "float32" for s in specs)


def test_seeds_repeat_what_they_change_and_run_the_rest_once(tmp_path):
    path = write(tmp_path, """
        seeds: [0, 1, 2]
        strategies:
          - {icl: [zero, random-2, fixed-2, similar-2], decoding: [generate, ppl]}
        training: {strategies: [{method: sft}]}
    """)
    runs: dict[str, list[int]] = {}
    for spec in specs_of(path):
        runs.setdefault(f"{spec.train.strategy.tag() + '/' if spec.train else ''}{spec.strategy.tag()}", []).append(
            spec.seed)
    # untrained with zero-shot or retrieved demos: nothing random, one run; demo draws and training: every seed
    assert runs["zero"] == runs["similar-2+ppl"] == [0]
    assert runs["random-2"] == runs["fixed-2+ppl"] == runs["sft/zero"] == runs["sft/similar-2"] == [0, 1, 2]


def test_domain_calibration_runs_under_every_seed_batch_once(tmp_path):
    path = write(tmp_path, """
        seeds: [0, 1]
        strategies: {icl: zero, decoding: ppl, calibration: [batch, domain]}
    """)
    seeds = [(s.strategy.tag(), s.seed) for s in specs_of(path)]
    assert seeds == [("zero+ppl+bc", 0), ("zero+ppl+dc", 0), ("zero+ppl+dc", 1)]  # its random texts take the seed


def test_a_calibration_named_where_nothing_is_scored_is_refused_not_dropped(tmp_path):
    with pytest.raises(UserError, match=r"grid.yaml: strategies\[1\].calibration: 'batch' calibrates candidate "
                                        r"scores, which only a decoding that scores the candidates has \(ppl\)"):
        specs_of(write(tmp_path, """
            strategies:
              - {decoding: ppl, calibration: batch}
              - {decoding: generate, calibration: [none, batch]}
        """))
    crossed = write(tmp_path, "strategies: {decoding: [generate, ppl], calibration: [none, domain]}\n")
    assert [s.strategy.tag() for s in specs_of(crossed)] == ["zero", "zero+ppl", "zero+ppl+dc"]


def test_templates_reach_evaluation_and_training_prompts(tmp_path):
    from strategies.prompts import prompt_format

    path = write(tmp_path, """
        strategies: {template: [default, terse]}
        training: {strategies: {method: sft, template: [default, question]}, n_train: 8}
    """)
    specs = specs_of(path)
    assert {s.strategy.tag() for s in specs} == {"zero", "zero+tpl-terse"}
    assert {(s.train.strategy.tag(), s.train.prompt_format) for s in specs if s.train} == {
        ("sft", prompt_format("en")), ("sft(zero+tpl-question)", prompt_format("en", "question"))}
    assert {s.prompt_format for s in specs} == {prompt_format("en"), prompt_format("en", "terse")}


def test_registering_trained_models_is_opted_out_without_changing_any_job(tmp_path):
    training = "training: {strategies: {method: [sft, sft+rl], reasoning: on, reasoning_source: rgen}, n_train: 8}\n"
    registered = specs_of(write(tmp_path, training))
    opted_out = specs_of(write(tmp_path, training.replace("n_train: 8", "n_train: 8, register_models: false")))
    assert [s.key for s in registered] == [s.key for s in opted_out]
    assert [s.run_params() for s in registered] == [s.run_params() for s in opted_out]
    trained = [s.train for s in opted_out if s.train]
    stages = {*trained, *(t.warmup() for t in trained if t.warmup()),
              *(t.reasoner.rgen for t in trained if t.reasoner and t.reasoner.rgen)}
    assert len(stages) > len(trained) and not any(stage.register_model for stage in stages)
    assert all(s.train.register_model for s in registered if s.train)
    for stage in stages:  # a name MLflow's registry takes and an address carries unescaped
        assert re.fullmatch(rf"genclsbench-[A-Za-z0-9._-]+-{stage.key[:8]}", stage.model_name), stage.model_name


def test_the_classical_baseline_is_on_by_default_and_checked(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: t\ndatasets: [emotion, sst2]\nmodels: [tiny-random]\n", encoding="utf-8")
    baselines = [s for s in specs_of(path) if s.baseline]
    assert [(s.dataset.name, s.strategy_label) for s in baselines] == [
        ("emotion", "baseline:tfidf-logreg"), ("sst2", "baseline:tfidf-logreg")]
    path.write_text("name: t\ndatasets: [emotion]\nmodels: [tiny-random]\nbaselines: [bert]\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"baselines: Value error, unknown baseline 'bert'; registered: tfidf-logreg"):
        read_grid(path)


def test_spec_hash_is_stable_and_every_run_has_one_param_vocabulary():
    path = Path(__file__).parent.parent / "grids" / "quick.yaml"
    first, second = specs_of(path), specs_of(path)
    assert [s.key for s in first] == [s.key for s in second]
    assert len({s.key for s in first}) == len(first)
    assert len({tuple(sorted(params(RunSpec, s))) for s in first}) == 1  # baseline and LLM runs alike


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("colour: red\n", r"grid.yaml: colour: unknown key; allowed: name, description"),
        ("strategies: {icl: [nearest-3]}\n", r"strategies.icl: 'nearest-3' is not a value of 'icl'; allowed: zero"),
        ("strategies: {temperature: 1}\n", r"strategies.temperature: unknown strategy dimension 'temperature'"),
        ("seeds: one\n", r"grid.yaml: seeds: Input should be a valid list"),
        ("inference: {dtype: fp8}\n", r"inference.dtype: .*'fp8' is not a dtype; allowed: auto, float32"),
    ],
)
def test_bad_grids_name_file_key_and_allowed(tmp_path, extra, message):
    with pytest.raises(UserError, match=message):
        specs_of(write(tmp_path, extra))


def test_dataset_level_checks(tmp_path):
    pool = tmp_path / "small.jsonl"
    pool.write_text("".join(f'{{"text": "t{i}", "label": "{i % 2}"}}\n' for i in range(12)))
    path = tmp_path / "g.yaml"
    path.write_text(f"name: t\ndatasets: [{{path: {pool}}}]\nmodels: [tiny-random]\nstrategies: {{icl: random-50}}\n")
    with pytest.raises(UserError, match=r"needs 50 pool examples but the pool has \d+"):
        specs_of(path)
    path.write_text(f"name: t\ndatasets: [{{path: {pool}}}]\nmodels: [tiny-random]\nstrategies: {{definitions: on}}\n")
    with pytest.raises(UserError, match="has no category definitions"):
        specs_of(path)


def test_unknown_model_and_dataset(tmp_path):
    with pytest.raises(UserError, match="grid.yaml: models\\[0\\]: unknown model 'gpt-9'; registered: smollm2-135m"):
        specs_of(_swap(tmp_path, "tiny-random", "gpt-9"))
    with pytest.raises(UserError, match="grid.yaml: datasets\\[0\\]: unknown dataset 'emotions'"):
        specs_of(_swap(tmp_path, "[emotion]", "[emotions]"))


def _swap(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(BASE.replace(old, new), encoding="utf-8")
    return path


def test_cli_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys, tracking_uri):
    path = write(tmp_path, "strategies: {labels: letters}\n")
    monkeypatch.setattr(sys, "argv", ["bench", "run", "--grid", str(path), "--tracking-uri", tracking_uri])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: strategies.labels: 'letters'")
    assert not (tmp_path / "mlflow.db").exists()  # nothing logged


def test_missing_grid_file(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(sys, "argv", ["bench", "run", "--grid", str(tmp_path / "nope.yaml")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_the_results_table_fits_80_columns():
    from rich.console import Console

    from bench.cli import _results_table

    path = Path(__file__).parent.parent / "grids" / "quick_train.yaml"
    metrics = {"accuracy": 0.55, "macro_f1": 0.345, "invalid_rate": 0.0, "uncertain_rate": 0.12,
               "examples_per_s": 12.5}
    rows = [(spec, "done", metrics) for spec in specs_of(path)]
    narrow = Console(width=80, record=True, file=open("/dev/null", "w"))
    narrow.print(_results_table(rows))
    text = narrow.export_text()
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    assert "sft+reinforce_pp_baseline" in text and "0.550" in text


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi")) + \
    "name: bomb\ndatasets: [emotion]\nmodels: [tiny-random]\nstrategies: {icl: *i}\n"


@pytest.mark.parametrize("content, message", [
    (b"name: q\ndatasets: [emotion]\nname: r\n", r"g\.yaml:3: key 'name' is given twice \(lines 1 and 3\)"),
    (b"name: caf\xe9\n", r"g\.yaml:1: not UTF-8 text \(byte 0xe9\); save the file as UTF-8"),
    (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", r"g\.yaml:1: nested more than 32 levels deep"),
    (ALIAS_BOMB.encode(), r"g\.yaml: its aliases expand to more than 100,000 values"),
    (b"name: x\n" + b"# padding\n" * 120_000, r"g\.yaml: 1\.1 MiB, over the 1 MiB a grid file may have"),
])
def test_a_malformed_grid_file_is_one_short_line(tmp_path, content, message):
    path = tmp_path / "g.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as caught:
        read_grid(path)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.parametrize("args", [["run", "--experiment", ""], ["report", "--experiment", " "],
                                  ["search", "--space", "grids/search_quick.yaml", "--study", ""]])
def test_an_empty_option_is_one_line_not_its_default(tmp_path, monkeypatch, capsys, args):
    from cli_runner import bench

    monkeypatch.chdir(tmp_path)
    assert bench(monkeypatch, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is empty; give a value, or leave the option out" in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_grids_dataset_paths_are_read_from_its_folder_and_dataset_from_the_working_directory(tmp_path,
                                                                                               monkeypatch):
    from bench.run.launch import Overrides, prepare

    def rows(label: str) -> str:
        return "".join(f'{{"text": "{label} {i}", "label": "{label}"}}\n' for i in range(25))

    folder, elsewhere = tmp_path / "grids", tmp_path / "elsewhere"
    for place, labels in ((folder, ("beside", "grid")), (elsewhere, ("working", "dir"))):
        (place / "ds").mkdir(parents=True)
        (place / "d.jsonl").write_text(rows(labels[0]) + rows(labels[1]), encoding="utf-8")
        (place / "ds" / "labels.jsonl").write_text("".join(f'{{"value": "{v}"}}\n' for v in labels), "utf-8")
    grid = folder / "g.yaml"
    grid.write_text(BASE.replace("[emotion]", "[d.jsonl, {path: d.jsonl, name: m, labels: {path: ds/labels.jsonl}}]"),
                    encoding="utf-8")
    monkeypatch.chdir(elsewhere)  # holds files of the same names, which the grid must not read
    labels = {s.dataset.name: {c.value for c in DatasetCache().get(s.dataset.config).card.categories}
              for s in specs_of(Path("..") / "grids" / "g.yaml")}
    assert labels == {"d": {"beside", "grid"}, "m": {"beside", "grid"}}
    planned = prepare(grid, Overrides(dataset="d.jsonl"), None, None, None, {})
    assert {c.value for c in planned.datasets.get(planned.graph.evaluations[0].dataset.config).card.categories} == \
        {"working", "dir"}  # --dataset: as written, from the working directory


@pytest.mark.parametrize("grid, args, suggested", [
    ("strategies: {icl: simlar-3}", [], "icl: 'simlar-3' is not a value of 'icl' (did you mean 'similar-3'?)"),
    ("strategies: {decodng: ppl}", [], "unknown strategy dimension 'decodng' (did you mean 'decoding'?)"),
    ("stratgies: {icl: zero}", [], "stratgies: unknown key (did you mean 'strategies'?); allowed: name,"),
    ("inference: {dtype: float23}", [], "'float23' is not a dtype (did you mean 'float32'?)"),
    ("baselines: [tfidf-logrg]", [], "unknown baseline 'tfidf-logrg' (did you mean 'tfidf-logreg'?)"),
    ("", ["--model", "smollm2-135"], "unknown model 'smollm2-135' (did you mean 'smollm2-135m'?)"),
    ("", ["--dataset", "emotions"], "unknown dataset 'emotions' (did you mean 'emotion'?)"),
    ("", ["--on", "rey"], "--on rey: no such launcher (did you mean 'ray'?)"),
    ("", ["--experiment", "x", "--dry-run"], None),  # nothing close: no suggestion, and no error
])
def test_a_mistyped_value_or_key_is_answered_with_the_closest_allowed_one(tmp_path, monkeypatch, capsys, grid, args,
                                                                         suggested):
    from cli_runner import bench

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "grid.yaml"
    path.write_text(BASE.replace("baselines: []\n", "") + grid + "\n", encoding="utf-8")
    assert bench(monkeypatch, "run", "--grid", str(path), *args) == (0 if suggested is None else 2)
    err = capsys.readouterr().err
    assert (suggested is None and not err) or suggested in err, err


def test_a_suggestion_is_only_made_when_one_is_close():
    from strategies.lookup import did_you_mean

    assert did_you_mean("simlar-3", ["similar-3", "random-3"]) == " (did you mean 'similar-3'?)"
    assert did_you_mean("xyz", ["similar-3", "random-3"]) == ""
