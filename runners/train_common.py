"""What every training stage shares: the training subset, loading a trainable model, trainer arguments, step-wise
logging with a NaN guard, and the cost figures (wall time, tokens/s, peak memory)."""

from __future__ import annotations

import math
import random
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from runners.models import LoadedModel, load_model
from runners.sft_config import LoraSettings
from strategies.example import Example

OnLog = Callable[[dict[str, float], int], None]  # (metrics, step): where step-wise training curves go
OnStep = Callable[[int, int], None]  # (step, max_steps): progress


class TrainingDiverged(RuntimeError):
    """A loss or reward became NaN/inf: the job is marked FAILED with this reason."""


def training_examples(pool: Sequence[Example], n_train: int, seed: int) -> list[Example]:
    """A seeded sample of the pool (the whole pool, shuffled, when it is smaller)."""
    return random.Random(f"train:{seed}").sample(list(pool), min(n_train, len(pool)))


def load_trainable(folder: Path, dtype: str, stages: Sequence[Path]) -> LoadedModel:
    """The base model with earlier stages merged in, in train mode; fp32 on CPU (bf16 training there is lossy)."""
    lm = load_model(folder, dtype if torch.cuda.is_available() else "float32", stages)
    lm.model.train()
    return lm


def training_tokens_per_pass(device: torch.device) -> int:
    """Tokens one training forward/backward pass may hold. Activations of SmolLM2-135M in fp32 cost ~5 MB a token
    here, so a batch of 8 rows of 512 tokens peaked at 13 GB; 512 tokens a pass keeps a CPU run near 3 GB and was
    no slower (benchmarks/training_memory.py). A GPU takes far longer passes."""
    return 16384 if device.type == "cuda" else 512


def lora_config(lora: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, task_type="CAUSAL_LM",
                      target_modules="all-linear")


def trainer_args(out: Path, seed: int, learning_rate: float) -> dict:
    """Arguments common to every TRL config here: no checkpoints, no external reporting, log every step."""
    return dict(
        output_dir=str(out), seed=seed, data_seed=seed, learning_rate=learning_rate, logging_steps=1,
        save_strategy="no", report_to="none", disable_tqdm=True, bf16=torch.cuda.is_available(),
        gradient_checkpointing=False,  # small models: recomputing activations costs more time than it saves
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, remove_unused_columns=False,
    )


class StepLogger(TrainerCallback):
    """Forwards every logged number to `on_log` (prefixed), reports progress, and stops on a NaN loss."""

    def __init__(self, prefix: str, on_log: OnLog, on_step: OnStep) -> None:
        self.prefix, self.sink, self.progress = prefix, on_log, on_step
        self.last: dict[str, float] = {}

    def on_step_end(self, args, state, control, **kwargs):
        self.progress(state.global_step, state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        for key in ("loss", "train_loss", "reward"):
            if key in numbers and not math.isfinite(numbers[key]):
                raise TrainingDiverged(f"{self.prefix}{key} is {numbers[key]} at step {state.global_step}")
        self.last |= numbers
        self.sink({f"{self.prefix}{k.replace('/', '.')}": v for k, v in numbers.items()}, state.global_step)


@dataclass
class Cost:
    """Wall time, tokens processed and peak memory of one training stage."""

    wall_time_s: float
    tokens: float
    peak_memory_mb: float

    def metrics(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}wall_time_s": self.wall_time_s, f"{prefix}tokens": self.tokens,
                f"{prefix}tokens_per_s": self.tokens / self.wall_time_s if self.wall_time_s else 0.0,
                f"{prefix}peak_memory_mb": self.peak_memory_mb}


def run_trainer(trainer, logger: StepLogger) -> Cost:
    """Train, timing it; tokens are TRL's `num_tokens` count (prompt + completion tokens seen)."""
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; StepLogger records them instead
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() \
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)
    return Cost(wall, logger.last.get("num_tokens", 0.0), peak)
