"""Settings of RL with a rule-based reward, beside `runners.rl` (pydantic only, no torch)."""

from __future__ import annotations

from pydantic import Field

from runners.sft_config import Settings


class RLSettings(Settings):
    steps: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0, le=1)
    prompts_per_step: int = Field(default=4, ge=1)
    num_generations: int = Field(default=4, ge=2)
    kl_coef: float = Field(default=0.01, ge=0)
    clip_epsilon: float = Field(default=0.2, gt=0, lt=1)
    temperature: float = Field(default=1.0, gt=0)
    max_completion_length: int = Field(default=8, ge=1)
    reasoning_max_completion_length: int = Field(default=128, ge=1)
    format_reward: float = Field(default=0.0, ge=0)  # weight of +1 for a strictly parseable answer
