"""Retrieval of demonstrations: dense (nearest neighbours by sentence embedding, never the query itself, pool
embeddings computed once per (retriever, pool) and cached on disk, the real offline MiniLM through
sentence-transformers, equal to the vectors of the hand-written encoder before it) and BM25 (bm25s, the same top 10
as rank_bm25's scores on every bundled dataset)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from cli_runner import run_cli

from bench.plan.datasets import DatasetCache, DatasetConfig, load_dataset
from bench.plan.errors import UserError
from bench.plan.grid import expand, read_grid
from bench.run.workspace import cached_array
from reports.vocabulary import KIND_TAG
from strategies.demos import PoolEmbeddings, bm25_tokens, demo_selector, okapi_bm25, top
from strategies.example import Example

GOLDEN = Path(__file__).resolve().parent / "golden"
POOL = [Example("p0", "cats", "a"), Example("p1", "kittens", "a"), Example("p2", "stocks", "b"),
        Example("p3", "shares", "b"), Example("p4", "cake", "c")]
# handcrafted 3-d embeddings: an animals axis, a finance axis, a food axis
VECTORS = {"cats": [1, 0, 0], "kittens": [0.9, 0.1, 0], "stocks": [0, 1, 0], "shares": [0.1, 0.9, 0.1],
           "cake": [0, 0, 1], "markets": [0.05, 1, 0.02], "puppies": [0.8, 0, 0.3]}


def _embeddings() -> PoolEmbeddings:
    embed = lambda texts: np.array([VECTORS[t] for t in texts], dtype=np.float32)  # noqa: E731
    return PoolEmbeddings(embed([e.text for e in POOL]), embed)


def test_dense_returns_the_nearest_neighbours_most_similar_last():
    select = demo_selector("dense-2", POOL, 0, _embeddings())
    assert [d.id for d in select([Example("q", "markets", "b")])[0]] == ["p3", "p2"]
    assert [d.id for d in select([Example("q", "puppies", "a")])[0]] == ["p1", "p0"]


def test_dense_never_returns_the_query_itself():
    select = demo_selector("dense-2", POOL, 0, _embeddings())
    assert [d.id for d in select([POOL[2]])[0]] == ["p1", "p3"]  # stocks: shares first, never itself
    assert all(d.id != e.id for e in POOL for d in select([e])[0])


def test_top_is_the_head_of_a_stable_descending_sort():
    """Selection by partition returns what a full stable sort would: ties (BM25's zero scores) in pool order."""
    from strategies.demos import top

    rng = np.random.default_rng(0)
    for trial in range(2000):
        n = int(rng.integers(1, 60))
        scores = rng.integers(0, 4, n).astype(float) if trial % 2 else rng.random(n)
        k = int(rng.integers(1, n + 2))
        assert np.array_equal(top(scores, k), np.argsort(-scores, kind="stable")[:k])


def test_dense_without_embeddings_says_what_it_needs():
    with pytest.raises(ValueError, match="dense-K needs the pool's sentence embeddings"):
        demo_selector("dense-2", POOL, 0)


def test_pool_embeddings_are_computed_once_and_written_whole(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return np.arange(6, dtype=np.float32).reshape(2, 3)

    path = tmp_path / "embeddings" / "k.npy"
    first, second = cached_array(path, compute), cached_array(path, compute)
    assert len(calls) == 1 and np.array_equal(first, second)
    assert [p.name for p in path.parent.iterdir()] == ["k.npy"]  # no staging file left


def _grid(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "g.yaml"
    path.write_text(f"name: g\ndatasets: [emotion]\nmodels: [tiny-random]\nbaselines: []\n{body}", encoding="utf-8")
    return path


def test_only_dense_runs_name_a_retriever_and_training_refuses_it(tmp_path):
    path = _grid(tmp_path, "strategies:\n  - {icl: [similar-2, dense-2]}\n")
    specs = expand(read_grid(path), path, DatasetCache(), "float32")
    assert {s.strategy.icl: s.retriever for s in specs} == {"similar-2": None, "dense-2": "all-minilm-l6-v2"}
    path = _grid(tmp_path, "training:\n  strategies: [{icl: dense-2}]\n")
    with pytest.raises(UserError, match="dense-2 is an inference strategy only"):
        expand(read_grid(path), path, DatasetCache(), "float32")
    path = _grid(tmp_path, "inference: {retriever: tiny-random}\n")
    with pytest.raises(UserError, match="inference.retriever: 'tiny-random' is registered with role 'classifier'"):
        expand(read_grid(path), path, DatasetCache(), "float32")


def test_bm25_gives_rank_bm25s_top_10_on_every_bundled_dataset():
    """bm25s, with rank_bm25's idf, ranks the first 200 queries of each dataset's evaluation split as rank_bm25's
    BM25Okapi did (its top 10, ties in pool order, pinned before the switch): the same demos, so similar-K keeps
    its hashes and results."""
    golden = json.loads((GOLDEN / "bm25_top10.json").read_text(encoding="utf-8"))
    for name in ("emotion", "iflytek_fewclue", "sms_spam", "sst2", "tnews"):
        dataset = load_dataset(DatasetConfig(name=name))
        scores = okapi_bm25([bm25_tokens(e.text) or ["<empty>"] for e in dataset.pool])
        queries = dataset.eval_splits[dataset.default_eval_split][:200]
        ranked = [top(scores(bm25_tokens(q.text)), 10).tolist() for q in queries]
        assert ranked == golden[name], name


def test_bm25_scores_a_query_of_unknown_or_no_words_zero():
    scores = okapi_bm25([["cats", "purr"], ["stocks"]])
    assert scores(["never", "seen"]).tolist() == scores([]).tolist() == [0.0, 0.0]


@pytest.fixture(scope="session")
def minilm(model_cache: Path):
    from runners.embeddings import SentenceEncoder
    from runners.model_registry import EMBEDDING, model_folder

    return SentenceEncoder(model_folder("all-minilm-l6-v2", model_cache, EMBEDDING))


# the texts whose MiniLM vectors the hand-written encoder (mean pooling, max_seq_length 256, L2 normalisation, with
# plain transformers) computed before sentence-transformers replaced it, pinned in golden/minilm_vectors.npy
GOLDEN_TEXTS = ["i feel a little bit scared of what tomorrow brings", "Stock prices fell sharply this morning.",
                "新闻：股市今天大幅下跌", "", "word " * 400]


def test_minilm_vectors_equal_the_hand_written_encoders(minilm):
    """So every dense-K run with the default retriever keeps its hash, its cached pool embeddings and its demos."""
    before = np.load(GOLDEN / "minilm_vectors.npy")
    assert np.abs(minilm.documents(GOLDEN_TEXTS) - before).max() < 1e-6
    assert np.abs(minilm.queries(GOLDEN_TEXTS) - before).max() < 1e-6
    assert all(np.abs(minilm.queries([t])[0] - v).max() < 1e-6 for t, v in zip(GOLDEN_TEXTS, before))


def test_a_retrievers_own_query_and_document_prompts_are_applied(minilm, model_cache, tmp_path):
    """An e5-style model (its prompts in config_sentence_transformers.json): the pool is encoded as passages, each
    input as a query; a folder retriever's revision says that sentence-transformers encodes it."""
    from runners.embeddings import SentenceEncoder
    from runners.model_registry import model_revision, retriever_revision

    folder = shutil.copytree(model_cache / "models" / "all-minilm-l6-v2", tmp_path / "e5-style")
    config = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    config["prompts"] = {"query": "query: ", "passage": "passage: "}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config), encoding="utf-8")
    e5 = SentenceEncoder(folder)
    texts = ["The cat is sleeping.", "Stocks fell."]
    assert np.allclose(e5.queries(texts), minilm.queries([f"query: {t}" for t in texts]), atol=1e-6)
    assert np.allclose(e5.documents(texts), minilm.documents([f"passage: {t}" for t in texts]), atol=1e-6)
    assert not np.allclose(e5.queries(texts), minilm.queries(texts), atol=1e-3)
    assert retriever_revision(str(folder)) == f"{model_revision(str(folder))}+sentence-transformers"
    assert retriever_revision("all-minilm-l6-v2") == model_revision("all-minilm-l6-v2")


def test_minilm_from_its_wheel_finds_neighbours_by_meaning(minilm):
    pool = ["The cat is sleeping on the sofa.", "Stock prices fell sharply this morning.",
            "I baked a chocolate cake for her birthday.", "The striker scored twice in the final."]
    examples = [Example(f"p{i}", text, str(i)) for i, text in enumerate(pool)]
    vectors = minilm.documents(pool)
    assert vectors.shape == (4, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    select = demo_selector("dense-1", examples, 0, PoolEmbeddings(vectors, minilm.queries))
    queries = {"Investors panicked as the market crashed.": "p1", "My kitten naps all afternoon.": "p0",
               "The goalkeeper saved a penalty.": "p3", "Dessert was a lemon tart.": "p2"}
    assert {q: select([Example("q", q, "")])[0][0].id for q in queries} == queries
    # queries encoded together choose what each chooses alone
    assert select([Example("q", q, "") for q in queries]) == [select([Example("q", q, "")])[0] for q in queries]
    # batching and padding do not change a vector
    assert np.allclose(minilm.queries(pool[:1])[0], vectors[0], atol=1e-5)


def test_a_dense_calibrated_grid_runs_end_to_end_and_caches_the_pool(tmp_path, tracking_uri, monkeypatch,
                                                                    model_cache):
    folder = tmp_path / "topics"
    folder.mkdir()
    topics = {"pets": ["my dog", "the cat", "a kitten", "puppies"], "money": ["stocks", "bank loan", "shares", "tax"]}
    rows = [{"text": f"{t} {i}", "label": label} for label, texts in topics.items() for t in texts for i in range(3)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[::5]), encoding="utf-8")
    grid = tmp_path / "g.yaml"
    data = f"{{path: {folder / 'train.jsonl'}, eval_path: {folder / 'test.jsonl'}}}"
    grid.write_text(f"name: dense\ndatasets: [{data}]\nmodels: [tiny-random]\nbaselines: []\nstrategies:\n"
                    "  - {icl: dense-2, decoding: ppl, calibration: [none, contextual, pmi]}\n", encoding="utf-8")
    assert run_cli(monkeypatch, "--grid", str(grid)) == 0
    cached = list((model_cache / "embeddings").glob("*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape == (len(rows), 384)
    mlflow.set_tracking_uri(tracking_uri)
    children = [r for r in mlflow.search_runs(experiment_names=["dense"], output_format="list")
                if r.data.tags.get(KIND_TAG) == "eval"]
    assert {r.info.run_name.rsplit("/", 1)[1] for r in children} == {"dense-2+ppl", "dense-2+ppl+cc", "dense-2+ppl+pmi"}
    assert {r.data.params["infer.retriever"] for r in children} == {"all-minilm-l6-v2"}
    client = mlflow.MlflowClient(tracking_uri)
    for run in children:
        table = json.loads(Path(client.download_artifacts(run.info.run_id, "predictions.json", str(tmp_path)))
                           .read_text())
        calibrated = table["data"][0][table["columns"].index("calibrated_scores")]
        assert bool(calibrated) == (run.data.params["infer.calibration"] != "none")
