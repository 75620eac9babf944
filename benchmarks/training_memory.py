"""Peak memory and CPU time of the SFT path on R-Gen rows (the longest rows a grid trains on): the whole batch in
one forward/backward pass against token-bounded micro-batches with gradient accumulation (what `train_sft` does).

    python benchmarks/training_memory.py [--model smollm2-135m] [--n 32] [--batch-size 8] [--budgets 0 512 1024]

Each budget trains in a fresh process (peak RSS is a process-wide figure); budget 0 means the whole batch per pass.
The processes run one after another, so compare their CPU seconds, not a lone wall time. The final training loss
is printed beside: micro-batches leave the gradients as they were, so it agrees to float rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORPORA = ("cose", "esnli", "gsm8k")


def child(model: str, n: int, batch_size: int, budget: int) -> dict[str, float]:
    """Train once in this process with `budget` tokens per pass (0: the whole batch) and return its figures."""
    import runners.sft
    from bench.plan.reasoning_corpora import load_corpus, rgen_mixture
    from bench.run.workspace import Workspace, default_cache
    from runners.rgen import rgen_rows
    from runners.sft import row_tokens, train_sft
    from runners.sft_config import LoraSettings, SFTSettings
    from runners.train_common import StepLogger, load_trainable

    runners.sft.training_tokens_per_pass = lambda device: budget or 1 << 30
    examples = rgen_mixture([load_corpus(c, False) for c in CORPORA], n // len(CORPORA) + 1, 0)[:n]
    lm = load_trainable(Workspace(default_cache(dict(os.environ))).model(model), "float32", [])
    sft = SFTSettings(epochs=1, learning_rate=3e-4, batch_size=batch_size, max_length=512)
    rows, _ = rgen_rows(lm, examples, sft.max_length, True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    logger = StepLogger("", lambda metrics, step: None, lambda step, total: None)
    started = time.process_time()
    with tempfile.TemporaryDirectory() as out:
        cost = train_sft(lm, rows, sft, LoraSettings(), 0, Path(out), logger)
    return {"rows": len(rows), "longest": max(row_tokens(lm, r) for r in rows), "loaded_mb": before,
            "peak_mb": cost.peak_memory_mb, "cpu_s": time.process_time() - started, "wall_s": cost.wall_time_s,
            "loss": logger.last.get("train_loss", float("nan"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--n", type=int, default=32, help="R-Gen training rows (cose, esnli, gsm8k mixed)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--budgets", type=int, nargs="+", default=[0, 512, 1024],
                        help="tokens per pass to compare; 0 is the whole batch in one pass")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.model, args.n, args.batch_size, args.child)))
        return
    print(f"model {args.model}, {args.n} R-Gen rows, batch {args.batch_size}, one epoch, fp32, LoRA r16")
    print(f"{'tokens/pass':>12} {'peak RSS MB':>12} {'loaded MB':>10} {'CPU s':>8} {'loss':>12}")
    for budget in args.budgets:
        done = subprocess.run([sys.executable, __file__, "--model", args.model, "--n", str(args.n), "--batch-size",
                               str(args.batch_size), "--child", str(budget)], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"budget {budget} failed:\n{done.stderr[-2000:]}")
        r = json.loads(done.stdout.strip().splitlines()[-1])
        label = "whole batch" if budget == 0 else str(budget)
        print(f"{label:>12} {r['peak_mb']:12.0f} {r['loaded_mb']:10.0f} {r['cpu_s']:8.1f} {r['loss']:12.8f}"
              f"   (longest row {r['longest']} tokens)")


if __name__ == "__main__":
    main()
