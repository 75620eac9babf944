"""The suite's candidate scorer against lm-evaluation-harness's `HFLM.loglikelihood` on the same requests.

For zero-shot and fixed-5 prompts on emotion with the embedded model, every (prompt, candidate) pair is scored by
both, alternating in one process; it prints CPU and wall seconds, the ratio, how often both pick the same
candidate, and the largest log-likelihood difference.

Both sides score the same tokens. lm-eval moves the context's trailing whitespace into the continuation (the
prompt's final "\\n" after "assistant"), so the suite is given the prompt without it and each candidate with it in
front: both then score "\\n", the label's tokens and the end-of-turn token after the same context. The script checks
that the two tokenisations agree before timing anything.

    pip install -e ".[benchmarks]"   # lm-eval 0.4.13: a benchmark dependency only
    python benchmarks/scoring_vs_lmeval.py [--zero 64] [--fixed 32] [--repeats 2] [--batch-size 16] [--dtype float32]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable

import numpy as np
from timing import alternate

from bench.plan.datasets import DatasetConfig, load_dataset
from bench.run.workspace import Workspace, default_cache
from runners.batching import Batching
from runners.inference import prompt_text, score_candidates
from runners.models import LoadedModel, load_model
from strategies.prompts import PromptBuilder
from strategies.registry import Strategy


def lmeval_scorer(lm: LoadedModel, batch_size: int) -> Callable[[list[str], list[str]], np.ndarray]:
    """lm-eval's HFLM over the same model object: log-likelihoods [prompts, candidates] of `loglikelihood`."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    harness = HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=batch_size, device=str(lm.device),
                   add_bos_token=False)

    def score(prompts: list[str], continuations: list[str]) -> np.ndarray:
        requests = [Instance("loglikelihood", {}, (p, c), i) for i, (p, c) in
                    enumerate((p, c) for p in prompts for c in continuations)]
        results = harness.loglikelihood(requests, disable_tqdm=True)
        return np.array([lp for lp, _ in results]).reshape(len(prompts), len(continuations))

    score.encode_pair = harness._encode_pair  # type: ignore[attr-defined]
    return score


def check_same_tokens(lm: LoadedModel, encode_pair, prompt: str, candidates: list[str]) -> None:
    """Fail unless lm-eval's (context, continuation) tokens are the suite's (prompt, candidate) tokens."""
    context = prompt.rstrip()
    suite_context = lm.tokenizer(context, add_special_tokens=False).input_ids
    for candidate in candidates:
        theirs = encode_pair(prompt, candidate + lm.tokenizer.eos_token)
        ours = lm.tokenizer("\n" + candidate, add_special_tokens=False).input_ids + [lm.end_id]
        if (list(theirs[0]), list(theirs[1])) != (suite_context, ours):
            raise SystemExit(f"tokenisations differ for {candidate!r}: lm-eval {theirs[1]} vs suite {ours}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zero", type=int, default=64, help="examples for zero-shot")
    parser.add_argument("--fixed", type=int, default=32, help="examples for fixed-5")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dtype", default="float32", help="the model's dtype on both sides (bfloat16 on a GPU)")
    args = parser.parse_args()
    if importlib.util.find_spec("lm_eval") is None:
        raise SystemExit('lm_eval is not installed: pip install -e ".[benchmarks]" (lm-eval 0.4.13)')
    lm = load_model(Workspace(default_cache(dict(os.environ))).model("smollm2-135m"), args.dtype)
    harness = lmeval_scorer(lm, args.batch_size)
    dataset = load_dataset(DatasetConfig(name="emotion"))
    for strategy, n in ((Strategy(decoding="ppl"), args.zero), (Strategy(icl="fixed-5", decoding="ppl"), args.fixed)):
        builder = PromptBuilder(dataset.card, strategy, dataset.pool, 0)
        prompts = [prompt_text(lm, builder.messages(e)) for e in dataset.evaluation("test", n, 0)]
        candidates = builder.candidates()
        check_same_tokens(lm, harness.encode_pair, prompts[0], candidates)
        sides = {
            "suite": lambda: score_candidates(lm, [p.rstrip() for p in prompts], ["\n" + c for c in candidates],
                                              Batching(args.batch_size)).logprob_sum,
            "lm-eval": lambda: harness(prompts, [c + lm.tokenizer.eos_token for c in candidates]),
        }
        timed = alternate(sides, args.repeats)
        scores, cpu, wall = timed.results, timed.cpu, timed.wall
        agree = float(np.mean(scores["suite"].argmax(1) == scores["lm-eval"].argmax(1)))
        largest = float(np.abs(scores["suite"] - scores["lm-eval"]).max())
        ours, theirs = cpu["suite"], cpu["lm-eval"]
        print(f"{strategy.tag():<13} {len(prompts)} examples x {len(candidates)} candidates: "
              f"suite {ours:.1f} CPU s ({wall['suite']:.1f} wall), lm-eval {theirs:.1f} CPU s "
              f"({wall['lm-eval']:.1f} wall): {theirs / ours:.1f}x CPU, "
              f"{wall['lm-eval'] / wall['suite']:.1f}x wall; argmax agreement {agree:.1%}, "
              f"largest log-likelihood difference {largest:.2e}", flush=True)


if __name__ == "__main__":
    main()
