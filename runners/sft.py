"""Supervised fine-tuning: TRL `SFTTrainer` on prompt-completion pairs, loss on the completion only.

Prompts are rendered exactly as at inference (`prompt_text`: the chat template with the generation prompt), and
the completion is the answer the builder would parse back, followed by the end-of-turn token (TRL appends it), so
the trained model stops where the perplexity scorer's candidates stop.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from runners.inference import prompt_text
from runners.models import LoadedModel
from runners.sft_config import LoraSettings, SFTSettings
from runners.train_common import Cost, StepLogger, lora_config, run_trainer, trainer_args, training_tokens_per_pass
from strategies.example import Example
from strategies.prompts import PromptBuilder


def row_tokens(lm: LoadedModel, row: dict[str, str]) -> int:
    """Tokens an SFT row trains on: prompt, completion, and the end-of-turn token TRL appends."""
    return len(lm.tokenizer(row["prompt"] + row["completion"], add_special_tokens=False).input_ids) + 1


def sft_rows(lm: LoadedModel, builder: PromptBuilder, examples: Sequence[Example], labels: Sequence[str],
             max_length: int, reasonings: Sequence[str | None]) -> list[dict[str, str]]:
    """One {prompt, completion} row per example; `labels` may differ from the gold (relabelled "uncertain"), and a
    reasoning, where given, precedes the answer line (Q -> R, A)."""
    rows = [{"id": e.id, "prompt": prompt_text(lm, builder.messages(e)), "completion": builder.completion(label, r)}
            for e, label, r in zip(examples, labels, reasonings)]
    for row in rows:
        if (length := row_tokens(lm, row)) > max_length:
            raise ValueError(f"training example {row['id']} is {length} tokens, over training.sft.max_length "
                             f"{max_length}; raise it, use fewer shots in the training prompt, or shorten the "
                             "reasonings (training.rgen.max_new_tokens)")
    return rows


def micro_batch(batch_size: int, longest: int, tokens_per_pass: int) -> int:
    """Rows per forward/backward pass: the largest divisor of `batch_size` whose rows, each `longest` tokens, fit in
    `tokens_per_pass` (one row at least). Gradient accumulation makes up the batch: the optimiser steps see the
    same rows, and TRL divides the loss by the whole batch's completion tokens, so the gradients are the batch's
    own (to float rounding) and the micro-batch is no part of a run's identity."""
    fitting = [d for d in range(1, batch_size + 1) if batch_size % d == 0 and d * longest <= tokens_per_pass]
    return max(fitting, default=1)


def train_sft(lm: LoadedModel, rows: list[dict[str, str]], sft: SFTSettings, lora: LoraSettings, seed: int,
              out: Path, logger: StepLogger) -> Cost:
    """Fine-tune `lm` on `rows` and save the adapter (or, with full_finetune, the whole model) to `out`."""
    from datasets import Dataset
    from trl import SFTConfig

    from runners.sft_trainer import CompletionSFTTrainer

    longest = max(row_tokens(lm, row) for row in rows)
    micro = micro_batch(sft.batch_size, longest, training_tokens_per_pass(lm.device))
    with tempfile.TemporaryDirectory() as work:
        config = SFTConfig(
            **trainer_args(Path(work), seed, sft.learning_rate), num_train_epochs=sft.epochs,
            per_device_train_batch_size=micro, gradient_accumulation_steps=sft.batch_size // micro,
            warmup_steps=sft.warmup_ratio, lr_scheduler_type="cosine",
            max_length=sft.max_length, completion_only_loss=True, packing=False,
        )
        trainer = CompletionSFTTrainer(
            model=lm.model, args=config, train_dataset=Dataset.from_list(rows).remove_columns("id"),
            processing_class=lm.tokenizer, peft_config=None if lora.full_finetune else lora_config(lora),
            callbacks=[logger],
        )
        cost = run_trainer(trainer, logger)
    trainer.model.save_pretrained(out)
    if lora.full_finetune:
        lm.tokenizer.save_pretrained(out)
    return cost
