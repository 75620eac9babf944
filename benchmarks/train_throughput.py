"""Training throughput of the SFT path (TRL SFTTrainer + LoRA, as `bench run` trains) against a plain Hugging Face
`Trainer` loop on the same rows, model, LoRA adapter, batch size and steps; prints tokens/s of each and the ratio.

    python benchmarks/train_throughput.py [--model smollm2-135m] [--n 32] [--batch-size 8]

Tokens are the non-padding prompt + completion tokens of the training rows times the epochs, counted the same way
for both, so the ratio compares wall time for the same work. Both run once, back to back, in this process.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from bench.plan.datasets import DatasetCache, DatasetConfig
from bench.run.workspace import Workspace, default_cache
from runners.sft import sft_rows, train_sft
from runners.sft_config import LoraSettings, SFTSettings
from runners.train_common import StepLogger, load_trainable, lora_config, trainer_args, training_examples
from strategies.prompts import PromptBuilder
from strategies.registry import Strategy


def _plain_trainer(folder: Path, rows: list[dict[str, str]], sft: SFTSettings, lora: LoraSettings) -> float:
    """Wall seconds of a plain `Trainer` on the same rows: completion-only labels, right padding, same LoRA."""
    from datasets import Dataset
    from peft import get_peft_model

    lm = load_trainable(folder, "float32", [])
    tok = lm.tokenizer

    def encode(row: dict[str, str]) -> dict[str, list[int]]:
        prompt = tok(row["prompt"], add_special_tokens=False).input_ids
        completion = tok(row["completion"] + tok.eos_token, add_special_tokens=False).input_ids
        return {"input_ids": prompt + completion, "labels": [-100] * len(prompt) + completion}

    def collate(batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        pad = lambda seq, value: seq + [value] * (width - len(seq))  # noqa: E731
        return {"input_ids": torch.tensor([pad(b["input_ids"], tok.pad_token_id) for b in batch]),
                "attention_mask": torch.tensor([pad([1] * len(b["input_ids"]), 0) for b in batch]),
                "labels": torch.tensor([pad(b["labels"], -100) for b in batch])}

    data = Dataset.from_list([encode(r) for r in rows])
    with tempfile.TemporaryDirectory() as work:
        args = TrainingArguments(**trainer_args(Path(work), 0, sft.learning_rate), num_train_epochs=sft.epochs,
                                 per_device_train_batch_size=sft.batch_size, lr_scheduler_type="cosine",
                                 warmup_steps=sft.warmup_ratio)
        trainer = Trainer(model=get_peft_model(lm.model, lora_config(lora)), args=args, train_dataset=data,
                          data_collator=collate)
        trainer.remove_callback(PrinterCallback)
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=32, help="training examples (emotion pool)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    dataset = DatasetCache().get(DatasetConfig(name="emotion"))
    examples = training_examples(dataset.pool, args.n, 0)
    builder = PromptBuilder(dataset.card, Strategy(), dataset.pool, 0)
    sft, lora = SFTSettings(epochs=1, batch_size=args.batch_size), LoraSettings()
    folder = Workspace(default_cache(dict(os.environ))).model(args.model)
    lm = load_trainable(folder, "float32", [])
    rows = sft_rows(lm, builder, examples, [e.label for e in examples], sft.max_length, [None] * len(examples))
    tokens = sum(len(lm.tokenizer(r["prompt"] + r["completion"], add_special_tokens=False).input_ids) + 1
                 for r in rows) * int(sft.epochs)

    with tempfile.TemporaryDirectory() as out:
        cost = train_sft(lm, rows, sft, lora, 0, Path(out), StepLogger("", lambda m, s: None, lambda s, t: None))
    plain = _plain_trainer(folder, rows, sft, lora)
    ours, theirs = tokens / cost.wall_time_s, tokens / plain
    print(f"model {args.model}, {len(rows)} rows, {tokens} tokens, batch {args.batch_size}, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"SFT path (TRL SFTTrainer):  {cost.wall_time_s:7.1f} s  {ours:8.1f} tokens/s")
    print(f"plain transformers Trainer: {plain:7.1f} s  {theirs:8.1f} tokens/s")
    print(f"ratio SFT path / plain Trainer: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
