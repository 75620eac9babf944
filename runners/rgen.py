"""The reasoning generator (R-Gen): its SFT rows ((question, answer) -> reasoning) and the offline pass that writes
a reasoning for every training example of a classification dataset. Training itself is `runners.sft.train_sft`."""

from __future__ import annotations

from collections.abc import Sequence

from runners.batching import Batching
from runners.inference import OnProgress, generate, prompt_text
from runners.models import LoadedModel
from runners.sft import row_tokens
from strategies.reasoning import ReasoningExample, rgen_messages


def context_limit(lm: LoadedModel, max_length: int) -> int:
    """Tokens a training row may hold: `max_length`, or the model's context when that is shorter."""
    return min(max_length, getattr(lm.model.config, "max_position_embeddings", max_length))


def rgen_rows(lm: LoadedModel, examples: Sequence[ReasoningExample], max_length: int,
              skip_too_long: bool) -> tuple[list[dict[str, str]], int]:
    """One {prompt, completion} row per example, and how many were skipped for being too long (an error naming
    the file and row unless `skip_too_long`)."""
    limit = context_limit(lm, max_length)
    rows, skipped = [], 0
    for e in examples:
        row = {"id": e.id, "prompt": prompt_text(lm, rgen_messages(e.question, e.answer)),
               "completion": e.reasoning.strip()}
        if (length := row_tokens(lm, row)) <= limit:
            rows.append(row)
        elif skip_too_long:
            skipped += 1
        else:
            raise ValueError(f"{e.where}: question + reasoning is {length} tokens, over the limit of {limit} "
                             "(training.rgen.sft.max_length or the model's context); raise the limit, or set "
                             "training.rgen.skip_invalid: true to skip and count such rows")
    if not rows:
        raise ValueError(f"every one of the {len(examples)} R-Gen training rows is over {limit} tokens")
    return rows, skipped


def write_reasonings(lm: LoadedModel, questions: Sequence[str], answers: Sequence[str], max_new_tokens: int,
                     batching: Batching, on_progress: OnProgress = lambda n: None) -> list[str]:
    """Greedy reasonings for (question, answer) pairs: what R-Gen (or the untrained model) says justifies each."""
    prompts = [prompt_text(lm, rgen_messages(q, a)) for q, a in zip(questions, answers)]
    return [text.strip() for text in generate(lm, prompts, max_new_tokens, batching, on_progress)]
