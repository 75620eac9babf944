"""In-context demonstration selection: each method is one registered `DemoSelector`.

A selector is built once per (pool, k, seed) and then maps a batch of query examples to their demos, so a costly
index (BM25, the pool's embeddings) is built once per run, not once per input, and a dense retriever encodes a run's
queries in batches, not one by one. Every draw is seeded, so the same spec sees
the same demos. A query is never its own demo: training prompts are drawn from the pool the demos come from.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np

from strategies.example import Example
from strategies.lookup import entry

SelectDemos = Callable[[Sequence[Example]], list[list[Example]]]  # each query's demos, for a batch of queries


@dataclass(frozen=True)
class PoolEmbeddings:
    """Sentence embeddings of a demo pool (row i: pool[i]) and the encoder that made them, for the queries."""

    vectors: np.ndarray
    embed: Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class DemoSource:
    """What a selector draws from: the pool, how many demos, the seed, and the pool's embeddings (dense-K only)."""

    pool: Sequence[Example]
    k: int
    seed: int
    embeddings: PoolEmbeddings | None = None


_CJK = "\u3400-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}_]+")
_CJK_CHAR = re.compile(rf"[{_CJK}]")


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased words for alphabetic scripts; characters and character bigrams for CJK (no word spaces)."""
    tokens = _TOKEN.findall(text.lower())
    bigrams = [a + b for a, b in zip(tokens, tokens[1:]) if len(a) == len(b) == 1 and _CJK_CHAR.match(a)]
    return tokens + bigrams


BM25_EPSILON = 0.25  # a negative idf (a word in over half the pool) is raised to this fraction of the mean idf


def okapi_bm25(corpus: Sequence[Sequence[str]]) -> Callable[[Sequence[str]], np.ndarray]:
    """Scores of every document for a query of tokens: Okapi BM25 as rank_bm25's BM25Okapi computes it (k1 1.5,
    b 0.75, idf log(N - n + 0.5) - log(n + 0.5), a negative idf raised to `BM25_EPSILON` x the mean idf), on bm25s's
    sparse index. bm25s's ATIRE variant has that term-frequency part, tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl)),
    but none of its idfs floors negatives that way (Robertson's sets them to 0, which changed the top 4 of 180 of
    emotion's first 200 queries): each word's column, built under Lucene's idf (never 0), is rescaled to Okapi's.
    The same top 10 as rank_bm25's scores on every bundled dataset (tests/test_retrieval.py)."""
    vocabulary: dict[str, int] = {}  # the documents as word ids: a third faster to index than as words
    ids = [[vocabulary.setdefault(word, len(vocabulary)) for word in doc] for doc in corpus]
    index = bm25s.BM25(k1=1.5, b=0.75, method="atire", idf_method="lucene", dtype="float64", csc_backend="scipy")
    index.index((ids, vocabulary), create_empty_token=False, show_progress=False)
    matrix = index.scores
    n, df = matrix["num_docs"], np.diff(matrix["indptr"])  # documents, and documents holding each word
    okapi = np.log(n - df + 0.5) - np.log(df + 0.5)
    okapi[okapi < 0] = BM25_EPSILON * okapi.mean()
    lucene = np.log(1 + (n - df + 0.5) / (df + 0.5))
    matrix["data"] = matrix["data"] * np.repeat(okapi / lucene, df)
    return lambda query: index.get_scores_from_ids(index.get_tokens_ids(list(query)))


def _each(select: Callable[[Example], list[Example]]) -> SelectDemos:
    """A selector that picks each query's demos on its own."""
    return lambda queries: [select(query) for query in queries]


def _zero(source: DemoSource) -> SelectDemos:
    return _each(lambda query: [])


def _random(source: DemoSource) -> SelectDemos:
    pool, k, seed = source.pool, source.k, source.seed

    def select(query: Example) -> list[Example]:
        return random.Random(f"{seed}:{query.id}").sample([e for e in pool if e.id != query.id], k)

    return _each(select)


def _fixed(source: DemoSource) -> SelectDemos:
    """One label-balanced draw (round-robin over labels) shared by every input."""
    pool, k = source.pool, source.k
    shuffled = random.Random(source.seed).sample(list(pool), len(pool))
    by_label: dict[str, list[Example]] = {}
    for example in shuffled:
        by_label.setdefault(example.label, []).append(example)
    demos: list[Example] = []
    while len(demos) < min(k + 1, len(pool)):
        for examples in by_label.values():
            if examples and len(demos) < k + 1:
                demos.append(examples.pop())
    demos, spare = demos[:k], demos[k:]
    random.Random(source.seed).shuffle(demos)
    return _each(lambda query: [spare[0] if d.id == query.id and spare else d for d in demos])


def top(scores: np.ndarray, n: int) -> np.ndarray:
    """The indices of the `n` highest scores, highest first, ties in index order: the first `n` of a stable
    descending sort, found by partition (linear) and then sorting only the scores at or above the n-th."""
    if n >= len(scores):
        return np.argsort(-scores, kind="stable")
    threshold = np.partition(scores, len(scores) - n)[len(scores) - n]
    candidates = np.flatnonzero(scores >= threshold)  # every tie at the threshold, in index order
    return candidates[np.argsort(-scores[candidates], kind="stable")][:n]


def _nearest(source: DemoSource, scores: Callable[[Sequence[Example]], Iterable[np.ndarray]]) -> SelectDemos:
    """For each query, the k pool examples of highest score (`scores(queries)`: a row of the pool's scores per
    query, in order), never the query itself, the most similar placed last (nearest to the input); ties keep pool
    order."""
    pool, k = source.pool, source.k

    def select(query: Example, row: np.ndarray) -> list[Example]:
        best = [int(i) for i in top(row, k + 1) if pool[i].id != query.id][:k]
        return [pool[i] for i in reversed(best)]

    return lambda queries: [select(query, row) for query, row in zip(queries, scores(queries), strict=True)]


def _similar(source: DemoSource) -> SelectDemos:
    """Top-k BM25 neighbours of the input."""
    scores = okapi_bm25([bm25_tokens(e.text) or ["<empty>"] for e in source.pool])
    return _nearest(source, lambda queries: (scores(bm25_tokens(query.text)) for query in queries))


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _dense(source: DemoSource) -> SelectDemos:
    """Top-k cosine neighbours of the input's sentence embedding: the queries encoded together (batched by the
    encoder), then one matrix-vector product per input."""
    if source.embeddings is None:
        raise ValueError("dense-K needs the pool's sentence embeddings (inference.retriever names the model)")
    pool_vectors, embed = _unit(source.embeddings.vectors.astype(np.float32)), source.embeddings.embed
    if len(pool_vectors) != len(source.pool):
        raise ValueError(f"{len(pool_vectors)} pool embeddings for a pool of {len(source.pool)} examples")
    return _nearest(source, lambda queries: (pool_vectors @ query for query in _unit(embed([q.text for q in queries]))))


@dataclass(frozen=True)
class DemoSelector:
    """A registered demo-selection method: its doc, how to build it, whether its demos depend on the input's
    content (a cost or length estimate draws as many at random instead of building its index), and whether it
    needs the pool's sentence embeddings."""

    doc: str
    build: Callable[[DemoSource], SelectDemos]
    retrieves: bool = False
    needs_embeddings: bool = False
    seeded: bool = False  # the seed changes its demos (else an untrained model's run is the same under any seed)


DEMO_SELECTORS: dict[str, DemoSelector] = {
    "zero": DemoSelector("zero-shot: no examples", _zero),
    "random": DemoSelector("K examples drawn at random from the pool for each input", _random, seeded=True),
    "fixed": DemoSelector("the same K label-balanced examples for every input", _fixed, seeded=True),
    "similar": DemoSelector("the K pool examples most similar to the input by BM25 (words; characters and "
                            "character bigrams for Chinese: the retriever for the Chinese datasets)", _similar,
                            retrieves=True),
    "dense": DemoSelector("the K pool examples nearest the input by sentence-embedding cosine (inference.retriever, "
                          "default all-MiniLM-L6-v2: English only; Chinese datasets take similar-K, or a multilingual "
                          "retriever)", _dense, retrieves=True, needs_embeddings=True),
}


def demo_selector(icl: str, pool: Sequence[Example], seed: int,
                  embeddings: PoolEmbeddings | None = None) -> SelectDemos:
    """The selector for a canonical `icl` value such as `zero` or `similar-3`."""
    method, _, k = icl.partition("-")
    return entry(DEMO_SELECTORS, method, "icl method").build(DemoSource(pool, int(k or 0), seed, embeddings))


# The retriever that suits a prompt language (`bench list`): measured on 200 test examples with SmolLM2-135M and
# 3 demos under ppl decoding, dense-K (all-MiniLM-L6-v2) beat similar-K by 13.5 points of accuracy on emotion and
# was within 3.5 points (not significant) on sst2; on tnews (Chinese) BM25 on characters beat the English
# embedding model by 12.5 points (p = 0.006).
RETRIEVER_FOR_LANGUAGE = {"en": "dense-K (or similar-K)", "zh": "similar-K (BM25 on characters)"}
