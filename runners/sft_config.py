"""Settings of supervised fine-tuning, beside the code that uses them (`runners.sft`, as TRL keeps `SFTConfig` beside
`SFTTrainer`). Pydantic only, no torch: a grid file is validated against them without loading a model."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from runners.schema import Schema


class Settings(Schema):
    """A frozen settings record, validated like every section of a user's file (`runners.schema`)."""

    model_config = ConfigDict(frozen=True)


class LoraSettings(Settings):
    """The adapter every stage trains (RL always trains a LoRA adapter: its reference policy is the adapter off)."""

    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    full_finetune: bool = False  # SFT only: train every weight instead of an adapter


class SFTSettings(Settings):
    epochs: float = Field(default=1.0, gt=0)
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    batch_size: int = Field(default=8, ge=1)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)  # fraction of the steps
    max_length: int = Field(default=1024, ge=16)
