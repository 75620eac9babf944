"""The suite's greedy generator against transformers' `model.generate` on the same prompts.

On emotion test examples with the embedded model, the prompts of a reasoning strategy (up to 96 new tokens, the
quick grid's reasoning budget) and of label generation after the fixed-5 demonstrations (its answer budget) are
completed by the suite's `generate` and by `model.generate` (greedy, left padding, the same batches as the suite
makes, stopping at the end of turn), alternating in one process. It prints each side's CPU seconds, generated tokens
per CPU second (each row's tokens up to and including its end of turn, counted on `model.generate`'s output: the
same work for both where the texts agree), the ratio, and how many of the outputs are identical text (greedy on a
padded batch can differ from the same prompt alone in a rare near-tie, on either side).

    python benchmarks/generation_vs_hf.py [--examples 32] [--repeats 3] [--batch-size 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import os

import torch
from timing import alternate

from bench.plan.datasets import DatasetConfig, load_dataset
from bench.run.workspace import Workspace, default_cache
from runners.batching import Batching
from runners.inference import generate, prompt_text, shared_prefix, token_batches
from runners.models import LoadedModel, load_model
from runners.predict import answer_budget
from strategies.prompts import PromptBuilder
from strategies.registry import Strategy


def suite_batches(lm: LoadedModel, prompts: list[str], max_new_tokens: int, batching: Batching) -> list[list[int]]:
    """The rows of each batch `generate` makes of `prompts` (it sizes batches by the tokens after the shared
    prefix)."""
    ids = lm.tokenizer(prompts, add_special_tokens=False).input_ids
    n_prefix = shared_prefix(ids)
    return token_batches([len(x) - n_prefix for x in ids], max_new_tokens, batching, lm.device,
                         steps=1 + max_new_tokens)


@torch.inference_mode()
def hf_generate(lm: LoadedModel, prompts: list[str], max_new_tokens: int,
                batches: list[list[int]]) -> tuple[list[str], int]:
    """`model.generate` greedy on each batch of `prompts`, left-padded: the completions in input order and the
    tokens generated (each row's up to and including its end of turn)."""
    tok, texts, generated = lm.tokenizer, [""] * len(prompts), 0
    for batch in batches:
        enc = tok([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(lm.device)
        out = lm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                top_k=None, pad_token_id=tok.pad_token_id, eos_token_id=lm.end_id)
        for i, row in zip(batch, out[:, enc["input_ids"].shape[1]:].tolist()):
            row = row[:row.index(lm.end_id) + 1] if lm.end_id in row else row
            generated += len(row)
            texts[i] = tok.decode(row, skip_special_tokens=True)
    return texts, generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per batch at most (the quick grid's)")
    parser.add_argument("--reasoning-tokens", type=int, default=96, help="new tokens at most, reasoning first")
    parser.add_argument("--label-tokens", type=int, default=12, help="new tokens at most, label only (capped by "
                                                                      "the answer budget as in a run)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 where others share the "
                                                     "cores, whose waiting threads spin and count as CPU time")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = load_model(Workspace(default_cache(dict(os.environ))).model("smollm2-135m"), args.dtype)
    dataset = load_dataset(DatasetConfig(name="emotion"))
    examples = dataset.evaluation("test", args.examples, 0)
    batching = Batching(args.batch_size)
    print(f"{args.dtype} on {lm.device}, torch threads {torch.get_num_threads()}")
    for strategy in (Strategy(reasoning="on"), Strategy(icl="fixed-5")):
        builder = PromptBuilder(dataset.card, strategy, dataset.pool, 0)
        prompts = [prompt_text(lm, builder.messages(e)) for e in examples]
        limit = args.reasoning_tokens if strategy.reasoning == "on" else \
            min(args.label_tokens, answer_budget(lm, builder))
        batches = suite_batches(lm, prompts, limit, batching)
        timed = alternate({"suite": lambda: generate(lm, prompts, limit, batching),
                           "model.generate": lambda: hf_generate(lm, prompts, limit, batches)}, args.repeats)
        theirs, generated = timed.results["model.generate"]
        same = sum(a == b for a, b in zip(timed.results["suite"], theirs))
        ours, hf = timed.cpu["suite"], timed.cpu["model.generate"]
        print(f"{strategy.tag():<13} {len(prompts)} prompts in {len(batches)} batch(es), at most {limit} new tokens, "
              f"{generated} generated: suite {ours:.2f} CPU s ({generated / ours:.0f} tokens/CPU s), "
              f"model.generate {hf:.2f} CPU s ({generated / hf:.0f} tokens/CPU s): ratio {hf / ours:.2f}x; "
              f"identical outputs {same}/{len(prompts)}", flush=True)


if __name__ == "__main__":
    main()
