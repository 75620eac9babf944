"""Running `bench run` in-process, as a user would from the shell."""

import sys

from bench.cli import main


def run_cli(monkeypatch, *args: str) -> int:
    """The exit code of `bench run ARGS`."""
    return bench(monkeypatch, "run", *args)


def bench(monkeypatch, *args: str) -> int:
    """The exit code of `bench ARGS`."""
    monkeypatch.setattr(sys, "argv", ["bench", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def flat(text: str) -> str:
    return " ".join(text.split())  # the console wraps long lines


def tiny_training_grid(name: str, training: str, strategies: str) -> str:
    """A grid on tiny-random, 4 emotion test examples, 8 training examples and LoRA r=2; `training` holds the
    further `training:` lines (indented two spaces), `strategies` the inference blocks."""
    return f"""name: {name}
datasets: [emotion]
models: [tiny-random]
eval: {{limit: 4}}
inference: {{batch_size: 4, max_new_tokens: 4, reasoning_max_new_tokens: 8}}
baselines: []
training:
  n_train: 8
  lora: {{r: 2, alpha: 4}}
  sft: {{batch_size: 4}}
{training}
strategies:
{strategies}
"""
