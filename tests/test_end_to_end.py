"""A whole grid on tiny-random into a temporary MLflow store: runs, params, metrics, artifacts, the UI's first view,
the prompt registry, resume, faults."""

import json
import platform
from importlib.metadata import version
from pathlib import Path

import mlflow
import pytest
from cli_runner import bench, flat, run_cli

import runners.predict
from bench.run.launch import Overrides
from bench.run.recorder import JobResult, MlflowRecorder
from bench.run.store import SqlStore
from bench.run.ui_view import VIEW_TAG_PREFIX, runs_route, view_key
from reports.vocabulary import ENV_TAG_PREFIX, ERROR_ARTIFACT, ERROR_TAG, GRID_TAG, KIND_TAG, PROMPT_TAG
from strategies.templates import registry_prompt

GRID = """
name: e2e
datasets: [emotion]
models: [tiny-random]
eval: {split: test, limit: 6}
inference: {batch_size: 4, max_new_tokens: 4, reasoning_max_new_tokens: 8}
baselines: []
strategies:
  - icl: [zero, similar-2]
    decoding: [generate, ppl]
  - {definitions: on, uncertain: on, labels: numeric, decoding: ppl, ppl_norm: sum}
  - {reasoning: on, icl: fixed-2}
"""


@pytest.fixture
def grid_file(tmp_path: Path) -> Path:
    path = tmp_path / "e2e.yaml"
    path.write_text(GRID, encoding="utf-8")
    return path


def runs(uri: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["e2e"], output_format="list")


def test_grid_logs_parent_and_children_then_resumes(grid_file, tracking_uri, monkeypatch, capsys):
    assert run_cli(monkeypatch, "--grid", str(grid_file)) == 0
    assert (Path.cwd() / "mlflow.db").exists()  # the default store is sqlite:///mlflow.db in the working dir
    logged = runs(tracking_uri)
    parents = [r for r in logged if GRID_TAG in r.data.tags]
    children = [r for r in logged if r.data.tags.get(KIND_TAG) == "eval"]
    assert len(parents) == 1 and len(children) == 6
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)
    assert len({tuple(sorted(c.data.params)) for c in children}) == 1  # identical param keys
    for run in parents + children:  # what produced each run, the same keys everywhere
        env = {k.removeprefix(ENV_TAG_PREFIX): v for k, v in run.data.tags.items() if k.startswith(ENV_TAG_PREFIX)}
        assert set(env) == {"python", "torch", "transformers", "tokenizers", "trl", "peft", "mlflow", "optuna",
                            "genclsbench", "commit", "device", "device_name"}
        assert env["torch"] == version("torch") and env["transformers"] == version("transformers")
        assert env["python"] == platform.python_version() and env["device"] == "cpu" and env["device_name"]
    names = {c.info.run_name for c in children}
    assert "emotion/tiny-random/zero+defs+uncertain+numeric+ppl+sum" in names
    assert "emotion/tiny-random/fixed-2+reason" in names
    client = mlflow.MlflowClient(tracking_uri)
    for child in children:
        m = child.data.metrics
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1 and m["n_examples"] == 6
        assert {"invalid_rate", "uncertain_rate", "examples_per_s", "wall_time_s", "f1.joy"} <= set(m)
        assert child.data.params["infer.ppl_norm"] in ({"none"} if child.data.params["infer.decoding"] == "generate"
                                                       else {"mean", "sum"})
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"predictions.json", "per_class.json", "confusion_matrix.png"} <= artifacts
        assert len(child.inputs.dataset_inputs) == 1
    table = client.load_table(children[0].info.experiment_id, "predictions.json", run_ids=[children[0].info.run_id])
    assert list(table.columns[:6]) == ["id", "text", "gold", "prediction", "raw_output", "candidate_scores"]
    assert len(table) == 6
    out = capsys.readouterr().out
    assert "results: emotion / tiny-random" in out and "similar-2+ppl" in out
    _check_first_view(client, parents[0], children, out)

    assert run_cli(monkeypatch, "--grid", str(grid_file)) == 0
    assert "6 runs, 6 already finished, 0 to run" in flat(capsys.readouterr().out)
    assert len(runs(tracking_uri)) == 7  # nothing new: no duplicate children, the same parent

    assert run_cli(monkeypatch, "--grid", str(grid_file), "--limit", "3", "--dry-run") == 0
    assert "6 runs, 0 already finished, 6 to run" in flat(capsys.readouterr().out)  # a new limit is a new spec
    assert len(runs(tracking_uri)) == 7


def _check_first_view(client, parent, children, out: str) -> None:
    """The UI's first view: the printed address opens the grid's view (its metric and varying param columns), the
    parent opens expanded (its evaluations are tagged as such) and shows the best of its evaluations."""
    experiment = client.get_experiment(parent.info.experiment_id)
    assert f"http://127.0.0.1:5000/{runs_route(experiment.experiment_id, 'e2e')}" in out.replace("\n", "")
    view = json.loads(experiment.tags[VIEW_TAG_PREFIX + view_key("e2e")])
    assert view["selectedColumns"][:2] == ["metrics.`accuracy`", "metrics.`macro_f1`"]
    assert {"params.`infer.icl`", "params.`infer.decoding`"} <= set(view["selectedColumns"])
    assert not any("hash" in column for column in view["selectedColumns"])
    assert {c.data.tags["mlflow.runType"] for c in children} == {"evaluation"}
    metrics = client.get_run(parent.info.run_id).data.metrics
    for name in ("accuracy", "macro_f1"):
        assert metrics[name] == max(c.data.metrics[name] for c in children)


def test_each_template_wording_is_one_prompt_version_that_its_evaluations_link(tmp_path, tracking_uri, monkeypatch):
    path = tmp_path / "p.yaml"
    path.write_text("name: e2e\ndatasets: [emotion]\nmodels: [tiny-random]\neval: {limit: 2}\nbaselines: []\n"
                    "strategies: {decoding: ppl, template: [default, terse]}\n", encoding="utf-8")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")  # MLflow's process-global store plays no part
    assert run_cli(monkeypatch, "--grid", str(path), "--tracking-uri", tracking_uri) == 0
    assert run_cli(monkeypatch, "--grid", str(path), "--tracking-uri", tracking_uri, "--limit", "3") == 0  # new runs
    client = mlflow.MlflowClient(tracking_uri)
    evals = [client.get_run(r.info.run_id) for r in runs(tracking_uri) if r.data.tags.get(KIND_TAG) == "eval"]
    assert len(evals) == 4
    for template in ("default", "terse"):
        name, text = registry_prompt(template, "en")
        (version,) = client.search_prompt_versions(name)  # registered once, however many runs used it
        assert version.template == text and "{{task}}" in text
        used = [r for r in evals if r.data.params["infer.template"] == template]
        assert len(used) == 2 and {r.data.tags[PROMPT_TAG] for r in used} == {f"prompts:/{name}/1"}
        assert all(json.loads(r.data.tags["mlflow.linkedPrompts"]) == [{"name": name, "version": "1"}] for r in used)
    recorder = MlflowRecorder(tracking_uri, "e2e", SqlStore(f"sqlite:///{tmp_path / 'jobs.db'}", "e2e"))
    name, text = registry_prompt("terse", "en")
    recorder.log_result(evals[0].info.run_id, JobResult(prompt=(name, text + "\nreworded")))  # a changed wording
    assert [v.version for v in client.search_prompt_versions(name)] in ([2, 1], [1, 2])


def test_one_failing_run_does_not_stop_the_grid(grid_file, tracking_uri, tmp_path, monkeypatch, capsys):
    real = runners.predict.Predictor.__call__

    def flaky(self, examples, on_progress=lambda n: None):
        if self.builder.strategy.icl == "similar-2" and self.builder.strategy.decoding == "ppl":
            raise RuntimeError("simulated crash")
        return real(self, examples, on_progress)

    monkeypatch.setattr(runners.predict.Predictor, "__call__", flaky)
    assert run_cli(monkeypatch, "--grid", str(grid_file)) == 1
    evals = [r for r in runs(tracking_uri) if r.data.tags.get(KIND_TAG) == "eval"]
    statuses = {r.info.run_name: r.info.status for r in evals}
    assert statuses.pop("emotion/tiny-random/similar-2+ppl") == "FAILED"
    assert set(statuses.values()) == {"FINISHED"} and len(statuses) == 5
    failed = next(r for r in evals if r.info.status == "FAILED")
    assert failed.data.tags[ERROR_TAG] == "RuntimeError: simulated crash"
    trace = mlflow.MlflowClient(tracking_uri).download_artifacts(failed.info.run_id, ERROR_ARTIFACT, str(tmp_path))
    assert "Traceback (most recent call last)" in Path(trace).read_text() and "in flaky" in Path(trace).read_text()
    assert "1 run(s) failed" in flat(capsys.readouterr().out)
    monkeypatch.setattr(runners.predict.Predictor, "__call__", real)
    assert run_cli(monkeypatch, "--grid", str(grid_file)) == 0  # the re-run does only the failed one
    assert "6 runs, 5 already finished, 1 to run" in flat(capsys.readouterr().out)


def test_the_classical_baseline_runs_on_the_same_examples(tmp_path, tracking_uri, monkeypatch):
    path = tmp_path / "b.yaml"
    path.write_text("name: e2e\ndatasets: [sst2]\nmodels: [tiny-random]\neval: {limit: 40}\n", encoding="utf-8")
    assert run_cli(monkeypatch, "--grid", str(path)) == 0
    logged = {r.data.params["baseline"]: r for r in runs(tracking_uri) if r.data.tags.get(KIND_TAG) == "eval"}
    assert set(logged) == {"none", "tfidf-logreg"}
    baseline = logged["tfidf-logreg"]
    assert baseline.info.run_name == "sst2/tfidf-logreg/baseline:tfidf-logreg"
    assert baseline.data.metrics["accuracy"] >= 0.6 and baseline.data.metrics["invalid_rate"] == 0
    assert set(baseline.data.params) == set(logged["none"].data.params)
    assert {baseline.data.params[f"infer.{d}"] for d in ("icl", "decoding", "ppl_norm", "labels")} == {"none"}


def test_a_batch_calibrated_run_in_rounds_records_the_whole_sets_decision(tmp_path, tracking_uri, monkeypatch):
    """60 examples go in two rounds (50, then 10); the recorded calibrated scores are every example's raw scores
    minus each label's mean log-probability over all 60, whatever round the example was in."""
    import json

    import numpy as np

    from strategies.scoring import CALIBRATIONS

    path = tmp_path / "bc.yaml"
    path.write_text("name: e2e\ndatasets: [sst2]\nmodels: [tiny-random]\neval: {limit: 60}\nbaselines: []\n"
                    "strategies: {decoding: ppl, calibration: [batch, domain], template: terse}\n", encoding="utf-8")
    assert run_cli(monkeypatch, "--grid", str(path)) == 0
    logged = {r.info.run_name: r for r in runs(tracking_uri) if r.data.tags.get(KIND_TAG) == "eval"}
    assert set(logged) == {"sst2/tiny-random/zero+ppl+bc+tpl-terse", "sst2/tiny-random/zero+ppl+dc+tpl-terse"}
    run = logged["sst2/tiny-random/zero+ppl+bc+tpl-terse"]
    assert run.data.params["infer.template"] == "terse" and run.data.params["infer.calibration"] == "batch"
    table = mlflow.MlflowClient(tracking_uri).load_table(run.info.experiment_id, "predictions.json",
                                                         run_ids=[run.info.run_id])
    raw = np.array([list(json.loads(row).values()) for row in table["candidate_scores"]])
    calibrated = np.array([list(json.loads(row).values()) for row in table["calibrated_scores"]])
    np.testing.assert_allclose(calibrated, CALIBRATIONS["batch"].adjust(raw, raw), atol=2e-5)  # JSON keeps 5 digits
    answers = list(json.loads(table["candidate_scores"][0]))
    assert [answers[i] for i in calibrated.argmax(1)] == list(table["prediction"])  # sst2's labels are its names


def test_list_shows_every_registry(monkeypatch, capsys):
    assert bench(monkeypatch, "list") == 0
    out = flat(capsys.readouterr().out)
    for name in ("similar-K", "ppl_norm", "rl_algo", "reinforce_pp_baseline", "sft+rl", "emotion", "iflytek_fewclue",
                 "smollm2-135m", "tfidf-logreg", "batch", "domain", "prompt templates", "expert", "Options:", "选项："):
        assert name in out


def test_a_terminated_worker_ends_its_run_killed_and_a_rerun_finishes_the_grid(tmp_path, tracking_uri, monkeypatch):
    """SIGTERM (and Ctrl-C) in the middle of a job: the job's run ends KILLED, never RUNNING, the job goes back to
    the store at once, and the next `bench run` does it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from bench.run.store import PENDING, SqlStore

    grid = tmp_path / "long.yaml"
    grid.write_text("name: long\ndatasets: [emotion]\nmodels: [tiny-random]\nbaselines: []\n"
                    "eval: {limit: 100}\ninference: {batch_size: 4, reasoning_max_new_tokens: 64}\n"
                    "strategies: {reasoning: on}\n",
                    encoding="utf-8")
    command = [sys.executable, "-c", "from bench.cli import main; main()", "run", "--grid", str(grid)]
    worker = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent),
                                                "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in worker.stdout:  # wait until the evaluation has begun
        lines.append(line)
        if line.startswith("start emotion/tiny-random/zero+reason"):
            break
    time.sleep(1.0)
    sent = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    rest, _ = worker.communicate(timeout=60)
    assert worker.returncode == 130, "".join(lines) + rest
    assert time.monotonic() - sent < 10  # honoured within a batch
    run = next(r for r in runs_of(tracking_uri, "long") if r.data.tags.get(KIND_TAG) == "eval")
    assert run.info.status == "KILLED"
    parent = next(r for r in runs_of(tracking_uri, "long") if GRID_TAG in r.data.tags)
    assert parent.info.status == "KILLED"
    states = SqlStore(f"sqlite:///{tmp_path / 'mlflow-jobs.db'}", "long").states()
    assert [s.status for s in states.values()] == [PENDING]

    assert run_cli(monkeypatch, "--grid", str(grid)) == 0  # the next run does the job; the killed run stays KILLED
    statuses = sorted(r.info.status for r in runs_of(tracking_uri, "long") if r.data.tags.get(KIND_TAG) == "eval")
    assert statuses == ["FINISHED", "KILLED"]


def runs_of(uri: str, experiment: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment], output_format="list")


def test_status_takes_the_overrides_of_run_and_sees_the_grid_that_ran(grid_file, tracking_uri, monkeypatch, capsys):
    overrides = ["--limit", "2", "--dataset", "sst2", "--model", "tiny-random"]
    grid_file.write_text(GRID.split("strategies:")[0] + "strategies: {decoding: ppl}\n", encoding="utf-8")
    assert run_cli(monkeypatch, "--grid", str(grid_file), *overrides) == 0
    capsys.readouterr()
    assert bench(monkeypatch, "status", "--grid", str(grid_file), *overrides) == 0
    assert "1 done, 0 running, 0 waiting, 0 failed (of 1 jobs)" in flat(capsys.readouterr().out)
    assert bench(monkeypatch, "status", "--grid", str(grid_file)) == 0  # without them: another grid, not run
    assert "0 done, 0 running, 1 waiting, 0 failed (of 1 jobs)" in flat(capsys.readouterr().out)
    assert Overrides(2, "my data.jsonl", batch_size=8).options() == " --limit 2 --dataset 'my data.jsonl'"
