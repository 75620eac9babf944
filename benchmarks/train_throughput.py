"""Training throughput of the suite's trainers against what they build on, on the same rows, model, LoRA adapter,
batch and steps: the SFT path (`runners.sft.train_sft`, as `bench run` trains) against a plain transformers
`Trainer`, and the RL path (`runners.rl.train_rl` with `grpo`, i.e. `EstimatorGRPOTrainer`) against TRL's own
`GRPOTrainer` with the same config, without the suite's estimator code.

    python benchmarks/train_throughput.py [--part sft rl] [--model smollm2-135m] [--n 32] [--batch-size 8]
        [--rl-steps 4] [--rounds 2] [--threads 1]

Each pair first trains one step each, untimed (the first training of a process pays one-time costs), then runs
`--rounds` times in this process, the order alternating (ours first, then theirs first, ...), each run on a freshly
loaded model. Timed is `trainer.train()`, from the trainer's train-begin to its train-end event, in
CPU seconds of this process (steadier than wall time on a machine other work shares; both are printed). SFT tokens
are the non-padding prompt + completion tokens of the rows times the epochs, counted the same way for both; RL
tokens are TRL's `num_tokens` (prompt + sampled completion tokens). The ratio is the suite's tokens per CPU second
over the other's, summed over the rounds: above 1, the suite is faster.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback

from bench.plan.datasets import DatasetCache, DatasetConfig
from bench.run.workspace import Workspace, default_cache
from runners.rl import grpo_config, rl_inputs, train_rl
from runners.rl_config import RLSettings
from runners.sft import row_tokens, sft_rows, train_sft
from runners.sft_config import LoraSettings, SFTSettings
from runners.train_common import StepLogger, load_trainable, lora_config, run_trainer, trainer_args, training_examples
from strategies.example import Example
from strategies.prompts import PromptBuilder
from strategies.registry import Strategy


class Clock(StepLogger):
    """A StepLogger that records nothing but the CPU and wall seconds of training (TRL's logs stay in `last`)."""

    def __init__(self) -> None:
        super().__init__("", lambda metrics, step: None, lambda step, total: None)
        self.cpu_s = self.wall_s = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.cpu_s, self.wall_s = -time.process_time(), -time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.cpu_s += time.process_time()
        self.wall_s += time.perf_counter()


Train = Callable[[Clock], float]  # trains with the clock as a callback, returns the tokens it trained on


@dataclass
class Run:
    cpu_s: float
    wall_s: float
    tokens: float


@dataclass
class Setup:
    """What both sides of a pair share."""

    folder: Path
    builder: PromptBuilder
    examples: list[Example]
    lora: LoraSettings


def measure(train: Train) -> Run:
    clock = Clock()
    tokens = train(clock)
    return Run(clock.cpu_s, clock.wall_s, tokens)


Pair = tuple[tuple[str, Train], tuple[str, Train]]  # (name, train) of the suite's side, then of the other


def compare(name: str, pair: Pair, warmup: Pair, rounds: int) -> None:
    """Train each side of `warmup` untimed, then run `pair` `rounds` times, alternating which goes first; print each
    run and the ratio."""
    for _, train in warmup:
        measure(train)
    ours, theirs = pair
    runs: dict[str, list[Run]] = {ours[0]: [], theirs[0]: []}
    for r in range(rounds):
        for label, train in (ours, theirs) if r % 2 == 0 else (theirs, ours):
            run = measure(train)
            runs[label].append(run)
            print(f"  {name} round {r + 1} {label:28s} {run.cpu_s:7.1f} CPU s {run.wall_s:7.1f} wall s "
                  f"{run.tokens:7.0f} tokens", flush=True)
    rate = {label: (sum(r.tokens for r in rs) / sum(r.cpu_s for r in rs),
                    sum(r.tokens for r in rs) / sum(r.wall_s for r in rs)) for label, rs in runs.items()}
    for label, (cpu, wall) in rate.items():
        print(f"{name} {label:28s} {cpu:8.1f} tokens/CPU s {wall:8.1f} tokens/wall s")
    (cpu_ours, wall_ours), (cpu_theirs, wall_theirs) = rate[ours[0]], rate[theirs[0]]
    print(f"{name} ratio {ours[0]} / {theirs[0]}: {cpu_ours / cpu_theirs:.2f} (CPU), "
          f"{wall_ours / wall_theirs:.2f} (wall)", flush=True)


def sft_pair(setup: Setup, batch_size: int) -> Pair:
    sft = SFTSettings(epochs=1, batch_size=batch_size)
    lm = load_trainable(setup.folder, "float32", [])
    labels = [e.label for e in setup.examples]
    rows = sft_rows(lm, setup.builder, setup.examples, labels, sft.max_length, [None] * len(setup.examples))
    tokens = sum(row_tokens(lm, row) for row in rows) * sft.epochs

    def ours(clock: Clock) -> float:
        with tempfile.TemporaryDirectory() as out:
            train_sft(load_trainable(setup.folder, "float32", []), rows, sft, setup.lora, 0, Path(out), clock)
        return tokens

    def theirs(clock: Clock) -> float:
        _plain_trainer(setup.folder, rows, sft, setup.lora, clock)
        return tokens

    return ("SFT path", ours), ("plain transformers Trainer", theirs)


def _plain_trainer(folder: Path, rows: list[dict[str, str]], sft: SFTSettings, lora: LoraSettings,
                   clock: Clock) -> None:
    """A plain `Trainer` on the same rows: completion-only labels, right padding, the same LoRA, the whole batch."""
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

        def pad(seq: list[int], value: int) -> list[int]:
            return seq + [value] * (width - len(seq))

        return {"input_ids": torch.tensor([pad(b["input_ids"], tok.pad_token_id) for b in batch]),
                "attention_mask": torch.tensor([pad([1] * len(b["input_ids"]), 0) for b in batch]),
                "labels": torch.tensor([pad(b["labels"], -100) for b in batch])}

    data = Dataset.from_list([encode(r) for r in rows])
    with tempfile.TemporaryDirectory() as work:
        args = TrainingArguments(**trainer_args(Path(work), 0, sft.learning_rate), num_train_epochs=sft.epochs,
                                 per_device_train_batch_size=sft.batch_size, lr_scheduler_type="cosine",
                                 warmup_steps=sft.warmup_ratio)
        trainer = Trainer(model=get_peft_model(lm.model, lora_config(lora)), args=args, train_dataset=data,
                          data_collator=collate, callbacks=[clock])
        trainer.remove_callback(PrinterCallback)
        trainer.train()


def rl_pair(setup: Setup, steps: int) -> Pair:
    rl = RLSettings(steps=steps, prompts_per_step=2, num_generations=4)

    def ours(clock: Clock) -> float:
        lm = load_trainable(setup.folder, "float32", [])
        with tempfile.TemporaryDirectory() as out:
            return train_rl(lm, setup.builder, setup.examples, "grpo", rl, setup.lora, 0, Path(out), clock).tokens

    def theirs(clock: Clock) -> float:
        from trl import GRPOTrainer

        lm = load_trainable(setup.folder, "float32", [])
        with tempfile.TemporaryDirectory() as work:
            common, trainer_kwargs = rl_inputs(lm, setup.builder, setup.examples, rl, setup.lora, 0, Path(work),
                                               clock)
            trainer = GRPOTrainer(args=grpo_config(common, rl, kl_in_reward=False), **trainer_kwargs)
            return run_trainer(trainer, clock).tokens

    return ("RL path (grpo estimator)", ours), ("TRL GRPOTrainer", theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", choices=["sft", "rl"], default=["sft", "rl"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=32, help="training examples (emotion pool)")
    parser.add_argument("--batch-size", type=int, default=8, help="SFT batch (RL: 2 prompts x 4 samples a step)")
    parser.add_argument("--rl-steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (with more than one, CPU seconds also count OpenMP threads spinning "
                             "while they wait for each other, which other work on the machine inflates)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = DatasetCache().get(DatasetConfig(name="emotion"))
    setup = Setup(Workspace(default_cache(dict(os.environ))).model(args.model),
                  PromptBuilder(dataset.card, Strategy(), dataset.pool, 0),
                  training_examples(dataset.pool, args.n, 0), LoraSettings())
    print(f"model {args.model}, {len(setup.examples)} rows, SFT batch {args.batch_size}, {args.rl_steps} RL steps, "
          f"{'cuda' if torch.cuda.is_available() else 'cpu'}, {torch.get_num_threads()} threads", flush=True)
    one_batch = replace(setup, examples=setup.examples[: args.batch_size])
    pairs = {"sft": (sft_pair(setup, args.batch_size), sft_pair(one_batch, args.batch_size)),
             "rl": (rl_pair(setup, args.rl_steps), rl_pair(setup, 1))}
    for part in args.part:
        compare(part.upper(), *pairs[part], args.rounds)


if __name__ == "__main__":
    main()
