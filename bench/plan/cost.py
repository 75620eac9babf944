"""What a job will cost before it runs, in model tokens (the prompts and completions the model reads or writes),
estimated from a sample of its own prompts: the plan shows the total and flags the runs that cost far more than the
rest (a 77-class perplexity run reads every candidate after every prompt), so a user is not surprised an hour in."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from bench.plan.datasets import DatasetCache
from bench.plan.specs import Job, RunSpec, TrainSpec
from runners.model_registry import MODELS, local_folder
from runners.token_counter import TokenCounter
from strategies.demos import DEMO_SELECTORS
from strategies.prompts import PromptBuilder
from strategies.registry import Strategy

SAMPLE = 16  # prompts rendered and counted per job
EXPENSIVE_RATIO = 5.0  # a run costing this many times the grid's median run is flagged
EXPENSIVE_TOKENS = 1e6  # ... and so is any job above this many (about 20 minutes of a 135M model on 2 CPU cores)


@dataclass(frozen=True)
class Cost:
    """Estimated model tokens of a job, what drives them (for the flag's reason), and the kind of work they are:
    `score` (prompts and candidates read in parallel), `generate` (tokens written one step at a time), `train`, or
    `baseline` (no model): a token of one kind takes another time than a token of another (progress measures each)."""

    tokens: float
    why: str
    kind: str


def token_counter(cache: Path, model: str, counters: dict[str, TokenCounter]) -> TokenCounter:
    """The model's token counter if its folder is on this machine already (a dry run downloads nothing); a
    registered model's context is known before it is."""
    if model not in counters:
        counter = TokenCounter(local_folder(model, cache))
        if counter.context is None and model in MODELS:
            counter.context = MODELS[model].context
        counters[model] = counter
    return counters[model]


def without_retrieval(strategy: Strategy) -> Strategy:
    """`strategy` with retrieved demos drawn at random instead (as many, from the same pool: about as long, without
    building a retrieval index for an estimate)."""
    retrieves = DEMO_SELECTORS[strategy.icl_method].retrieves
    return replace(strategy, icl=f"random-{strategy.shots}") if retrieves else strategy


def _prompt_tokens(card, strategy: Strategy, pool, examples, counter: TokenCounter) -> float:
    """Mean prompt tokens of a sample of `examples` under `strategy` (see `without_retrieval`)."""
    builder = PromptBuilder(card, without_retrieval(strategy), pool, 0)
    return statistics.fmean(counter.prompt(builder.messages(e)) for e in examples[:SAMPLE])


def _evaluation(spec: RunSpec, datasets: DatasetCache, counter: TokenCounter) -> Cost:
    dataset = datasets.get(spec.dataset.config)
    examples = dataset.evaluation(spec.eval.split, spec.eval.limit, spec.eval.sample_seed)
    if spec.baseline:
        return Cost(0.0, "classical baseline", "baseline")
    builder = PromptBuilder(dataset.card, replace(spec.strategy, icl="zero"), [], 0)
    prompt = _prompt_tokens(dataset.card, spec.strategy, dataset.pool, examples, counter)
    written = spec.max_new_tokens if spec.strategy.generates_text else 0
    if spec.strategy.decoding_method.scores:
        candidates = builder.candidates()
        scored = sum(counter.text(c) + 1 for c in candidates)
        why = f"{len(candidates)} candidates after each {prompt:.0f}-token prompt"
    else:
        scored, why = 0, f"{prompt:.0f}-token prompts, up to {written} new tokens"
    return Cost(len(examples) * (prompt + scored + written), f"{len(examples)} examples: {why}",
                "generate" if written else "score")


def _training(spec: TrainSpec, datasets: DatasetCache, counter: TokenCounter) -> Cost:
    dataset = datasets.get(spec.dataset.config)
    prompt = _prompt_tokens(dataset.card, spec.strategy.prompt, dataset.pool, dataset.pool, counter)
    if spec.rl is not None:
        rows = spec.rl.steps * spec.rl.prompts_per_step * spec.rl.num_generations
        return Cost(rows * (prompt + spec.rl.max_completion_length), f"{rows} sampled completions", "train")
    rows = spec.n_train * spec.sft.epochs
    return Cost(rows * (prompt + 8), f"{rows:.0f} training rows", "train")


def estimate(jobs: Sequence[Job], datasets: DatasetCache, cache: Path) -> dict[str, Cost]:
    """The estimated cost of each evaluation and training job, by key (other jobs are small beside them). Runs that
    differ only in how their model was trained cost the same: each shape is counted once."""
    counters: dict[str, TokenCounter] = {}
    shapes: dict[tuple, Cost] = {}
    costs = {}
    for job in jobs:
        if isinstance(job, RunSpec):
            shape = (job.dataset.content, job.eval, job.strategy, job.max_new_tokens, job.model, job.baseline)
            if shape not in shapes:
                shapes[shape] = _evaluation(job, datasets, token_counter(cache, job.model, counters))
            costs[job.key] = shapes[shape]
        elif isinstance(job, TrainSpec):
            costs[job.key] = _training(job, datasets, token_counter(cache, job.model, counters))
    return costs


def expensive(costs: dict[str, Cost]) -> set[str]:
    """The jobs that cost more than EXPENSIVE_RATIO times the median job, or more than EXPENSIVE_TOKENS."""
    spent = [c.tokens for c in costs.values() if c.tokens > 0]
    if not spent:
        return set()
    median = statistics.median(spent)
    return {k for k, c in costs.items() if c.tokens > EXPENSIVE_RATIO * median or c.tokens > EXPENSIVE_TOKENS}


def tokens(value: float) -> str:
    """1234567 -> '1.2M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"
