"""RL with a rule-based reward: TRL `GRPOTrainer` (GRPO, REINFORCE++-baseline, REINFORCE++) and `RLOOTrainer`.

Reward: 1 when the completion's answer, parsed strictly (several answers, empty or unreadable output: no answer),
equals the gold label, else 0; optionally plus `format_reward` x 1 for any strictly parseable answer.

TRL's GRPOTrainer computes GRPO's group-normalised advantages but has no option for REINFORCE++ (KL folded into a
per-token reward, batch whitening) or REINFORCE++-baseline (batch whitening after the group mean), so
`EstimatorGRPOTrainer` keeps TRL's sampling, clipped loss and logging and replaces only the advantages with the
estimator its `rl_algo` registration names in `runners.advantages` (GRPO included, so every algorithm takes the
same path). Each registration (strategies/training.py) names its trainer builder here, `estimator_trainer` or
`rloo_trainer`. RL always trains a LoRA adapter on the (merged) warm-up model: the reference policy is that adapter
switched off.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer
from trl.trainer.utils import use_adapter

from runners.advantages import AdvantageInputs
from runners.inference import prompt_text
from runners.models import LoadedModel
from runners.rl_config import RLSettings
from runners.sft_config import LoraSettings
from runners.train_common import Cost, StepLogger, lora_config, run_trainer, trainer_args
from strategies.example import Example
from strategies.lookup import entry
from strategies.prompts import INVALID, PromptBuilder
from strategies.training import RL_ALGOS, Advantages, RLAlgorithm


def exact_match_reward(builder: PromptBuilder) -> Callable[..., list[float]]:
    """TRL reward function: 1.0 when the strictly parsed answer is the gold `label` column, else 0.0."""

    def exact_match(completions: Sequence[str], label: Sequence[str], **_) -> list[float]:
        return [float(builder.parse(text, strict=True) == gold) for text, gold in zip(completions, label)]

    return exact_match


def format_reward(builder: PromptBuilder) -> Callable[..., list[float]]:
    """TRL reward function: 1.0 for a completion with exactly one readable answer (right or wrong)."""

    def well_formed(completions: Sequence[str], **_) -> list[float]:
        return [float(builder.parse(text, strict=True) != INVALID) for text in completions]

    return well_formed


class EstimatorGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages come from a registered estimator (single process)."""

    def __init__(self, *args, advantages: Advantages, kl_coef: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.accelerator.num_processes != 1:
            raise ValueError("the advantage estimators here assume one process (they read the whole batch's rewards)")
        self.advantages, self.kl_coef = advantages, kl_coef
        self.estimate = advantages.estimator.resolve()
        self._rewards_per_func: torch.Tensor | None = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    @torch.no_grad()
    def _token_logps(self, batch: dict, reference: bool) -> torch.Tensor:
        """Log-probabilities of the sampled completion tokens under the policy or (adapter off) the reference."""
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        model = self.accelerator.unwrap_model(self.model)
        with use_adapter(model, None) if reference else nullcontext():
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, mask, batch["completion_ids"].size(1),
                batch_size=self.args.per_device_train_batch_size)
        return logps

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        rewards = (self._rewards_per_func * self.reward_weights.to(self._rewards_per_func.device)).nansum(dim=1)
        mask = batch["completion_mask"].float()
        x = AdvantageInputs(rewards, mask, self.num_generations, self.kl_coef)
        if self.advantages.kl_in_reward:
            old = batch.get("old_per_token_logps")
            x = replace(x, logps=self._token_logps(batch, False) if old is None else old,
                        ref_logps=self._token_logps(batch, True))
            kl = ((x.logps - x.ref_logps) * mask).sum() / mask.sum().clamp(min=1.0)
            self._metrics["train"]["kl"].append(kl.item())
        batch["advantages"] = self.estimate(x)
        return batch


def grpo_config(common: dict, rl: RLSettings, kl_in_reward: bool) -> GRPOConfig:
    """TRL's GRPO settings: KL as a loss term unless the estimator folds it into the reward, group-scaled rewards."""
    return GRPOConfig(**common, beta=0.0 if kl_in_reward else rl.kl_coef, scale_rewards="group")


def estimator_trainer(algorithm: RLAlgorithm, common: dict, rl: RLSettings, **trainer_kwargs) -> EstimatorGRPOTrainer:
    """The trainer of an algorithm with an estimator of ours."""
    advantages = algorithm.advantages
    return EstimatorGRPOTrainer(args=grpo_config(common, rl, advantages.kl_in_reward), advantages=advantages,
                                kl_coef=rl.kl_coef, **trainer_kwargs)


def rloo_trainer(algorithm: RLAlgorithm, common: dict, rl: RLSettings, **trainer_kwargs) -> RLOOTrainer:
    """TRL's RLOO trainer as it is (RLOO brings its own advantages: nothing to take from the registration)."""
    return RLOOTrainer(args=RLOOConfig(**common, beta=rl.kl_coef), **trainer_kwargs)


def rl_inputs(lm: LoadedModel, builder: PromptBuilder, examples: Sequence[Example], rl: RLSettings,
              lora: LoraSettings, seed: int, work: Path, logger: StepLogger) -> tuple[dict, dict]:
    """What every RL trainer here is built from: the config arguments all algorithms share, and the trainer's own
    arguments (model, reward functions, prompts with their gold label, adapter, logger)."""
    from datasets import Dataset

    rows = [{"prompt": prompt_text(lm, builder.messages(e)), "label": e.label} for e in examples]
    rewards = [exact_match_reward(builder)] + ([format_reward(builder)] if rl.format_reward else [])
    reasoning = builder.strategy.reasoning == "on"
    common = dict(
        **trainer_args(work, seed, rl.learning_rate), max_steps=rl.steps,
        per_device_train_batch_size=rl.prompts_per_step * rl.num_generations,
        num_generations=rl.num_generations, temperature=rl.temperature, epsilon=rl.clip_epsilon,
        max_completion_length=rl.reasoning_max_completion_length if reasoning else rl.max_completion_length,
        reward_weights=[1.0] + ([rl.format_reward] if rl.format_reward else []),
        lr_scheduler_type="constant",
    )
    trainer_kwargs = dict(model=lm.model, reward_funcs=rewards, train_dataset=Dataset.from_list(rows),
                          processing_class=lm.tokenizer, peft_config=lora_config(lora), callbacks=[logger])
    return common, trainer_kwargs


def train_rl(lm: LoadedModel, builder: PromptBuilder, examples: Sequence[Example], algorithm: str,
             rl: RLSettings, lora: LoraSettings, seed: int, out: Path, logger: StepLogger) -> Cost:
    """Train a LoRA adapter on `lm` with `algorithm` for `rl.steps` steps and save it to `out`."""
    with tempfile.TemporaryDirectory() as work:
        common, trainer_kwargs = rl_inputs(lm, builder, examples, rl, lora, seed, Path(work), logger)
        registered = entry(RL_ALGOS, algorithm, "rl_algo")
        trainer = registered.trainer.resolve()(registered, common, rl, **trainer_kwargs)
        cost = run_trainer(trainer, logger)
    trainer.model.save_pretrained(out)
    return cost
