"""Two-stage reasoning: reasoning corpora and their bad rows, the text side (questions, leakage, masking, the label
read after a reasoning), and a tiny grid that trains R-Gen, writes reasonings once, and trains and evaluates Q->A
and Q->RA classifiers (R-Gen, self, and RL on Q->RA) into a temporary MLflow store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest
from cli_runner import bench, flat, run_cli, tiny_training_grid

import runners.rgen
from bench.plan.errors import UserError
from bench.plan.reasoning_corpora import BUNDLED_CORPORA, load_corpus, rgen_mixture
from reports.vocabulary import HASH_TAG, KIND_TAG
from runners.rgen import rgen_rows
from strategies.example import Category, Example, TaskCard
from strategies.prompts import PromptBuilder
from strategies.reasoning import (
    LABEL_MASK,
    ReasoningExample,
    classification_question,
    mask_label_words,
    reasoning_stats,
    states_label,
)
from strategies.registry import Strategy

CARD = TaskCard("en", "Classify the emotion of the tweet.", "Tweet",
                (Category("joy", "joy"), Category("sadness", "sadness"), Category("anger", "anger")))


def test_bundled_corpora_load_whole_with_their_questions():
    sizes = {"cose": 7610, "esnli": 9842, "gsm8k": 7473}  # the READMEs' row counts
    for name in BUNDLED_CORPORA:
        corpus = load_corpus(name, False)
        assert len(corpus.examples) == sizes[name] and corpus.skipped == 0 and corpus.identity == name
    cose = load_corpus("cose", False).examples[0]
    assert cose.question.endswith("Options: antique shop, house, dark place") and cose.answer == "house"
    assert load_corpus("esnli", False).examples[0].question.startswith("Premise: Two women are embracing")
    mixture = rgen_mixture([load_corpus(n, False) for n in BUNDLED_CORPORA], 5, seed=0)
    assert len(mixture) == 15 and {e.id.split(":")[0] for e in mixture} == set(BUNDLED_CORPORA)
    assert mixture == rgen_mixture([load_corpus(n, False) for n in BUNDLED_CORPORA], 5, seed=0)


def _corpus(tmp_path: Path, *rows: dict) -> str:
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_a_user_corpus_with_a_missing_column_or_an_empty_reasoning_names_file_and_row(tmp_path):
    good = {"question": "2+2?", "answer": "4", "reasoning": "two and two make four"}
    path = _corpus(tmp_path, good, {"question": "q", "answer": "a"})
    with pytest.raises(UserError, match=rf"^{path}:2: no 'reasoning' column \(columns: question, answer\)"):
        load_corpus(path, True)  # a missing column is never skipped: the file is wrong, not a row
    path = _corpus(tmp_path, good, good | {"reasoning": "  "}, good)
    with pytest.raises(UserError, match=rf"^{path}:2: empty reasoning; .*skip_invalid: true"):
        load_corpus(path, False)
    corpus = load_corpus(path, True)
    assert len(corpus.examples) == 2 and corpus.skipped == 1 and corpus.identity.startswith("file:")
    assert corpus.examples[1].where == f"{path}:3"


def test_an_over_long_reasoning_names_file_and_row_or_is_skipped_and_counted(tiny_lm):
    fine = ReasoningExample("c:1", "f.jsonl:1", "q?", "a", "short")
    long = ReasoningExample("c:2", "f.jsonl:2", "q?", "a", "word " * 400)
    with pytest.raises(ValueError, match=r"^f.jsonl:2: question \+ reasoning is \d+ tokens, over the limit of 128"):
        rgen_rows(tiny_lm, [fine, long], 128, skip_too_long=False)
    rows, skipped = rgen_rows(tiny_lm, [fine, long], 128, skip_too_long=True)
    assert [r["id"] for r in rows] == ["c:1"] and skipped == 1 and rows[0]["completion"] == "short"
    assert "Question: q?\nAnswer: a" in rows[0]["prompt"]


def test_leakage_masking_and_length_figures():
    assert states_label("Clearly Joy shows here", "joy") and not states_label("a joyful day", "joy")
    masked = mask_label_words("Sadness, not joy or anger, is the word.", ["joy", "sadness", "anger"])
    assert masked == f"{LABEL_MASK}, not {LABEL_MASK} or {LABEL_MASK}, is the word."
    stats = reasoning_stats(["it is joy", "", "sad words here today"], ["joy", "anger", "sadness"])
    assert stats["n"] == 3 and stats["empty_rate"] == pytest.approx(1 / 3)
    assert stats["leakage_rate"] == pytest.approx(1 / 3) and stats["words_max"] == 4 and stats["words_p50"] == 3
    assert classification_question(CARD, Example("x", "i am glad", "joy")) == \
        "Classify the emotion of the tweet.\nTweet: i am glad"


def test_the_label_is_read_after_a_reasoning_that_names_other_labels():
    builder = PromptBuilder(CARD, Strategy(reasoning="on"), [], seed=0)
    output = "It sounds like joy at first, but the anger is gone and what is left is sadness.\nAnswer: sadness"
    assert builder.parse(output) == "sadness"
    assert builder.reasoning_of(output).startswith("It sounds like joy")
    assert builder.parse("Joy? Anger?\nAnswer: **Sadness.**") == "sadness"
    assert builder.parse("maybe joy or anger, hard to say") == "invalid"  # no answer line, two labels: no decision
    assert builder.parse("Sadness rules.\nAnswer: joy, not anger", strict=True) == "invalid"  # RL: no hedging
    assert builder.completion("joy", "R.") == "R.\nAnswer: joy"


GRID = tiny_training_grid("two_stage_e2e", """\
  rl: {steps: 1, prompts_per_step: 2, num_generations: 2, reasoning_max_completion_length: 6}
  rgen: {per_corpus: 4, max_new_tokens: 6, sft: {batch_size: 4, max_length: 2048}, mask_labels: MASK}
  strategies:
    - {reasoning: off}
    - {reasoning: on, reasoning_source: [rgen, self]}
    - {method: sft+rl, reasoning: on, reasoning_source: rgen}""", "  - {reasoning: [off, on]}")


def _runs(uri: str, *kinds: str) -> list:
    mlflow.set_tracking_uri(uri)
    return [r for r in mlflow.search_runs(experiment_names=["two_stage_e2e"], output_format="list")
            if r.data.tags.get(KIND_TAG) in kinds]


def test_two_stage_grid_trains_rgen_once_and_reuses_its_reasonings(tmp_path, fresh_cache, tracking_uri, monkeypatch,
                                                                   capsys):
    grid = tmp_path / "two_stage.yaml"
    grid.write_text(GRID.replace("MASK", "false"), encoding="utf-8")
    assert run_cli(monkeypatch, "--grid", str(grid)) == 0
    trains = {r.info.run_name: r for r in _runs(tracking_uri, "train", "rgen")}
    assert set(trains) == {"rgen tiny-random (cose+esnli+gsm8k)", "train emotion/tiny-random/sft",
                           "train emotion/tiny-random/sft(zero+reason+rgen)",
                           "train emotion/tiny-random/sft(zero+reason+self-r)",
                           "train emotion/tiny-random/sft+grpo(zero+reason+rgen)"}
    assert all(r.info.status == "FINISHED" for r in trains.values())
    rgen = trains["rgen tiny-random (cose+esnli+gsm8k)"]
    assert rgen.data.metrics["n_train"] == 12 and rgen.data.params["rgen.per_corpus"] == "4"
    client = mlflow.MlflowClient(tracking_uri)
    for source in ("rgen", "self-r"):
        run = trains[f"train emotion/tiny-random/sft(zero+reason+{source})"]
        assert run.data.metrics["reasoning.n"] == 8 and 0 <= run.data.metrics["reasoning.leakage_rate"] <= 1
        assert {"reasoning.words_p50", "reasoning.words_p90", "reasoning.empty_rate"} <= set(run.data.metrics)
        assert "reasonings.json" in [a.path for a in client.list_artifacts(run.info.run_id)]
        assert "reasonings" in {t.value for i in run.inputs.dataset_inputs for t in i.tags}
    assert trains["train emotion/tiny-random/sft(zero+reason+rgen)"].data.params["train.reasoner.rgen_hash"] == \
        rgen.data.tags[HASH_TAG]
    written = {r.info.run_name: r for r in _runs(tracking_uri, "reasonings")}
    assert set(written) == {"reasonings (rgen) emotion", "reasonings (self) emotion"}

    evals = _runs(tracking_uri, "eval")
    assert len(evals) == 2 * 5 and all(r.info.status == "FINISHED" for r in evals)
    sources = {(r.data.params["train.method"], r.data.params["train.reasoning_source"]) for r in evals}
    assert sources == {("none", "none"), ("sft", "none"), ("sft", "rgen"), ("sft", "self"), ("sft+rl", "rgen")}
    cached = list((fresh_cache / "reasonings").glob("*.json"))
    assert len(cached) == 2 and all(len(json.loads(p.read_text())) == 8 for p in cached)

    def no_writing(*args, **kwargs):
        raise AssertionError("reasonings were written again")

    monkeypatch.setattr(runners.rgen, "write_reasonings", no_writing)
    grid.write_text(GRID.replace("MASK", "true"), encoding="utf-8")  # new classifiers, the same reasonings
    capsys.readouterr()
    assert run_cli(monkeypatch, "--grid", str(grid)) == 0
    out = flat(capsys.readouterr().out)
    assert "start rgen" not in out and out.count("start train") == 3  # rgen, self, and RL on the rgen one
    assert "start reasonings" not in out
    masked = [r for r in _runs(tracking_uri, "train") if r.data.params.get("train.mask_labels") == "True"]
    assert len(masked) == 3 and all(r.info.status == "FINISHED" for r in masked)
    assert len(_runs(tracking_uri, "train", "rgen")) == 5 + 3  # Q->A has no reasonings to mask: still cached

    assert bench(monkeypatch, "report", "--out", str(tmp_path / "report")) == 0
    md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
    assert "| Q->RA (R-Gen reasonings) over Q->A, accuracy | Two-stage reasoning, arXiv 2507.00214" in md
    assert "| sft(zero+reason+rgen) / zero+reason vs sft / zero | emotion / tiny-random" in md
    assert "## Training reasonings" in md and md.count("| train emotion/tiny-random/sft(zero+reason+") == 4


def test_a_bad_reasoning_corpus_in_a_grid_is_one_line_before_anything_runs(tmp_path, tracking_uri, monkeypatch,
                                                                          capsys):
    corpus = _corpus(tmp_path, {"question": "q", "answer": "a", "reasoning": ""})
    grid = tmp_path / "g.yaml"
    grid.write_text("name: bad\ndatasets: [emotion]\nmodels: [tiny-random]\ntraining:\n"
                    f"  rgen: {{corpora: [cose, '{corpus}']}}\n"
                    "  strategies: {reasoning: on, reasoning_source: rgen}\n", encoding="utf-8")
    assert run_cli(monkeypatch, "--grid", str(grid)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert f"{grid}: training.rgen.corpora[1]: {corpus}:1: empty reasoning" in flat(err)
    assert not os.path.exists(tmp_path / "mlflow.db") or not _runs(tracking_uri, "train")


def _log_trained_eval(name: str, train: dict[str, str], reasoning: str, right: set[int], gold: list[str]) -> None:
    params = {"dataset": "toy", "model": "m", "eval.split": "test", "eval.limit": "none", "eval.sample_seed": "0",
              "baseline": "none", **{f"train.{k}": v for k, v in train.items()},
              **{f"infer.{k}": v for k, v in Strategy(reasoning=reasoning).as_dict().items()}}
    with mlflow.start_run(run_name=name, nested=True, tags={HASH_TAG: name, KIND_TAG: "eval"}):
        mlflow.log_params(params)
        predictions = [g if i in right else ("b" if g == "a" else "a") for i, g in enumerate(gold)]
        mlflow.log_table({"id": [f"t-{i:02d}" for i in range(len(gold))], "text": ["t"] * len(gold), "gold": gold,
                          "prediction": predictions, "raw_output": predictions,
                          "candidate_scores": [""] * len(gold)}, artifact_file="predictions.json")


def test_the_report_puts_q_to_ra_minus_q_to_a_beside_the_papers_figure(tracking_uri, tmp_path, monkeypatch):
    from reports.analysis import build_boards, reference_deltas
    from reports.store import read_store

    monkeypatch.setenv("GENCLSBENCH_CACHE", str(tmp_path / "cache"))
    gold = ["a", "b"] * 10
    qa = {"method": "sft", "reasoning": "off", "reasoning_source": "none"}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("two")
    with mlflow.start_run(run_name="grid"):
        _log_trained_eval("qa", qa, "off", set(range(10)), gold)
        _log_trained_eval("qra-rgen", qa | {"reasoning": "on", "reasoning_source": "rgen"}, "on", set(range(14)), gold)
        _log_trained_eval("qra-rgen-asked-no-reasoning", qa | {"reasoning": "on", "reasoning_source": "rgen"}, "off",
                          set(range(20)), gold)  # not Q->RA at inference: no treatment
        _log_trained_eval("qra-self", qa | {"reasoning": "on", "reasoning_source": "self"}, "on", set(range(2, 12)),
                          gold)
    data = read_store(tracking_uri, "two", tmp_path / "cache")
    deltas = {d.reference.delta_points: d for d in reference_deltas(build_boards(data))}
    assert set(deltas) == {8.7, None}
    rgen, own = deltas[8.7], deltas[None]
    assert (rgen.treatment, rgen.control) == ("sft(zero+reason+rgen) / zero+reason", "sft / zero")
    assert rgen.measured.value == pytest.approx(20.0) and rgen.p_value == pytest.approx(0.125)  # 4 discordant, 4:0
    assert own.treatment == "sft(zero+reason+self-r) / zero+reason"
    assert own.measured.value == pytest.approx(0.0) and own.p_value == pytest.approx(1.0)  # 2:2 discordant
