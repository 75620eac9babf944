"""`bench report` on a synthetic store with known predictions: leaderboard values, paired tests and effects checked
by hand, the files it writes, its one-line errors, and the HTML opened in real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from cli_runner import bench, flat
from servers import require

from reports.analysis import build_boards, strategy_effects
from reports.store import read_store
from reports.vocabulary import ENV_TAG_PREFIX, GRID_TAG, HASH_TAG, KIND_TAG
from strategies.registry import Strategy

N = 20
GOLD = ["a", "b"] * 10
# zero: right on the first 10; zero+ppl: right on the first 14; similar-3: right on 4..17 (14 right)
CORRECT = {"zero": set(range(10)), "zero+ppl": set(range(14)), "similar-3": set(range(4, 18))}
STRATEGIES = {"zero": Strategy(), "zero+ppl": Strategy(decoding="ppl"), "similar-3": Strategy(icl="similar-3")}


def _wrong(label: str) -> str:
    return "b" if label == "a" else "a"


def _log_eval(name: str, strategy: Strategy, right: set[int], with_predictions: bool = True,
              baseline: str = "none", seed: int = 0, tags: dict[str, str] | None = None) -> None:
    job = f"{name}:{seed}" if seed else name
    with mlflow.start_run(run_name=name, nested=True, tags={HASH_TAG: job, KIND_TAG: "eval", **(tags or {})}):
        params = {"dataset": "toy", "model": "m", "eval.split": "test", "eval.limit": "none", "seed": str(seed),
                  "eval.sample_seed": "0", "train.method": "none", "baseline": baseline,
                  **{f"infer.{k}": v for k, v in strategy.as_dict().items()}}
        mlflow.log_params(params)
        accuracy = len(right) / N
        mlflow.log_metrics({"accuracy": accuracy, "examples_per_s": 10.0 + len(right), "invalid_rate": 0.0})
        if with_predictions:
            predictions = [g if i in right else _wrong(g) for i, g in enumerate(GOLD)]
            mlflow.log_table({"id": [f"test-{i:02d}" for i in range(N)], "text": ["t"] * N, "gold": GOLD,
                              "prediction": predictions, "raw_output": predictions, "candidate_scores": [""] * N},
                             artifact_file="predictions.json")


@pytest.fixture
def store(tracking_uri, tmp_path, monkeypatch) -> str:
    monkeypatch.setenv("GENCLSBENCH_CACHE", str(tmp_path / "cache"))
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("synthetic")
    with mlflow.start_run(run_name="grid", tags={GRID_TAG: "synthetic"}):
        mlflow.log_metric("runs_planned", 5)  # 3 finish, 1 fails, 1 never starts
        for name, strategy in STRATEGIES.items():
            _log_eval(name, strategy, CORRECT[name])
        with pytest.raises(RuntimeError), mlflow.start_run(run_name="toy/m/random-2", nested=True,
                                                          tags={HASH_TAG: "x", KIND_TAG: "eval"}):
            raise RuntimeError("crash")
    return tracking_uri


def test_leaderboard_tests_and_effects_by_hand(store, tmp_path):
    boards = build_boards(read_store(store, "synthetic", tmp_path / "cache"))
    assert len(boards) == 1
    board = boards[0]
    rows = {r.strategy: r for r in board.rows}
    assert board.baseline is rows["zero"]
    assert [r.accuracy.value for r in board.rows] == [0.7, 0.7, 0.5]  # sorted by accuracy (then F1, then name)
    assert rows["zero+ppl"].accuracy.value == 0.7 and rows["zero"].accuracy.value == 0.5
    # interval: percentiles of the accuracy over the shared resamples of the 20 examples
    draws = np.random.default_rng(0).integers(0, N, size=(1000, N))  # resamples(N): the board's seeded draw
    correct = np.array([i in CORRECT["zero+ppl"] for i in range(N)])
    replicates = correct[draws].mean(axis=1)
    assert (rows["zero+ppl"].accuracy.low, rows["zero+ppl"].accuracy.high) == pytest.approx(
        tuple(np.percentile(replicates, [2.5, 97.5])))
    # McNemar vs zero: zero+ppl has 4 discordant pairs, all in its favour: p = 2 / 2^4 = .125;
    # similar-3 has 8 discordant (4 only-zero: 0..3, 4 only-similar: 10..13... and 14..17): 4 vs 8 ->
    # p = 2 * P(X <= 4 | n=12) = 2 * (1 + 12 + 66 + 220 + 495) / 4096 = .3877; Holm: .125 x 2 = .25, .3877 x 1
    assert rows["zero+ppl"].p_accuracy == pytest.approx(0.25)
    assert rows["similar-3"].p_accuracy == pytest.approx(2 * (1 + 12 + 66 + 220 + 495) / 4096)
    effects = {(e.dimension, e.value): e for e in strategy_effects(boards)}
    assert effects[("decoding", "ppl")].accuracy.value == pytest.approx(0.2) and effects[("decoding", "ppl")].pairs == 1
    assert effects[("icl", "similar-3")].accuracy.value == pytest.approx(0.2)


def test_a_classical_baseline_never_pairs_as_a_strategy(store, tmp_path):
    """Regression: a TF-IDF run logged with the strategy params of a zero-shot generate run (as older versions did)
    was paired as 'generate' and flipped the sign of the decoding effect."""
    with mlflow.start_run(run_name="toy/tfidf", tags={GRID_TAG: "synthetic"}):
        _log_eval("toy/tfidf", Strategy(), set(range(20)), baseline="tfidf-logreg")
    boards = build_boards(read_store(store, "synthetic", tmp_path / "cache"))
    assert [r.kind for r in boards[0].rows].count("classical") == 1
    effects = {(e.dimension, e.value): e for e in strategy_effects(boards)}
    assert effects[("decoding", "ppl")].pairs == 1 and effects[("decoding", "ppl")].accuracy.value == pytest.approx(0.2)
    assert boards[0].baseline.strategy == "zero"  # never the classical row, though it is the most accurate


def test_report_command_writes_logs_and_prints(store, tmp_path, monkeypatch, capsys):
    out = tmp_path / "rep"
    assert bench(monkeypatch, "report", "--experiment", "synthetic", "--out", str(out)) == 0
    printed = flat(capsys.readouterr().out)
    assert "zero+ppl" in printed and "0.700" in printed and f"wrote {out}/report.md and {out}/report.html" in printed
    markdown = (out / "report.md").read_text()
    assert "| zero+ppl | 0.700 [" in markdown and "## Strategy effects" in markdown
    assert "\n| strategy | accuracy [95% CI] |" in markdown and "train s" not in markdown  # nothing trained: no column
    assert "Not finished (not reported): 1 run(s): toy/m/random-2 (FAILED)" in markdown
    assert "planned 1 more run(s) that never started" in markdown
    assert "1 run(s) not finished, 1 never started" in printed
    page = (out / "report.html").read_text()
    assert "<svg" in page and not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched
    parent = mlflow.search_runs(experiment_names=["synthetic"], filter_string=f"tags.`{GRID_TAG}` = 'synthetic'",
                                output_format="list")[0]
    logged = [a.path for a in mlflow.MlflowClient(store).list_artifacts(parent.info.run_id, "report")]
    assert sorted(logged) == ["report/report.html", "report/report.md"]


def test_each_experiments_report_goes_to_its_own_folder_by_default(store, monkeypatch, capsys):
    from bench.cli import _report_folder

    assert bench(monkeypatch, "report") == 0  # the most recent experiment, into report/<its name>/
    assert "wrote report/synthetic/report.md and report/synthetic/report.html" in flat(capsys.readouterr().out)
    assert (Path.cwd() / "report" / "synthetic" / "report.html").is_file()
    assert [_report_folder(n) for n in ("a/b", "..", "zh 中文")] == [Path("report/a_b"), Path("report/_."),
                                                                     Path("report/zh_中文")]


@pytest.mark.parametrize("setup, args, message", [
    (None, ["--experiment", "nope"], "no tracking store at"),
    ("empty", ["--experiment", "nope"], "experiment 'nope' does not exist in sqlite:///"),
    ("empty", ["--experiment", "empty"], "experiment 'empty' has no finished evaluation runs"),
    ("no-predictions", ["--experiment", "bare"], "have no predictions.json artifact"),
])
def test_report_errors_are_one_line(tracking_uri, tmp_path, monkeypatch, capsys, setup, args, message):
    mlflow.set_tracking_uri(tracking_uri)
    if setup == "empty":
        mlflow.create_experiment("empty")
    if setup == "no-predictions":
        mlflow.set_experiment("bare")
        with mlflow.start_run(run_name="grid", tags={GRID_TAG: "bare"}):
            _log_eval("zero", Strategy(), CORRECT["zero"], with_predictions=False)
    capsys.readouterr()  # what setting up the store printed
    assert bench(monkeypatch, "report", *args, "--out", str(tmp_path / "rep")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not (tmp_path / "rep").exists()
    assert setup is not None or not (tmp_path / "mlflow.db").exists()  # no empty store left behind


def test_html_report_in_headless_chromium(store, tmp_path, monkeypatch):
    require(shutil.which("chromium") is not None, "Debian's chromium")
    out = tmp_path / "rep"
    assert bench(monkeypatch, "report", "--experiment", "synthetic", "--out", str(out)) == 0
    page = (out / "report.html").resolve().as_uri()
    flags = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []  # no console message at all, errors included
    assert 'data-ready="yes"' in dom.stdout and "data-errors" not in dom.stdout
    first_table = dom.stdout.split("<tbody>")[1].split("</tbody>")[0]
    assert first_table.count("<tr") == 3 and "zero+ppl" in first_table
    assert dom.stdout.count("<svg") >= 1
    shot = Path("report_screenshot.png").resolve()
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1400,1800", page], capture_output=True,
                   timeout=120, check=True)
    assert shot.stat().st_size > 10_000


def test_a_report_leaves_a_running_grid_running_and_logs_to_the_store_it_read(store, tmp_path, monkeypatch):
    """Regression: reporting on a grid still at work marked its parent FINISHED; `--tracking-uri X` logged to (and
    created) ./mlflow.db instead of X."""
    client = mlflow.MlflowClient(store)
    parent = client.search_runs([client.get_experiment_by_name("synthetic").experiment_id],
                                f"tags.`{GRID_TAG}` = 'synthetic'")[0]
    client.update_run(parent.info.run_id, status="RUNNING")  # the grid is still at work
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert bench(monkeypatch, "report", "--tracking-uri", store, "--out", str(tmp_path / "rep")) == 0
    assert client.get_run(parent.info.run_id).info.status == "RUNNING"
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "report")] == ["report/report.html",
                                                                                       "report/report.md"]
    assert not (elsewhere / "mlflow.db").exists()


def test_terminal_tables_fit_80_columns(store, tmp_path, monkeypatch):
    from rich.console import Console

    from bench import cli

    narrow = Console(width=80, record=True, file=open(tmp_path / "out.txt", "w"))
    monkeypatch.setattr(cli, "console", narrow)
    assert bench(monkeypatch, "report", "--experiment", "synthetic", "--out", str(tmp_path / "rep")) == 0
    text = narrow.export_text()
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    assert "accuracy [95% CI]" in text and "zero+ppl" in text


def test_a_board_says_which_classes_its_sample_lacks(tracking_uri, tmp_path, monkeypatch):
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("classes")
    with mlflow.start_run(run_name="grid", tags={GRID_TAG: "classes"}):
        with mlflow.start_run(run_name="zero", nested=True, tags={HASH_TAG: "z", KIND_TAG: "eval"}):
            mlflow.log_params({"dataset": "toy", "model": "m", "eval.split": "test", "eval.limit": "20",
                               "eval.sample_seed": "0", "train.method": "none", "baseline": "none",
                               **{f"infer.{k}": v for k, v in Strategy().as_dict().items()}})
            mlflow.log_metrics({"accuracy": 0.5, "n_classes": 77})
            mlflow.log_table({"id": [f"t{i}" for i in range(N)], "gold": GOLD, "prediction": GOLD,
                              "text": ["t"] * N, "raw_output": GOLD, "candidate_scores": [""] * N},
                             artifact_file="predictions.json")
    board = build_boards(read_store(tracking_uri, "classes", tmp_path / "cache"))[0]
    assert any("75 of the dataset's 77 classes never occur as gold in these 20 examples" in n for n in board.notes)


def test_a_board_notes_rows_made_under_different_library_versions(tracking_uri, tmp_path):
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("versions")
    same = {ENV_TAG_PREFIX + "transformers": "5.23.0", ENV_TAG_PREFIX + "device": "cpu",
            ENV_TAG_PREFIX + "mlflow": "3.17.2"}
    torch_of = {"zero": "2.13.0", "zero+ppl": "2.13.0", "similar-3": "2.14.0"}
    with mlflow.start_run(run_name="grid", tags={GRID_TAG: "versions"}):
        for name, strategy in STRATEGIES.items():
            mlflow_of_row = {ENV_TAG_PREFIX + "mlflow": "3.18.0"} if name == "zero" else {}
            _log_eval(name, strategy, CORRECT[name],
                      tags={**same, ENV_TAG_PREFIX + "torch": torch_of[name], **mlflow_of_row})
    board = build_boards(read_store(tracking_uri, "versions", tmp_path / "cache"))[0]
    assert [n for n in board.notes if "rows produced under" in n] == [
        "rows produced under different torch versions (2.13.0 (2 rows), 2.14.0 (1 row)): a difference between them "
        "may come from that alone"]  # mlflow differs too, but it does not change results


def test_one_row_per_job_the_newest_finished_run_and_killed_runs_listed(tracking_uri, tmp_path):
    """A job run again (after a failure, or a killed worker) is one row; one that never finished is listed with the
    status of its newest run."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("again")
    client = mlflow.MlflowClient(tracking_uri)
    with mlflow.start_run(run_name="grid", tags={GRID_TAG: "again"}):
        _log_eval("zero", Strategy(), CORRECT["zero"])  # hash "zero", finished
        for name, status in (("zero+ppl", "KILLED"), ("zero+ppl", "FINISHED"), ("similar-3", "KILLED")):
            with mlflow.start_run(run_name=name, nested=True, tags={HASH_TAG: name, KIND_TAG: "eval"}) as run:
                pass
            client.set_terminated(run.info.run_id, status)
        _log_eval("zero+ppl", STRATEGIES["zero+ppl"], CORRECT["zero+ppl"])  # the retry that finished
    data = read_store(tracking_uri, "again", tmp_path / "cache")
    assert sorted(data.runs["run_name"].to_list()) == ["zero", "zero+ppl"]
    assert data.unfinished == ["similar-3 (KILLED)"]


def test_seeds_are_aggregated_by_hand(tracking_uri, tmp_path):
    """random-2 under seeds 0, 1, 2 (12, 14 and 9 right) against zero-shot run once (10 right); fixed-2 under the
    same seeds, identical each time (15 right)."""
    from reports.seeds import seed_summaries

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("seeds")
    with mlflow.start_run(run_name="grid", tags={GRID_TAG: "seeds"}):
        _log_eval("zero", Strategy(), set(range(10)))
        for seed, right in enumerate((12, 14, 9)):
            _log_eval("random-2", Strategy(icl="random-2"), set(range(right)), seed=seed)
            _log_eval("fixed-2", Strategy(icl="fixed-2"), set(range(15)), seed=seed)
    boards = build_boards(read_store(tracking_uri, "seeds", tmp_path / "cache"))
    summaries = {s.label: s for s in seed_summaries(boards)}
    assert set(summaries) == {"zero", "random-2", "fixed-2"}
    rand, fixed, zero = summaries["random-2"], summaries["fixed-2"], summaries["zero"]
    assert rand.seeds == ("0", "1", "2") and zero.seeds == ("0",) and zero.vs_baseline is None
    assert rand.accuracy.value == pytest.approx(35 / 60) and rand.accuracy_sd == pytest.approx(np.std([.6, .7, .45],
                                                                                                       ddof=1))
    # the difference from zero-shot (0.5) per seed: +.10, +.20, -.05: the mean +.0833, the same sign in 2 of 3
    assert rand.vs_baseline.value == pytest.approx(0.25 / 3) and (rand.same_sign, rand.pairs) == (2, 3)
    assert not rand.holds_in_every_seed
    assert fixed.vs_baseline.value == pytest.approx(0.25) and fixed.holds_in_every_seed and fixed.accuracy_sd == 0
    # identical seeds: the interval is the one run's own; differing seeds widen it beyond any one seed's
    one_run = next(r for r in boards[0].rows if r.strategy == "fixed-2")
    assert (fixed.accuracy.low, fixed.accuracy.high) == (one_run.accuracy.low, one_run.accuracy.high)
    widths = [r.accuracy.high - r.accuracy.low for r in boards[0].rows if r.strategy == "random-2"]
    assert rand.accuracy.high - rand.accuracy.low > max(widths)
    # the strategy effects pair zero-shot, run once, with each seed of random-2
    effect = next(e for e in strategy_effects(boards) if e.value == "random-2")
    assert effect.pairs == 3 and effect.accuracy.value == pytest.approx(0.25 / 3)


def test_templates_are_aggregated_by_hand(tracking_uri, tmp_path, monkeypatch):
    """zero and zero+ppl, each under the templates default, question and terse: zero right on 10, 12 and 8 of 20
    examples, zero+ppl on 14, 9 and 13. By hand: zero's mean 0.5, lowest 0.4 (terse), highest 0.6 (question), sd
    0.1; zero+ppl's mean 0.6 and its gain over zero template by template +0.2, -0.15, +0.25: mean +0.1, and it
    changes sign. zero+ppl moves more with the wording (sd 0.132 > 0.1) and leads under two templates of three."""
    from reports.render import to_markdown
    from reports.templates import by_sensitivity, template_summaries, top_rankings

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("templates")
    right = {"zero": (10, 12, 8), "zero+ppl": (14, 9, 13)}
    with mlflow.start_run(run_name="grid", tags={GRID_TAG: "templates"}):
        for name, counts in right.items():
            for template, n in zip(("default", "question", "terse"), counts):
                strategy = Strategy(decoding="ppl" if name == "zero+ppl" else "generate", template=template)
                _log_eval(strategy.tag(), strategy, set(range(n)))
    boards = build_boards(read_store(tracking_uri, "templates", tmp_path / "cache"))
    board = boards[0]
    assert board.baseline.label == "zero" and len(board.rows) == 6
    assert {r.label: (r.base_label, r.template) for r in board.rows}["zero+ppl+tpl-terse"] == ("zero+ppl", "terse")
    summaries = {s.label: s for s in template_summaries(boards)}
    zero, ppl = summaries["zero"], summaries["zero+ppl"]
    assert zero.accuracy_by_template == pytest.approx({"default": 0.5, "question": 0.6, "terse": 0.4})
    assert zero.accuracy.value == pytest.approx(0.5) and zero.accuracy_sd == pytest.approx(0.1)
    assert zero.lowest == ("terse", pytest.approx(0.4)) and zero.highest == ("question", pytest.approx(0.6))
    assert zero.vs_baseline is None and not zero.flips
    assert ppl.accuracy.value == pytest.approx(0.6) and ppl.accuracy_sd == pytest.approx(np.std([.7, .45, .65], ddof=1))
    assert ppl.gains == pytest.approx({"default": 0.2, "question": -0.15, "terse": 0.25})
    assert ppl.vs_baseline.value == pytest.approx(0.1) and ppl.flips
    assert ppl.accuracy.low < 0.6 < ppl.accuracy.high
    assert [s.label for s in by_sensitivity(list(summaries.values()))] == ["zero+ppl", "zero"]
    ranking = top_rankings(list(summaries.values()))[0]
    assert ranking.by_mean == ("zero+ppl", "zero") and ranking.kept == ["default", "terse"]
    assert ranking.by_template["question"] == ("zero", "zero+ppl")
    # the strategy effects pair within a template: ppl over generate once per template, +0.1 on average
    effects = {(e.dimension, e.value): e for e in strategy_effects(boards)}
    assert effects[("decoding", "ppl")].pairs == 3 and effects[("decoding", "ppl")].accuracy.value == pytest.approx(0.1)
    assert effects[("template", "question")].accuracy.value == pytest.approx((0.1 - 0.25) / 2)
    from reports.render import Report

    markdown = to_markdown(Report("templates", "store", boards, [], [], [], templates=list(summaries.values())))
    assert "## Across templates" in markdown and "## Prompt sensitivity" in markdown
    assert "| zero+ppl | 3 | 0.600 [" in markdown
    assert "default +0.200, question -0.150, terse +0.250 | yes |" in markdown
    assert "the same order under 2 of 3 templates (default, terse); question: zero > zero+ppl" in markdown
