"""Reasoning corpora: (question, answer, reasoning) triples the reasoning generator (R-Gen) is trained on.

Bundled: `cose`, `esnli`, `gsm8k` (bench/data/reasoning/<name>/, README with provenance), a stand-in for the
paper's syvai/reasoning-gen mixture. Any JSONL (optionally .gz) or CSV file with `question`, `answer` and `reasoning`
columns works too. A missing column is an error naming the file and row; an empty field is too, unless
`skip_invalid` is set, when the row is skipped and counted.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bench.plan.datasets import BUNDLED_DIR, fingerprint, table_rows
from bench.plan.errors import UserError
from strategies.reasoning import ReasoningExample

CORPORA_DIR = BUNDLED_DIR / "reasoning"
FIELDS = ("question", "answer", "reasoning")


@dataclass(frozen=True)
class CorpusFormat:
    """How one bundled corpus is read: its file, the columns it needs, and how a row becomes a question."""

    file: str
    columns: tuple[str, ...]
    question: Callable[[dict], str]


BUNDLED_CORPORA: dict[str, CorpusFormat] = {
    "cose": CorpusFormat("train.jsonl.gz", ("question", "choices", "answer", "reasoning"),
                         lambda r: f"{r['question']}\nOptions: {', '.join(r['choices'])}"),
    "esnli": CorpusFormat("validation.jsonl.gz", ("premise", "hypothesis", "answer", "reasoning"),
                          lambda r: f"Premise: {r['premise']}\nHypothesis: {r['hypothesis']}"),
    "gsm8k": CorpusFormat("train.jsonl.gz", FIELDS, lambda r: r["question"]),
}
_USER_FILE = CorpusFormat("", FIELDS, lambda r: r["question"])


@dataclass(frozen=True)
class ReasoningCorpus:
    """A loaded corpus: its valid rows, its identity (bundled name or content hash) and the rows skipped."""

    identity: str
    examples: tuple[ReasoningExample, ...]
    skipped: int


@cache
def load_corpus(ref: str, skip_invalid: bool) -> ReasoningCorpus:
    """A bundled corpus by name, or a user file by path; every row checked (see module doc)."""
    if ref in BUNDLED_CORPORA:
        form, path, identity = BUNDLED_CORPORA[ref], CORPORA_DIR / ref / BUNDLED_CORPORA[ref].file, ref
    else:
        path = Path(ref)
        if not path.is_file():
            raise UserError(f"reasoning corpus '{ref}' is neither bundled ({', '.join(BUNDLED_CORPORA)}) nor a file; "
                            "give a JSONL or CSV file with question, answer and reasoning columns")
        form, identity = _USER_FILE, f"file:{fingerprint(path)}"
    examples, skipped = [], 0
    for where, row in table_rows(path):
        missing = [c for c in form.columns if c not in row]
        if missing:
            raise UserError(f"{where}: no '{missing[0]}' column (columns: {', '.join(row)}); a reasoning corpus needs "
                            f"{', '.join(form.columns)}")
        triple = (str(form.question(row)), str(row["answer"] or ""), str(row["reasoning"] or ""))
        empty = next((name for name, text in zip(FIELDS, triple) if not text.strip()), None)
        if empty is None:
            examples.append(ReasoningExample(f"{identity}:{where.rsplit(':', 1)[1]}", where, *triple))
        elif skip_invalid:
            skipped += 1
        else:
            raise UserError(f"{where}: empty {empty}; fix the row, or set training.rgen.skip_invalid: true to skip "
                            "and count it")
    if not examples:
        raise UserError(f"{path}: no usable (question, answer, reasoning) rows")
    return ReasoningCorpus(identity, tuple(examples), skipped)


def rgen_mixture(corpora: Sequence[ReasoningCorpus], per_corpus: int, seed: int) -> list[ReasoningExample]:
    """R-Gen's training set: a seeded sample of `per_corpus` rows from each corpus (all rows of a smaller one),
    shuffled together so each batch mixes domains."""
    rng = random.Random(f"rgen:{seed}")
    mixture = [e for c in corpora for e in rng.sample(c.examples, min(per_corpus, len(c.examples)))]
    rng.shuffle(mixture)
    return mixture
