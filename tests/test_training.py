"""Training: recipes and specs, the RL reward, uncertain relabelling, and SFT actually changing the model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bench.plan.datasets import DatasetCache, DatasetConfig
from bench.plan.errors import UserError
from bench.plan.grid import read_grid, train_blocks
from bench.plan.identity import params
from bench.plan.specs import RunSpec, TrainSpec
from runners.sft_config import LoraSettings, SFTSettings
from strategies.example import Category, Example, TaskCard
from strategies.prompts import UNCERTAIN, PromptBuilder
from strategies.registry import Strategy
from strategies.training import RL_ALGOS, TrainStrategy

CARD = TaskCard("en", "Classify the emotion.", "Text",
                (Category("0", "sadness"), Category("1", "joy"), Category("2", "anger")))


def _grid(tmp_path: Path, training: str) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(f"name: t\ndatasets: [emotion]\nmodels: [tiny-random]\nbaselines: []\ntraining:\n{training}")
    return path


def test_recipes_tags_and_warmup(tmp_path):
    grid = read_grid(_grid(tmp_path, "  strategies:\n    - method: [sft, sft+rl, rl]\n      icl: [zero, similar-2]\n"))
    tags = [t.tag() for t in train_blocks(grid, Path("g.yaml"))]
    assert tags == ["sft", "sft(similar-2)", "sft+grpo", "sft+grpo(similar-2)", "grpo", "grpo(similar-2)"]
    recipe = train_blocks(grid, Path("g.yaml"))[2]
    assert recipe.warmup() == TrainStrategy(method="sft", rl_algo="none")
    assert TrainStrategy(method="rl").warmup() is None


@pytest.mark.parametrize("training, message", [
    ("  rl: {num_generations: 1}\n", r"training\.rl\.num_generations: Input should be greater than or equal to 2"),
    ("  sft: {learning_rate: -1}\n", r"training\.sft\.learning_rate: Input should be greater than 0"),
    ("  sft: {epochs: 1, lr: 3}\n", r"training\.sft\.lr: unknown key; allowed: epochs, learning_rate"),
    ("  strategies: {decoding: ppl}\n", r"training\.strategies\.decoding: unknown strategy dimension 'decoding'"),
    ("  strategies: {rl_algo: ppo}\n", r"'ppo' is not a value of 'rl_algo'; allowed: grpo, reinforce_pp_baseline"),
])
def test_bad_training_sections_fail_in_one_line(tmp_path, training, message):
    path = _grid(tmp_path, training)
    with pytest.raises(UserError, match=message):
        train_blocks(read_grid(path), path)


def test_warmup_spec_is_the_plain_sft_spec(tmp_path):
    from bench.plan.grid import expand

    path = _grid(tmp_path, "  strategies:\n    - method: [sft, sft+rl]\n      rl_algo: [grpo, rloo]\n")
    specs = expand(read_grid(path), path, DatasetCache(), "float32")
    trains = {s.train.strategy.tag(): s.train for s in specs if s.train}
    assert set(trains) == {"sft", "sft+grpo", "sft+rloo"}
    assert trains["sft+grpo"].warmup().key == trains["sft+rloo"].warmup().key == trains["sft"].key
    assert len({s.key for s in specs}) == len(specs) == 4  # untrained + 3 trained, zero-shot each
    untrained = next(s for s in specs if s.train is None)
    assert set(params(RunSpec, untrained)) == set(params(RunSpec, specs[-1]))  # one vocabulary
    assert params(RunSpec, untrained)["train.method"] == "none"
    assert params(RunSpec, specs[-1])["train.rl_algo"] == "rloo"
    assert params(RunSpec, specs[-1])["train.hash"] == trains["sft+rloo"].key
    assert set(params(TrainSpec, None)) == set(params(TrainSpec, trains["sft"]))


def _builder(reasoning: str = "off") -> PromptBuilder:
    return PromptBuilder(CARD, Strategy(reasoning=reasoning), [], 0)


def test_training_methods_carry_their_stages():
    from strategies.training import TRAIN_METHODS

    stages = {name: (TrainStrategy(method=name).has_sft, TrainStrategy(method=name).has_rl) for name in TRAIN_METHODS}
    assert stages == {"sft": (True, False), "sft+rl": (True, True), "rl": (False, True)}
    assert [TrainStrategy(method=m, rl_algo="rloo").tag() for m in TRAIN_METHODS] == ["sft", "sft+rloo", "rloo"]
    with pytest.raises(ValueError, match=r"unknown training method 'rlhf' \(did you mean 'rl'\?\); registered: "
                                         r"sft, sft\+rl, rl"):
        TrainStrategy(method="rlhf").has_rl


def test_exact_match_reward():
    from runners.rl import exact_match_reward, format_reward

    reward = exact_match_reward(_builder())
    outputs = ["joy", " Joy.", "sadness", "joy, not sadness", "", "no idea"]
    assert reward(outputs, label=["1"] * 6) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert format_reward(_builder())(outputs) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    reasoned = exact_match_reward(_builder("on"))
    assert reasoned(["It sounds sad, not joy.\nAnswer: sadness", "Answer: joy", "sadness"], label=["0"] * 3) \
        == [1.0, 0.0, 1.0]


def test_uncertain_relabelling_takes_the_least_confident_fraction():
    from runners.relabel import uncertain_labels

    examples = [Example(f"e{i}", "t", "1") for i in range(10)]
    confidence = [0.9, 0.1, 0.5, 0.05, 0.7, 0.6, 0.8, 0.3, 0.95, 0.4]
    labels = uncertain_labels(examples, confidence, 0.2)
    assert [i for i, label in enumerate(labels) if label == UNCERTAIN] == [1, 3]
    assert labels.count("1") == 8


def test_sft_lowers_the_loss_and_changes_predictions(tmp_path, tiny_folder):
    from runners.batching import Batching
    from runners.inference import prompt_text, score_candidates
    from runners.models import load_model
    from runners.sft import sft_rows, train_sft
    from runners.train_common import StepLogger, load_trainable, training_examples

    dataset = DatasetCache().get(DatasetConfig(name="emotion"))
    examples = training_examples(dataset.pool, 32, 0)
    builder = PromptBuilder(dataset.card, Strategy(), dataset.pool, 0)
    lm = load_trainable(tiny_folder, "float32", [])
    rows = sft_rows(lm, builder, examples, [e.label for e in examples], 512, [None] * len(examples))
    losses: list[float] = []
    logger = StepLogger("sft.", lambda metrics, step: losses.extend(v for k, v in metrics.items() if k == "sft.loss"),
                        lambda step, total: None)
    settings = SFTSettings(epochs=4, learning_rate=5e-3, batch_size=8, warmup_ratio=0.0)
    cost = train_sft(lm, rows, settings, LoraSettings(r=8, alpha=16), 0, tmp_path / "adapter", logger)
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    # a random 2-layer model learns slowly but steadily
    assert len(losses) == 16 and sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.2
    assert cost.tokens > 0 and cost.wall_time_s > 0

    before, after = load_model(tiny_folder, "float32"), load_model(tiny_folder, "float32", [tmp_path / "adapter"])
    prompts = [prompt_text(before, builder.messages(e)) for e in examples[:8]]
    base = score_candidates(before, prompts, builder.candidates(), Batching(8)).logprob_sum
    tuned = score_candidates(after, prompts, builder.candidates(), Batching(8)).logprob_sum
    assert (tuned.argmax(1) != base.argmax(1)).any() or (tuned - base).__abs__().max() > 1.0
    gold = [builder.answers.index(builder.completion(e.label)) for e in examples[:8]]
    assert sum(tuned[i, g] for i, g in enumerate(gold)) > sum(base[i, g] for i, g in enumerate(gold))


def test_micro_batches_are_the_largest_divisor_that_fits():
    from runners.sft import micro_batch

    assert micro_batch(8, 439, 512) == 1 and micro_batch(8, 120, 512) == 4 and micro_batch(8, 60, 512) == 8
    assert micro_batch(6, 200, 512) == 2 and micro_batch(6, 100, 512) == 3 and micro_batch(8, 2000, 512) == 1


def _train_tiny_sft(tiny_folder: Path, out: Path, n: int) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """SFT of tiny-random on `n` emotion examples, batch 8, at a learning rate that moves it: the logged steps and the
    adapter's weights."""
    from safetensors.torch import load_file

    from runners.sft import sft_rows, train_sft
    from runners.train_common import StepLogger, load_trainable, training_examples

    dataset = DatasetCache().get(DatasetConfig(name="emotion"))
    examples = training_examples(dataset.pool, n, 0)
    builder = PromptBuilder(dataset.card, Strategy(), dataset.pool, 0)
    settings = SFTSettings(epochs=1, learning_rate=5e-3, batch_size=8, warmup_ratio=0.0)
    lm = load_trainable(tiny_folder, "float32", [])
    rows = sft_rows(lm, builder, examples, [e.label for e in examples], 512, [None] * len(examples))
    logs: list[dict[str, float]] = []
    logger = StepLogger("", lambda metrics, step: logs.append(metrics), lambda step, total: None)
    train_sft(lm, rows, settings, LoraSettings(r=8, alpha=16), 0, out, logger)
    return logs, load_file(out / "adapter_model.safetensors")


def _same_adapter(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_micro_batches_train_the_same_adapter_as_the_whole_batch(tmp_path, tiny_folder, monkeypatch):
    """Gradient accumulation over token-bounded micro-batches is why the micro-batch is no part of identity."""
    import runners.sft

    weights = {}
    for budget in (1 << 20, 1):  # the whole batch per pass, then one row per pass
        monkeypatch.setattr(runners.sft, "training_tokens_per_pass", lambda device: budget)
        weights[budget] = _train_tiny_sft(tiny_folder, tmp_path / str(budget), 16)[1]
    whole, single = weights.values()
    assert _same_adapter(whole, single)
    assert any(not torch.equal(whole[k], torch.zeros_like(whole[k])) for k in whole if "lora_B" in k)


def test_token_curves_on_a_hand_computed_batch():
    from runners.sft_trainer import token_curves

    log_p = torch.log(torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]]).clamp(min=1e-30))
    entropy, accuracy = token_curves(log_p, torch.tensor([0, 0]))
    assert entropy == pytest.approx((math.log(2) + 1.5 * math.log(2)) / 2) and accuracy == 0.5
    assert token_curves(log_p[:0], torch.tensor([], dtype=torch.long)) == (0.0, 0.0)


def test_the_completion_only_head_keeps_trls_loss_curves_and_adapter(tmp_path, tiny_folder, monkeypatch):
    """The suite's SFT trainer reads the LM head at the completion's positions only (CPU): every step's loss,
    gradient norm, entropy, token accuracy and token count, and the adapter, are those of TRL's own SFTTrainer."""
    import trl

    import runners.sft_trainer

    ours, ours_adapter = _train_tiny_sft(tiny_folder, tmp_path / "ours", 24)
    monkeypatch.setattr(runners.sft_trainer, "CompletionSFTTrainer", trl.SFTTrainer)
    theirs, theirs_adapter = _train_tiny_sft(tiny_folder, tmp_path / "trl", 24)
    keys = ("loss", "grad_norm", "entropy", "mean_token_accuracy", "num_tokens")
    steps = [step for step in theirs if "loss" in step]
    assert len(steps) == 3 and all(set(keys) <= set(step) for step in steps)
    assert [[step[k] for k in keys] for step in ours if "loss" in step] == [
        [pytest.approx(step[k], rel=1e-5) for k in keys] for step in steps]
    assert _same_adapter(ours_adapter, theirs_adapter)


def test_a_nan_loss_fails_the_job_with_its_step():
    from types import SimpleNamespace

    from runners.train_common import StepLogger, TrainingDiverged

    seen: list[dict] = []
    logger = StepLogger("rl.", lambda metrics, step: seen.append(metrics), lambda step, total: None)
    logger.on_log(None, SimpleNamespace(global_step=1), None, logs={"loss": 0.5, "reward": 0.25, "kl/mean": 0.1})
    assert seen == [{"rl.loss": 0.5, "rl.reward": 0.25, "rl.kl.mean": 0.1}]
    with pytest.raises(TrainingDiverged, match="rl.loss is nan at step 3"):
        logger.on_log(None, SimpleNamespace(global_step=3), None, logs={"loss": float("nan")})


@pytest.mark.parametrize("algorithm", [name for name, algo in RL_ALGOS.items() if algo.advantages])
def test_trl_takes_its_loss_advantages_from_the_registered_estimator(tiny_folder, tmp_path, monkeypatch, algorithm):
    """One real RL step: the advantages TRL's loss reads are exactly the estimator's output (so an upgrade of TRL
    that recomputed or renormalised them, or read another key, fails here, not silently in a benchmark)."""
    import torch

    from runners.rl import EstimatorGRPOTrainer, train_rl
    from runners.rl_config import RLSettings
    from runners.train_common import StepLogger, load_trainable, training_examples

    produced: list[torch.Tensor] = []
    used: list[torch.Tensor] = []
    estimator = RL_ALGOS[algorithm].advantages.estimator
    registered = estimator.resolve()

    def recording(x):
        produced.append(registered(x).detach().clone())
        return produced[-1]

    monkeypatch.setattr(estimator.target.replace(":", "."), recording)  # what the registration names, recording
    original_loss = EstimatorGRPOTrainer._compute_loss

    def loss_reading(self, model, inputs):
        used.append(inputs["advantages"].detach().clone())
        return original_loss(self, model, inputs)

    monkeypatch.setattr(EstimatorGRPOTrainer, "_compute_loss", loss_reading)

    def varied(builder):  # the tiny random model never names a label: give the estimator rewards that differ
        def exact_match(completions, **_):
            return [float(i % 3 == 0) for i in range(len(completions))]
        return exact_match

    monkeypatch.setattr("runners.rl.exact_match_reward", varied)
    dataset = DatasetCache().get(DatasetConfig(name="emotion"))
    builder = PromptBuilder(dataset.card, Strategy(), dataset.pool, 0)
    lm = load_trainable(tiny_folder, "float32", [])
    settings = RLSettings(steps=1, prompts_per_step=2, num_generations=4, max_completion_length=4)
    train_rl(lm, builder, training_examples(dataset.pool, 8, 0), algorithm, settings, LoraSettings(r=4, alpha=8), 0,
             tmp_path / "adapter", StepLogger("rl.", lambda metrics, step: None, lambda step, total: None))
    assert len(produced) == 1 and used, "TRL did not call the estimator, or never computed its loss"
    seen = torch.cat([u.reshape(-1) for u in used])
    assert sorted(seen.tolist()) == pytest.approx(sorted(produced[0].reshape(-1).tolist()), abs=1e-7)
    assert produced[0].shape[0] == 8 and produced[0].abs().sum() > 0
