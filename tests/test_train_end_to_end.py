"""A tiny train x infer grid on tiny-random into a temporary MLflow store: training runs, curves, adapters, their
logged and registered models (loaded back by registry URI) linked to the evaluations that used them, and the
train-once cache (disk, then MLflow). That a crashing training job fails only what depends on it is tested on the
in-memory store (tests/test_executor.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlflow
import mlflow.transformers
import pytest
import torch
from cli_runner import flat, run_cli, tiny_training_grid

from bench.plan.specs import registry_name
from reports.vocabulary import HASH_TAG, KIND_TAG
from runners.models import load_model

GRID = tiny_training_grid("train_e2e", """\
  rl: {steps: 2, prompts_per_step: 2, num_generations: 2, max_completion_length: 4, reasoning_max_completion_length: 6}
  relabel: {fraction: 0.25}
  strategies:
    - method: [sft, sft+rl]
      rl_algo: [grpo, reinforce_pp_baseline, reinforce_pp, rloo]
    - {method: sft+rl, rl_algo: reinforce_pp, reasoning: on}
    - {method: sft, uncertain: on}""", "  - decoding: [generate, ppl]")
TRAIN_JOBS = {"sft", "sft+grpo", "sft+reinforce_pp_baseline", "sft+reinforce_pp", "sft+rloo", "sft(zero+reason)",
              "sft+reinforce_pp(zero+reason)", "sft(zero+uncertain)"}


@pytest.fixture
def grid_file(tmp_path: Path, fresh_cache) -> Path:
    """The grid, with a model cache of its own."""
    path = tmp_path / "train.yaml"
    path.write_text(GRID, encoding="utf-8")
    return path


def _runs(uri: str, kind: str):
    mlflow.set_tracking_uri(uri)
    return [r for r in mlflow.search_runs(experiment_names=["train_e2e"], output_format="list")
            if r.data.tags.get(KIND_TAG) == kind]


def test_train_grid_trains_once_and_evaluates_every_cross(grid_file, tracking_uri, tiny_folder, tmp_path, monkeypatch,
                                                          capsys):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")  # MLflow's process-global store plays no part
    assert run_cli(monkeypatch, "--grid", str(grid_file), "--tracking-uri", tracking_uri) == 0
    trains = {r.data.params["train.method"] + ":" + r.info.run_name: r for r in _runs(tracking_uri, "train")}
    assert {r.info.run_name.split("/")[-1] for r in trains.values()} == TRAIN_JOBS
    client = mlflow.MlflowClient(tracking_uri)
    for run in trains.values():
        assert run.info.status == "FINISHED"
        assert {"train_wall_time_s", "train_tokens_per_s", "train_peak_memory_mb", "n_train"} <= set(run.data.metrics)
        assert "output/adapter_config.json" in [a.path for a in client.list_artifacts(run.info.run_id, "output")]
        stage = "rl" if "rl" in run.data.params["train.method"] else "sft"
        assert len(client.get_metric_history(run.info.run_id, f"{stage}.loss")) == 2  # one point per step
        if stage == "rl":
            assert {"rl.reward", "rl.frac_reward_zero_std", "rl.kl"} <= set(run.data.metrics)
    uncertain = next(r for r in trains.values() if r.info.run_name.endswith("sft(zero+uncertain)"))
    assert uncertain.data.metrics["uncertain_fraction"] == 0.25
    assert "relabel.json" in [a.path for a in client.list_artifacts(uncertain.info.run_id)]

    evals = _runs(tracking_uri, "eval")
    assert len(evals) == 2 * (1 + len(TRAIN_JOBS) - 1)  # the reasoning SFT warm-up is not a grid recipe itself
    hashes = {r.data.tags[HASH_TAG] for r in trains.values()}
    warmup_of_reasoning = next(r.data.tags[HASH_TAG] for r in trains.values()
                               if r.info.run_name.endswith("/sft(zero+reason)"))
    trained = [r for r in evals if r.data.params["train.method"] != "none"]
    assert {r.data.params["train.hash"] for r in trained} == hashes - {warmup_of_reasoning}
    assert {r.data.params["infer.decoding"] for r in trained} == {"generate", "ppl"}
    assert len({tuple(sorted(r.data.params)) for r in evals}) == 1  # one param vocabulary, trained or not
    _check_models(client, trains.values(), trained, tiny_folder)

    capsys.readouterr()
    assert run_cli(monkeypatch, "--grid", str(grid_file)) == 0
    assert "16 runs, 16 already finished, 0 to run" in flat(capsys.readouterr().out)
    assert run_cli(monkeypatch, "--grid", str(grid_file), "--limit", "3") == 0  # new evaluations, no training
    assert "start train " not in capsys.readouterr().out
    assert len(_runs(tracking_uri, "train")) == len(TRAIN_JOBS) and len(_runs(tracking_uri, "eval")) == 32

    shutil.rmtree(Path(os.environ["GENCLSBENCH_CACHE"]) / "jobs")  # a fresh machine sharing the store
    assert run_cli(monkeypatch, "--grid", str(grid_file), "--limit", "2") == 0
    assert "start train " not in capsys.readouterr().out
    assert len(_runs(tracking_uri, "train")) == len(TRAIN_JOBS)
    assert all(client.get_run(r.info.run_id).inputs.model_inputs for r in _runs(tracking_uri, "eval")
               if r.data.params["train.method"] != "none")  # linked to the model without its adapter on this machine


def _check_models(client, trains, evals, tiny_folder: Path) -> None:
    """Each training run logged its model and registered it under its job's name; a stacked stage (RL on its SFT
    warm-up) loads by its registry URI with the flavour's loader and computes what the suite's own loading of its
    stages computes; each evaluation of a trained model is linked to that model."""
    names = {registry_name("emotion", r.info.run_name.rsplit("/", 1)[1], r.data.tags[HASH_TAG]): r for r in trains}
    assert set(names) <= {m.name for m in client.search_registered_models()}
    for name, run in names.items():
        (version,) = client.search_model_versions(f"name = '{name}'")
        assert version.run_id == run.info.run_id and len(run.outputs.model_outputs) == 1
        assert version.source == client.get_logged_model(run.outputs.model_outputs[0].model_id).artifact_location
    name, run = next((n, r) for n, r in names.items() if r.info.run_name.endswith("/sft+grpo"))
    pipeline = mlflow.transformers.load_model(f"models:/{name}/1")
    jobs = Path(os.environ["GENCLSBENCH_CACHE"]) / "jobs"
    stages = [jobs / run.data.params["train.warmup_hash"], jobs / run.data.tags[HASH_TAG]]
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        expected = load_model(tiny_folder, "float32", stages).model(ids).logits
        assert torch.allclose(pipeline.model.cpu()(ids).logits, expected, atol=1e-5)
    models = {m.model_id: m.tags[HASH_TAG] for m in client.search_logged_models([run.info.experiment_id])}
    for evaluation in evals:
        (used,) = client.get_run(evaluation.info.run_id).inputs.model_inputs
        assert models[used.model_id] == evaluation.data.params["train.hash"]


def test_training_a_model_that_is_no_causal_lm_fails_before_any_compute(tmp_path, tracking_uri, monkeypatch, capsys):
    folder = tmp_path / "encoder"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["BertModel"], "model_type": "bert"}')
    path = tmp_path / "g.yaml"
    path.write_text(f"name: t\ndatasets: [emotion]\nmodels: ['{folder}']\ntraining: {{strategies: {{method: rl}}}}\n")
    assert run_cli(monkeypatch, "--grid", str(path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot be trained: its config names no causal-LM architecture (BertModel)" in err
    mlflow.set_tracking_uri(tracking_uri)
    assert mlflow.search_experiments(filter_string="name = 't'") == []
