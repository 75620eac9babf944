"""`bench search`: the space file and its one-line errors, conditional parameters, determinism, pruning on examples
with a designed fake scorer, cached trials at no cost, best.yaml, two workers sharing one PostgreSQL study, the live
dashboard (a real server on loopback), and Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from cli_runner import bench, flat, run_cli
from mlflow.tracking import MlflowClient
from rich.console import Console

from bench.dashboard import serving
from bench.plan.datasets import DatasetCache
from bench.plan.errors import UserError
from bench.plan.space import read_space
from bench.run.executor import JobCallbacks
from bench.run.jobs import ROUND, KindPerformer, evaluation_examples, round_order
from bench.run.launch import Worker
from bench.run.progress import LineReporter
from bench.run.recorder import JobResult, MlflowRecorder
from bench.run.store import MemoryStore, SqlStore
from bench.run.workspace import Workspace
from bench.search import Search, SearchResult, best_grid, open_study, summarise
from reports.vocabulary import HASH_TAG, KIND_TAG, PREDICTIONS_ARTIFACT, PRUNED_TAG, TRIAL_STATE_TAG

ROOT = Path(__file__).resolve().parent.parent
SPACE = """name: space_test
datasets: [emotion]
models: [tiny-random]
eval: {limit: 150}
inference: {batch_size: 8, max_new_tokens: 4}
search: SEARCH
strategies:
  icl: [zero, random, fixed]
  shots: {low: 1, high: 2}
  decoding: [generate, ppl]
  ppl_norm: [mean, sum]
"""


def space_file(tmp_path: Path, search: str = "{seed: 0}", extra: str = "") -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("SEARCH", search) + extra, encoding="utf-8")
    return path


@pytest.mark.parametrize("change, message", [
    ({"strategies:\n  icl": "strategies:\n  colour: [red]\n  icl"}, "strategies.colour: unknown strategy dimension"),
    ({"decoding: [generate, ppl]": "decoding: [generate, beam]"}, "'beam' is not a value of 'decoding'"),
    ({"shots: {low: 1, high: 2}": "shots: {low: 3, high: 2}"}, "strategies.shots: low 3 is above high 2"),
    ({"inference": "training: {sft: {learning_rate: {low: 0, high: 0.1, log: true}}}\ninference"},
     "training.sft.learning_rate: a log range needs low > 0"),
    ({"  icl: [zero, random, fixed]\n  shots: {low: 1, high: 2}\n  decoding: [generate, ppl]\n"
      "  ppl_norm: [mean, sum]\n": "  decoding: ppl\n"}, "the space is empty"),
    ({"{seed: 0}": "{objectives: [accuracy, examples_per_s]}"}, "several objectives (accuracy, examples_per_s) "
                                                                  "cannot be pruned"),
    ({"{seed: 0}": "{objectives: [recall]}"}, "search.objectives: Value error, unknown objective 'recall'"),
    ({"inference": "training: {sft: {learning_rate: {low: 0.001, high: 0.01}}}\ninference",
      "{seed: 0}": "{sampler: bruteforce}"}, "bruteforce needs a finite space"),
    ({"models: [tiny-random]": "models: [tiny-random, smollm2-135m]"}, "a search optimises one dataset, one model"),
])
def test_a_bad_space_is_one_line_and_writes_nothing(tmp_path, tracking_uri, monkeypatch, capsys, change, message):
    text = SPACE.replace("SEARCH", "{seed: 0}")
    for old, new in change.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "space.yaml"
    path.write_text(text, encoding="utf-8")
    assert bench(monkeypatch, "search", "--space", str(path), "--trials", "2") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert not list(tmp_path.glob("*.db"))


def test_a_study_made_with_another_space_is_refused(tmp_path):
    storage, store = f"sqlite:///{tmp_path / 'optuna.db'}", MemoryStore()
    open_study(read_space(space_file(tmp_path)), "s", storage, store)
    with pytest.raises(UserError, match="study 's' in sqlite:///.* was made with another space"):
        open_study(read_space(space_file(tmp_path, extra="  labels: [names, numeric]\n")), "s", storage, store)


def test_conditional_parameters_are_asked_only_where_they_apply(tmp_path):
    training = ("training:\n  n_train: 8\n  sft: {learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}}\n"
                "  rl: {steps: {low: 1, high: 4}}\n  strategies: {method: [sft, sft+rl], rl_algo: [grpo, rloo], "
                "reasoning: [off, on], reasoning_source: [none, self]}\n")
    space = read_space(space_file(tmp_path, extra=training))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        space.sample(trial)
        params = trial.params
        seen |= set(params)
        assert ("infer.ppl_norm" in params) == (params["infer.decoding"] == "ppl")
        assert ("infer.shots" in params) == (params["infer.icl"] != "zero")
        method = params["train.method"]
        assert ("train.rl_algo" in params) == ("rl" in method) and ("train.rl.steps" in params) == ("rl" in method)
        assert ("train.sft.learning_rate" in params) == ("sft" in method)
        assert ("train.reasoning_source" in params) == (params.get("train.reasoning") == "on")
        if method == "none":  # the untrained model (evaluate_base) asks nothing about training
            assert not [p for p in params if p.startswith("train.") and p != "train.method"]
        study.tell(trial, 0.0)
    assert {"infer.ppl_norm", "train.rl_algo", "train.reasoning_source", "train.rl.steps"} <= seen


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask and tell by hand, without Study.optimize
def test_a_seeded_study_is_deterministic(tmp_path):
    space = read_space(space_file(tmp_path))

    def sequence(name: str) -> list[dict]:
        study = open_study(space, name, f"sqlite:///{tmp_path / (name + '.db')}", MemoryStore())
        points = []
        for _ in range(14):
            trial = study.ask()
            space.sample(trial)
            points.append(trial.params)
            study.tell(trial, len(str(trial.params)) % 7 / 7)  # a fixed function of the point
        return points

    assert sequence("a") == sequence("b")


class DesignedScorer:
    """Evaluations without a model: `ppl` runs get 80% of the examples right, `generate` runs 10% (in every round,
    so a pruner can tell early); counts what it evaluates."""

    def __init__(self, datasets: DatasetCache) -> None:
        self.datasets, self.evaluated = datasets, []

    def has_output(self, job) -> bool:
        return False

    def unit(self, job) -> str:
        return "examples"

    def evaluation_examples(self, job) -> int:
        return len(evaluation_examples(job, self.datasets))

    def costs(self, jobs) -> dict:
        return {}

    def __call__(self, job, out, callbacks: JobCallbacks) -> JobResult:
        import pandas as pd

        n = self.evaluation_examples(job)
        order = round_order(n, job.eval.sample_seed)
        right = {i: (k % 10 < 8) if job.strategy.decoding == "ppl" else (k % 10 == 0) for k, i in enumerate(order)}
        for end in range(ROUND, n + ROUND, ROUND):
            self.evaluated.append(job.key)
            if callbacks.on_partial:
                callbacks.on_partial([right[i] for i in order[:min(end, n)]])
        table = pd.DataFrame({"id": range(n), "gold": ["a"] * n, "prediction": ["a" if right[i] else "b"
                                                                              for i in range(n)]})
        return JobResult({"accuracy": sum(right.values()) / n, "macro_f1": 0.1, "examples_per_s": 1.0},
                         tables={PREDICTIONS_ARTIFACT: table})


def _search(tmp_path: Path, tracking: str, study: str, trials: int, scorer: DesignedScorer):
    space = read_space(space_file(tmp_path))
    store = SqlStore(f"sqlite:///{tmp_path / 'jobs.db'}", "space_test")
    worker = Worker(store, MlflowRecorder(tracking, "space_test", store), Workspace(tmp_path / "cache"), scorer)
    console = Console(file=io.StringIO())
    optuna_study = open_study(space, study, f"sqlite:///{tmp_path / 'optuna.db'}", store)
    searcher = Search(space, optuna_study, worker, scorer.datasets, LineReporter(console), 30, console)
    searcher.optimize(trials)
    return summarise(space, optuna_study)


def test_worse_trials_are_pruned_and_finished_specs_cost_nothing(tmp_path, tracking_uri):
    scorer = DesignedScorer(DatasetCache())
    result = _search(tmp_path, tracking_uri, "first", 14, scorer)
    states = {t.state for t in result.trials}
    assert "PRUNED" in states and "COMPLETE" in states and len(result.trials) == 14
    pruned = [t for t in result.trials if t.state == "PRUNED"]
    assert all(t.params["infer.decoding"] == "generate" and t.examples < 150 for t in pruned)
    assert all(t.params["infer.decoding"] == "ppl" for t in result.trials if t.number in result.best)
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("space_test").experiment_id], max_results=500)
    killed = [r for r in runs if r.data.tags.get(KIND_TAG) == "eval" and r.info.status == "KILLED"]
    assert killed and all(PRUNED_TAG in r.data.tags for r in killed)  # pruned: KILLED, tagged, partial figures kept
    assert all("examples_evaluated" in r.data.metrics for r in killed)
    trial_runs = [r for r in runs if r.data.tags.get(KIND_TAG) == "trial"]
    assert len(trial_runs) == 14 and {r.data.tags[TRIAL_STATE_TAG] for r in trial_runs} >= {"COMPLETE", "PRUNED"}
    eval_params = next(r.data.params for r in runs if r.data.tags.get(KIND_TAG) == "eval")
    assert set(trial_runs[0].data.params) == set(eval_params)  # trials and grid runs line up in one compare view

    finished = {r.data.tags[HASH_TAG] for r in runs if r.data.tags.get(KIND_TAG) == "eval"
                and r.info.status == "FINISHED"}
    again = DesignedScorer(scorer.datasets)
    second = _search(tmp_path, tracking_uri, "second", 10, again)
    cached = [t for t in second.trials if t.state == "cached"]
    assert cached and not set(again.evaluated) & finished  # a finished spec did no work
    assert all(t.examples == 0 for t in cached)


def test_search_on_the_tiny_model_writes_best_yaml_that_bench_run_finds_finished(tmp_path, fresh_cache,
                                                                                  tracking_uri, monkeypatch, capsys):
    path = space_file(tmp_path, "{seed: 0}").read_text().replace("limit: 150", "limit: 40")
    (tmp_path / "space.yaml").write_text(path, encoding="utf-8")
    assert bench(monkeypatch, "search", "--space", str(tmp_path / "space.yaml"), "--trials", "4") == 0
    out = capsys.readouterr().out
    assert "best trial" in out and (tmp_path / "search" / "best.yaml").is_file()
    page = (tmp_path / "search" / "search.html").read_text()
    assert "<svg" in page and "Every trial" in page and "src=\"http" not in page
    assert run_cli(monkeypatch, "--grid", str(tmp_path / "search" / "best.yaml"), "--dry-run") == 0
    assert "1 runs, 1 already finished, 0 to run" in " ".join(capsys.readouterr().out.split())


def test_two_workers_share_one_postgresql_study_and_evaluate_no_spec_twice(tmp_path, fresh_cache, servers):
    tracking, server = servers
    space = space_file(tmp_path, "{seed: 3, pruner: none}").read_text().replace("limit: 150", "limit: 24")
    (tmp_path / "space.yaml").write_text(space.replace("name: space_test", "name: shared"), encoding="utf-8")
    command = [sys.executable, "-m", "bench", "search", "--space", str(tmp_path / "space.yaml"), "--trials", "8",
               "--storage", f"{server}/optuna", "--tracking-uri", tracking, "--store", f"{server}/jobs"]
    env = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    workers = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n=====\n".join(o[-1500:] for o in outputs)
    study = optuna.load_study(study_name="shared", storage=f"{server}/optuna")
    done = [t for t in study.trials if t.state.is_finished()]
    assert 8 <= len(done) <= 9  # the budget is global (a trial may start as the other worker ends the last)
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id], max_results=500)
    evaluated = [r.data.tags[HASH_TAG] for r in runs if r.data.tags.get(KIND_TAG) == "eval"
                 and r.info.status == "FINISHED"]
    assert len(evaluated) == len(set(evaluated))  # no spec evaluated twice
    assert all("s3cret-pw" not in out for out in outputs)


def test_a_search_on_two_objectives_gives_its_pareto_front_in_best_yaml(tmp_path, fresh_cache, tracking_uri,
                                                                         monkeypatch, capsys):
    text = space_file(tmp_path, "{objectives: [accuracy, examples_per_s], sampler: nsga2, pruner: none, seed: 0}")
    text.write_text(text.read_text().replace("limit: 150", "limit: 24"), encoding="utf-8")
    assert bench(monkeypatch, "search", "--space", str(text), "--trials", "4") == 0
    out = flat(capsys.readouterr().out)
    assert "FAIL" not in out and "Pareto front" in out and "reproduces the Pareto front" in out
    best = yaml.safe_load((tmp_path / "search" / "best.yaml").read_text())
    assert best["description"].startswith("the Pareto front (trials ")
    assert "<h2>Pareto front</h2>" in (tmp_path / "search" / "search.html").read_text()
    assert run_cli(monkeypatch, "--grid", str(tmp_path / "search" / "best.yaml"), "--dry-run") == 0
    # every front trial's spec is finished (two front trials of one spec are one run: examples_per_s is timing)
    assert re.search(r"(\d+) runs, \1 already finished, 0 to run", flat(capsys.readouterr().out))


def test_a_search_whose_every_trial_failed_exits_1_with_the_first_reason(tmp_path, fresh_cache, tracking_uri,
                                                                          monkeypatch, capsys):
    def broken(self, job, out, callbacks):
        raise RuntimeError("the GPU caught fire")

    monkeypatch.setattr(KindPerformer, "__call__", broken)
    assert bench(monkeypatch, "search", "--space", str(space_file(tmp_path, "{pruner: none}")), "--trials", "2") == 1
    captured = capsys.readouterr()
    assert "trials: 2 FAIL" in captured.out and "Traceback" not in captured.err
    errors = [line for line in captured.err.splitlines() if "error" in line.lower()]  # MLflow's INFO lines aside
    assert len(errors) == 1 and re.fullmatch(r"error: every trial failed \(2\); the first, trial 0: "
                                             r"emotion/tiny-random/\S+ failed: RuntimeError: the GPU caught fire",
                                             errors[0]), captured.err
    assert "FAIL: " in (tmp_path / "search" / "search.html").read_text()
    client = MlflowClient(tracking_uri)
    study = client.search_runs([client.get_experiment_by_name("space_test").experiment_id],
                               filter_string="tags.mlflow.runName LIKE 'study %'")
    assert [r.info.status for r in study] == ["FAILED"]


def test_best_yaml_of_a_front_holds_each_trial_that_trains_alike_and_names_the_others():
    study = optuna.create_study(directions=["maximize", "maximize"])
    base = {"name": "s", "datasets": ["emotion"], "models": ["tiny-random"], "baselines": []}
    grids = [{**base, "strategies": {"icl": "zero"}}, {**base, "strategies": {"decoding": "ppl"}},
             {**base, "training": {"strategies": [{"method": "sft"}]}, "strategies": {"icl": "zero"}}]
    for values, grid in zip([[0.5, 9.0], [0.7, 3.0], [0.6, 5.0]], grids):
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs={"grid": grid, "spec": str(values)}))
    best = best_grid(SearchResult(study, [], [1, 2, 0]), "exp")  # front, best on the first objective first
    assert best["strategies"] == [{"decoding": "ppl"}, {"icl": "zero"}] and best["name"] == "exp"
    assert "training" not in best and best["description"] == (
        f"the Pareto front (trials 1, 0) of study {study.study_name}: [0.7, 3.0]; [0.5, 9.0]; front trials 2 train "
        "otherwise (see search.html)")


def _api(address: str, path: str):
    """The dashboard's JSON answer at `path`, fetched over HTTP."""
    with urllib.request.urlopen(address.removesuffix("/dashboard") + path, timeout=10) as answer:
        return json.load(answer)


def test_the_dashboard_serves_the_study_on_loopback_and_leaves_nothing_behind(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="watched", storage=storage)
    study.add_trial(optuna.trial.create_trial(value=0.5, params={"infer.icl": "zero"}, distributions={
        "infer.icl": optuna.distributions.CategoricalDistribution(["zero", "random-1"])}))
    threads = set(threading.enumerate())
    with serving(storage, 0) as address:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/dashboard", address)
        [summary] = _api(address, "/api/studies")["study_summaries"]
        assert summary["study_name"] == "watched"
        trials = _api(address, f"/api/studies/{summary['study_id']}?after=0")["trials"]
        assert [(t["state"], t["values"]) for t in trials] == [("Complete", [0.5])]
        port = int(address.split(":")[2].split("/")[0])
        with pytest.raises(UserError, match=rf"cannot serve the dashboard on 127\.0\.0\.1:{port} .*give another port"):
            with serving(storage, port):
                pass
    assert set(threading.enumerate()) == threads  # its threads joined
    with pytest.raises(urllib.error.URLError):  # and its socket closed
        _api(address, "/api/studies")


class Lines:
    """A subprocess's output lines, read from a thread, to wait for one that matches."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self._queue.put(line) for line in process.stdout], daemon=True).start()

    def wait_for(self, pattern: str, timeout_s: float = 120) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                self.seen.append(self._queue.get(timeout=0.2))
            except queue.Empty:
                continue
            if found := re.search(pattern, self.seen[-1]):
                return found
        raise AssertionError(f"no line matching {pattern!r} in {timeout_s:g} s:\n" + "".join(self.seen[-30:]))


def _started(command: list[str], cwd: Path) -> tuple[subprocess.Popen, Lines]:
    env = os.environ | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "bench", *command], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    return process, Lines(process)


def test_ctrl_c_ends_a_search_with_one_line_and_writes_what_its_finished_trials_found(tmp_path, fresh_cache,
                                                                                      tracking_uri):
    space = space_file(tmp_path, "{seed: 0, pruner: none}")
    process, lines = _started(["search", "--space", str(space), "--trials", "10000", "--limit", "8", "--dashboard",
                               "--dashboard-port", "0"], tmp_path)
    try:
        address = lines.wait_for(r"optuna-dashboard: (http://127\.0\.0\.1:\d+/dashboard)")[1]
        assert [s["study_name"] for s in _api(address, "/api/studies")["study_summaries"]] == ["space_test"]
        lines.wait_for(r"trial 1 (COMPLETE|cached)")
        study_id = _api(address, "/api/studies")["study_summaries"][0]["study_id"]
        assert len(_api(address, f"/api/studies/{study_id}?after=0")["trials"]) >= 2  # live: the trials so far
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert re.fullmatch(r"interrupted: \d+ trial\(s\) finished; wrote search/best\.yaml and search/search\.html; "
                        r"the same command goes on with the study\n", err), err
    assert yaml.safe_load((tmp_path / "search" / "best.yaml").read_text())["eval"]["limit"] == 8  # --limit: identity
    assert "Every trial" in (tmp_path / "search" / "search.html").read_text()
    with pytest.raises(urllib.error.URLError):  # the dashboard stopped with the command
        _api(address, "/api/studies")


def test_bench_dashboard_serves_a_storage_until_ctrl_c(tmp_path):
    optuna.create_study(study_name="kept", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    from servers import free_port

    port = free_port()
    process, lines = _started(["dashboard", "--port", str(port)], tmp_path)
    try:
        address = lines.wait_for(rf"^(http://127\.0\.0\.1:{port}/dashboard) \(this machine only\)", 60)[1]
        assert lines.seen[0] == f"optuna-dashboard of sqlite:///{tmp_path}/optuna.db:\n"
        assert [s["study_name"] for s in _api(address, "/api/studies")["study_summaries"]] == ["kept"]
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0 and not err, err
    lines.wait_for("dashboard stopped", 5)


def test_bench_dashboard_without_a_storage_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert bench(monkeypatch, "dashboard") == 2
    assert capsys.readouterr().err == f"error: no Optuna storage at {tmp_path / 'optuna.db'}; run `bench search` " \
                                      "here first, or give its --storage\n"
    assert not list(tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore:PedAnovaImportanceEvaluator computes")  # lower is better: as the search gives it
def test_search_page_says_each_thing_once_and_draws_conditional_parameters_as_not_asked():
    from reports.search_page import SearchPage, TrialRow, to_html

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    rows = []
    for _ in range(12):
        trial = study.ask()
        decoding = trial.suggest_categorical("infer.decoding", ["generate", "ppl"])
        if decoding == "ppl":  # asked only under ppl, as the space asks it
            trial.suggest_categorical("infer.ppl_norm", ["mean", "sum"])
        value = (0.6 if decoding == "ppl" else 0.2) + trial.number / 100
        study.tell(trial, value)
        rows.append(TrialRow(trial.number, "COMPLETE", [value], f"spec {trial.number}", trial.params, 8, 1.0))
    importances = {"accuracy": optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target=lambda t: -t.values[0])}
    page = to_html(SearchPage(study, "t", "s", ["accuracy"], rows, [study.best_trial.number], importances,
                              [lambda t: -t.values[0]]))
    assert page.count("Parameter importance for accuracy (PED-ANOVA)") == 1
    assert "cached trial" not in page and "pruned trial" not in page  # nothing to explain: none were
    parallel = page[page.index("<h2>Parallel coordinates"):page.index("<h2>Every trial")]
    assert "not asked" in parallel and ">None<" not in parallel
    assert "#e5e5e5" not in parallel.lower()  # white, not ggplot's grey (Optuna's plots set that style globally)


def test_close_points_share_one_label_and_titles_wrap_only_at_the_terminal(capsys):
    import matplotlib.pyplot as plt

    from bench.cli import _table, console
    from reports.charts import _label_groups

    _, axes = plt.subplots(figsize=(6, 4))
    points = [(1.0, 0.50), (10.0, 0.90), (1.001, 0.5005), (5.0, 0.2)]
    axes.scatter(*zip(*points))
    assert list(_label_groups(axes, points).values()) == [[1, 3], [2], [4]]
    plt.close("all")
    console.print(_table("parameter importance for accuracy (PED-ANOVA)", ["parameter", "importance"]))
    assert "parameter importance for accuracy (PED-ANOVA)\n" in capsys.readouterr().out
