"""In-context demonstration selection: each method is one registered `DemoSelector`.

A selector is built once per (pool, k, seed) and then maps a query example to its demos, so a costly index
(BM25) is built once per run, not once per input. Every draw is seeded, so the same spec sees the same demos.
A query is never its own demo: training prompts are drawn from the pool the demos come from.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from rank_bm25 import BM25Okapi

from strategies.example import Example

SelectDemos = Callable[[Example], list[Example]]

_CJK = "\u3400-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}_]+")


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased words for alphabetic scripts; characters and character bigrams for CJK (no word spaces)."""
    tokens = _TOKEN.findall(text.lower())
    bigrams = [a + b for a, b in zip(tokens, tokens[1:]) if len(a) == len(b) == 1 and re.match(rf"[{_CJK}]", a + b)]
    return tokens + bigrams


class PostingsBM25(BM25Okapi):
    """rank_bm25's Okapi BM25 with `get_scores` read from postings lists: the same arithmetic on the same numbers,
    so the same scores bit for bit, without its Python loop over every document for every query term (13 s of a
    100-example similar-3 run on emotion's 16k-example pool)."""

    def __init__(self, corpus: Sequence[Sequence[str]]) -> None:
        super().__init__(corpus)
        self._doc_len = np.array(self.doc_len)
        postings: dict[str, tuple[list[int], list[int]]] = {}
        for i, frequencies in enumerate(self.doc_freqs):
            for word, count in frequencies.items():
                docs, counts = postings.setdefault(word, ([], []))
                docs.append(i)
                counts.append(count)
        self._postings = {w: (np.array(d), np.array(c)) for w, (d, c) in postings.items()}

    def get_scores(self, query: Sequence[str]) -> np.ndarray:
        score = np.zeros(self.corpus_size)
        for q in query:
            q_freq = np.zeros(self.corpus_size, dtype=np.int64)
            if q in self._postings:
                docs, counts = self._postings[q]
                q_freq[docs] = counts
            score += (self.idf.get(q) or 0) * (q_freq * (self.k1 + 1) /
                                               (q_freq + self.k1 * (1 - self.b + self.b * self._doc_len / self.avgdl)))
        return score


def _zero(pool: Sequence[Example], k: int, seed: int) -> SelectDemos:
    return lambda query: []


def _random(pool: Sequence[Example], k: int, seed: int) -> SelectDemos:
    def select(query: Example) -> list[Example]:
        return random.Random(f"{seed}:{query.id}").sample([e for e in pool if e.id != query.id], k)

    return select


def _fixed(pool: Sequence[Example], k: int, seed: int) -> SelectDemos:
    """One label-balanced draw (round-robin over labels) shared by every input."""
    shuffled = random.Random(seed).sample(list(pool), len(pool))
    by_label: dict[str, list[Example]] = {}
    for example in shuffled:
        by_label.setdefault(example.label, []).append(example)
    demos: list[Example] = []
    while len(demos) < min(k + 1, len(pool)):
        for examples in by_label.values():
            if examples and len(demos) < k + 1:
                demos.append(examples.pop())
    demos, spare = demos[:k], demos[k:]
    random.Random(seed).shuffle(demos)
    return lambda query: [spare[0] if d.id == query.id and spare else d for d in demos]


def _similar(pool: Sequence[Example], k: int, seed: int) -> SelectDemos:
    """Top-k BM25 neighbours of the input, the most similar placed last (nearest to the input)."""
    index = PostingsBM25([bm25_tokens(e.text) or ["<empty>"] for e in pool])

    def select(query: Example) -> list[Example]:
        ranked = np.argsort(-index.get_scores(bm25_tokens(query.text)), kind="stable")  # ties: pool order
        best = [int(i) for i in ranked[:k + 1] if pool[i].id != query.id][:k]
        return [pool[i] for i in reversed(best)]

    return select


@dataclass(frozen=True)
class DemoSelector:
    """A registered demo-selection method."""

    doc: str
    build: Callable[[Sequence[Example], int, int], SelectDemos]


DEMO_SELECTORS: dict[str, DemoSelector] = {
    "zero": DemoSelector("zero-shot: no examples", _zero),
    "random": DemoSelector("K examples drawn at random from the pool for each input", _random),
    "fixed": DemoSelector("the same K label-balanced examples for every input", _fixed),
    "similar": DemoSelector("the K pool examples most similar to the input (BM25)", _similar),
}


def demo_selector(icl: str, pool: Sequence[Example], seed: int) -> SelectDemos:
    """The selector for a canonical `icl` value such as `zero` or `similar-3`."""
    method, _, k = icl.partition("-")
    return DEMO_SELECTORS[method].build(pool, int(k or 0), seed)
