"""Prompts too long for the model, caught when a grid is planned rather than as an out-of-memory error mid-grid.

The policy is an error naming the row: an evaluation prompt plus its answer (the new tokens it may generate, or
its longest candidate) must fit the model's context (`max_position_embeddings`) and `eval.max_input_tokens` when
set. Truncating a row would change what is being classified, so the user decides: shorten or remove it. Counted
exactly with the model's tokenizer when its folder is on this machine (as the cost estimate is; before the first
download, by characters), for each evaluation set's longest texts under each strategy (retrieved demos drawn at
random, as long as retrieved ones on average). The inference code refuses an over-long prompt too
(`runners.inference`), so a job that gets past planning fails alone, with a line, not out of memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bench.plan.cost import token_counter, without_retrieval
from bench.plan.datasets import Dataset, DatasetCache
from bench.plan.errors import UserError
from bench.plan.specs import RunSpec
from runners.token_counter import TokenCounter
from strategies.example import Example
from strategies.prompts import PromptBuilder

LONGEST = 3  # texts per evaluation set whose whole prompts are rendered and counted


def check_lengths(specs: Sequence[RunSpec], datasets: DatasetCache, cache: Path,
                  max_input_tokens: int | None) -> None:
    """Raise a UserError naming the first evaluation row whose prompt and answer do not fit (see the module doc)."""
    counters: dict[str, TokenCounter] = {}
    longest: dict[tuple, list[Example]] = {}  # per evaluation set and tokenizer: counted once, not per strategy
    seen: set[tuple] = set()
    for spec in specs:
        shape = (spec.dataset.content, spec.eval, spec.strategy, spec.model, spec.max_new_tokens)
        if spec.baseline or shape in seen:
            continue
        seen.add(shape)
        counter = token_counter(cache, spec.model, counters)
        limits = [(n, why) for n, why in ((counter.context, f"{spec.model}'s context"),
                                          (max_input_tokens, "eval.max_input_tokens")) if n]
        if not limits:
            continue
        dataset = datasets.get(spec.dataset.config)
        texts = (spec.dataset.content, spec.eval, spec.model)
        if texts not in longest:
            examples = dataset.evaluation(spec.eval.split, spec.eval.limit, spec.eval.sample_seed)
            longest[texts] = sorted(examples, key=lambda e: -counter.text(e.text))[:LONGEST]
        _check(spec, dataset, longest[texts], counter, *min(limits))


def _check(spec: RunSpec, dataset: Dataset, longest: list[Example], counter: TokenCounter, limit: int,
           why: str) -> None:
    builder = PromptBuilder(dataset.card, without_retrieval(spec.strategy), dataset.pool, spec.seed)
    answer = spec.max_new_tokens if spec.strategy.generates_text else \
        max(counter.text(c) + 1 for c in builder.candidates())
    for example in longest:
        tokens = counter.prompt(builder.messages(example)) + answer
        if tokens > limit:
            about = "about " if counter.approximate else ""
            raise UserError(f"{dataset.name} example '{example.id}' ({len(example.text):,} characters): its "
                            f"{spec.strategy_label} prompt and answer are {about}{tokens:,} tokens, over the "
                            f"{limit:,} of {why}; shorten or remove that row")
