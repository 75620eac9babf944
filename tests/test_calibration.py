"""Registered values carry their behaviour: calibration and length normalisation of candidate scores, and label
verbalizers; each is one registration, and an unknown value is an error, never a silent default."""

from __future__ import annotations

import json

import numpy as np
import pytest

from strategies.example import Category, Example, TaskCard
from strategies.prompts import PromptBuilder
from strategies.registry import DIMENSIONS, Strategy
from strategies.scoring import CALIBRATIONS, CONTENT_FREE_INPUTS, PPL_NORMS
from strategies.verbalizers import VERBALIZERS, Verbalizer

CARD = TaskCard("en", "Classify the sentiment.", "Text",
                (Category("0", "negative"), Category("1", "neutral"), Category("2", "positive")))


def _biased_table() -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Scores of 4 inputs over 3 labels where a prior of +2 on label 0 outweighs the evidence, the content-free
    prompts' scores that show that prior, and the labels the evidence alone points to."""
    prior = np.log(np.array([0.8, 0.1, 0.1]))
    evidence = np.array([[1.0, 0, 0], [0, 1.2, 0], [0, 0, 1.5], [0, 1.0, 0.2]])
    reference = np.stack([prior + noise for noise in ([0.0, 0.05, 0], [0, 0, 0.05], [0.02, 0, 0])])
    return prior + evidence, reference, [0, 1, 2, 1]


def test_contextual_calibration_undoes_a_designed_label_bias():
    scores, reference, truth = _biased_table()
    assert list(scores.argmax(1)) == [0, 0, 0, 0]  # the bias wins everywhere
    calibrated = CALIBRATIONS["contextual"].adjust(scores, reference)
    assert list(calibrated.argmax(1)) == truth
    assert calibrated.shape == scores.shape


def test_pmi_subtracts_the_premise_scores():
    scores, reference, truth = _biased_table()
    calibrated = CALIBRATIONS["pmi"].adjust(scores, reference[:1])
    np.testing.assert_allclose(calibrated, scores - reference[0])
    assert list(calibrated.argmax(1)) == truth


def test_none_leaves_scores_alone_and_scores_nothing_more():
    scores, _, _ = _biased_table()
    builder = PromptBuilder(CARD, Strategy(decoding="ppl"), [], 0)
    assert CALIBRATIONS["none"].reference_prompts(builder) == []
    assert CALIBRATIONS["none"].adjust(scores, np.zeros((0, 3))) is scores


def test_reference_prompts_are_the_run_prompt_with_content_free_inputs_and_the_premise():
    builder = PromptBuilder(CARD, Strategy(decoding="ppl", calibration="contextual"), [], 0)
    prompts = CALIBRATIONS["contextual"].reference_prompts(builder)
    assert [p[-1]["content"].rsplit("Text: ", 1)[1] for p in prompts] == list(CONTENT_FREE_INPUTS)
    assert all(builder.instructions in p[0]["content"] for p in prompts)
    assert CALIBRATIONS["pmi"].reference_prompts(builder) == [[{"role": "user", "content": "Answer:"}]]


def test_length_norms_and_unknown_values():
    total, lengths = np.array([[-4.0, -3.0]]), np.array([4, 1])
    assert PPL_NORMS["mean"].normalise(total, lengths).tolist() == [[-1.0, -3.0]]
    assert PPL_NORMS["sum"].normalise(total, lengths) is total
    from runners.inference import CandidateScores

    with pytest.raises(ValueError, match="unknown ppl_norm 'max'; registered: mean, sum"):
        CandidateScores(total, lengths).normalised("max")
    with pytest.raises(ValueError, match="unknown labels value 'letters'"):
        PromptBuilder(CARD, Strategy(labels="letters"), [], 0)


def test_calibration_applies_only_under_ppl_and_names_runs():
    assert DIMENSIONS["calibration"].default == "none"
    assert {v.name for v in DIMENSIONS["calibration"].values} == set(CALIBRATIONS)
    assert Strategy(decoding="ppl", calibration="contextual").tag() == "zero+ppl+cc"
    from strategies.registry import normalise

    assert normalise(Strategy(calibration="pmi")).calibration == "none"


def test_a_new_verbalizer_is_one_registration(monkeypatch):
    letters = Verbalizer("letters A, B, C...", lambda cats: [chr(65 + i) for i in range(len(cats))],
                         {"en": "letter"}, listed_with_answer=True, tag="letters")
    monkeypatch.setitem(VERBALIZERS, "letters", letters)
    builder = PromptBuilder(CARD, Strategy(labels="letters"), [], 0)
    assert "A. negative\nB. neutral\nC. positive" in builder.instructions
    assert "Reply with exactly one category letter" in builder.instructions
    assert builder.parse("B") == "1" and builder.candidates() == ["A", "B", "C"]
    chinese = TaskCard("zh", "判断情感。", "文本", CARD.categories)
    with pytest.raises(ValueError, match="no wording for language 'zh'"):
        PromptBuilder(chinese, Strategy(labels="letters"), [], 0)


def test_the_content_free_pass_runs_once_per_run(tiny_lm, monkeypatch):
    import runners.predict
    from runners.batching import Batching
    from runners.predict import DecodeSettings, Predictor

    scored: list[list[str]] = []
    real = runners.predict.score_candidates

    def counting(lm, prompts, *args, **kwargs):
        scored.append(list(prompts))
        return real(lm, prompts, *args, **kwargs)

    monkeypatch.setattr(runners.predict, "score_candidates", counting)
    examples = [Example(f"t{i}", text, "0") for i, text in enumerate(["awful", "fine", "great", "ok", "bad", "yes"])]
    builder = PromptBuilder(CARD, Strategy(decoding="ppl", calibration="contextual"), [], 0)
    predict = Predictor(tiny_lm, builder, DecodeSettings(Batching(4), 8, 0))
    predictions = predict(examples[:3]) + predict(examples[3:])  # two chunks of one run, as evaluation asks
    assert sorted(len(p) for p in scored) == [3, 3, 3] and sum("N/A" in p for batch in scored for p in batch) == 1
    for p in predictions:
        raw, calibrated = json.loads(p.candidate_scores), json.loads(p.calibrated_scores)
        assert raw.keys() == calibrated.keys() == {"negative", "neutral", "positive"} and raw != calibrated
        assert CARD.categories[int(p.label)].name == max(calibrated, key=calibrated.get)
