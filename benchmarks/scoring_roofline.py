"""How close does the scorer come to the machine's limit? Effective prompt tokens per second of `score_candidates`
(every prompt token, the shared prefix included, divided by its time) against a plain batched forward pass over the
same prompts (padded batches of the same size, no candidates, no cache), alternating the two in one process, for
zero-shot and fixed-5 prompts on emotion with the embedded model. Also a bound: one forward token of the model
costs about 2 x its non-embedding weights in FLOP, against this machine's measured fp32 matmul rate.

    python benchmarks/scoring_roofline.py [--examples 64] [--repeats 3] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from timing import alternate

from bench.plan.datasets import DatasetConfig, load_dataset
from bench.run.workspace import Workspace, default_cache
from runners.batching import Batching
from runners.inference import prompt_text, score_candidates
from runners.models import LoadedModel, load_model
from strategies.prompts import PromptBuilder
from strategies.registry import Strategy


@torch.inference_mode()
def plain_forward(lm: LoadedModel, prompts: list[str], batch_size: int) -> None:
    """The same prompts through the model in padded batches of `batch_size`, longest first, nothing else."""
    order = sorted(prompts, key=len, reverse=True)
    for start in range(0, len(order), batch_size):
        enc = lm.tokenizer(order[start:start + batch_size], return_tensors="pt", padding=True,
                           add_special_tokens=False)
        lm.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], logits_to_keep=1)


def matmul_gflops() -> float:
    """This machine's fp32 matmul rate (GFLOP/s), on shapes like the model's."""
    a, b = torch.randn(2048, 576), torch.randn(576, 1536)
    a @ b
    started, n = time.perf_counter(), 40
    for _ in range(n):
        a @ b
    return 2 * 2048 * 576 * 1536 * n / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    folder = Workspace(default_cache(dict(os.environ))).model("smollm2-135m")
    lm = load_model(folder, "float32")
    weights = sum(p.numel() for name, p in lm.model.named_parameters() if "embed" not in name)
    bound = matmul_gflops() * 1e9 / (2 * weights)
    print(f"model: {weights / 1e6:.0f}M non-embedding weights, {2 * weights / 1e9:.2f} GFLOP per token; "
          f"matmul bound here ~{bound:.0f} tokens/s fp32; torch threads {torch.get_num_threads()}")
    dataset = load_dataset(DatasetConfig(name="emotion"))
    examples = dataset.evaluation("test", args.examples, 0)
    for strategy in (Strategy(decoding="ppl"), Strategy(icl="fixed-5", decoding="ppl")):
        builder = PromptBuilder(dataset.card, strategy, dataset.pool, 0)
        prompts = [prompt_text(lm, builder.messages(e)) for e in examples]
        tokens = sum(len(x) for x in lm.tokenizer(prompts, add_special_tokens=False).input_ids)
        best = alternate({"scorer": lambda: score_candidates(lm, prompts, builder.candidates(),
                                                            Batching(args.batch_size)),
                          "plain forward": lambda: plain_forward(lm, prompts, args.batch_size)}, args.repeats).cpu
        rates = {name: tokens / seconds for name, seconds in best.items()}
        print(f"{strategy.tag():<13} {len(prompts)} prompts, {tokens / len(prompts):.0f} tokens each "
              f"({len(builder.candidates())} candidates): scorer {best['scorer']:.2f} CPU s "
              f"({rates['scorer']:.0f} effective prompt tokens/CPU s), plain forward {best['plain forward']:.2f} CPU s "
              f"({rates['plain forward']:.0f} tokens/CPU s): ratio {rates['scorer'] / rates['plain forward']:.2f}x")


if __name__ == "__main__":
    main()
