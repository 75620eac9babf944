"""Which dtype on CPU? Times fp32 and bf16 on the same prompts and reports how often predictions agree.

    python benchmarks/cpu_dtype.py [--model smollm2-135m] [--n 200]

bf16 would become the CPU default only if it is faster *and* predictions agree (>= 99%) under both decodings.
"""

from __future__ import annotations

import argparse
import os
import time

from bench.plan.datasets import DatasetConfig, load_dataset
from bench.run.workspace import Workspace, default_cache
from runners.batching import Batching
from runners.models import load_model
from runners.predict import DecodeSettings, Predictor
from strategies.prompts import PromptBuilder
from strategies.registry import Strategy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    dataset = load_dataset(DatasetConfig(name="emotion"))
    examples = dataset.evaluation("test", args.n, 0)
    strategies = [Strategy(decoding="ppl"), Strategy(icl="random-3", decoding="generate")]
    folder = Workspace(default_cache(dict(os.environ))).model(args.model)
    results: dict[tuple[str, str], tuple[list[str], float]] = {}
    for dtype in ("float32", "bfloat16"):
        lm = load_model(folder, dtype)
        for strategy in strategies:
            builder = PromptBuilder(dataset.card, strategy, dataset.pool, 0)
            start = time.perf_counter()
            predictions = Predictor(lm, builder, DecodeSettings(Batching(64), 12, 0))(examples)
            results[dtype, strategy.tag()] = ([p.label for p in predictions], time.perf_counter() - start)
    for strategy in strategies:
        (fp32, t32), (bf16, t16) = results["float32", strategy.tag()], results["bfloat16", strategy.tag()]
        agree = sum(a == b for a, b in zip(fp32, bf16)) / len(fp32)
        acc32 = sum(p == e.label for p, e in zip(fp32, examples)) / len(examples)
        acc16 = sum(p == e.label for p, e in zip(bf16, examples)) / len(examples)
        print(f"{strategy.tag():14s} fp32 {t32:6.1f}s acc {acc32:.3f} | bf16 {t16:6.1f}s acc {acc16:.3f} | "
              f"speed-up {t32 / t16:.2f}x | predictions agree {agree:.1%}")


if __name__ == "__main__":
    main()
