"""Registered values carry their behaviour: calibration and length normalisation of candidate scores, and label
verbalizers; each is one registration, and an unknown value is an error, never a silent default."""

from __future__ import annotations

import json

import numpy as np
import pytest

from strategies.example import Category, Example, TaskCard
from strategies.prompts import PromptBuilder
from strategies.registry import DIMENSIONS, Strategy
from strategies.scoring import CALIBRATIONS, CONTENT_FREE_INPUTS, DOMAIN_DRAWS, PPL_NORMS, domain_texts
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


def test_batch_calibration_centres_each_label_on_its_mean_over_the_batch():
    """Four inputs that all lean to label 0 (p = .9, .8, .6, .7): subtracting each label's mean log-probability
    leaves the decision to each row's log-odds against the batch's mean log-odds, (2.197 + 1.386 + 0.405 + 0.847) /
    4 = 1.209: the two rows above it stay with label 0, the two below go to label 1."""
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    assert list(p.argmax(1)) == [0, 0, 0, 0]
    calibrated = CALIBRATIONS["batch"].adjust(np.log(p), np.log(p))
    np.testing.assert_allclose(calibrated, np.log(p) - np.log(p).mean(axis=0))
    np.testing.assert_allclose(np.log(p[:, 0] / p[:, 1]).mean(), 1.2091, atol=1e-4)
    assert list(calibrated.argmax(1)) == [0, 0, 1, 1]
    scaled = CALIBRATIONS["batch"].adjust(np.log(p) + 5.0, np.log(p) + 5.0)  # scores, not yet probabilities
    np.testing.assert_allclose(scaled, calibrated)


def test_batch_calibration_means_over_an_uneven_class_mix():
    """Three clear label-0 inputs, one clear label-1 input and one 75% label-0 input: the mean is taken over the
    rows as they come (no class weighting), so the majority of label 0 raises its mean log-probability to
    (3 ln .9 + ln .2 + ln .75) / 5 and the 75% row falls below it: Zhou et al.'s estimate assumes balanced labels."""
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.75, 0.25]])
    mean = np.array([(3 * np.log(0.9) + np.log(0.2) + np.log(0.75)) / 5,
                     (3 * np.log(0.1) + np.log(0.8) + np.log(0.25)) / 5])
    calibrated = CALIBRATIONS["batch"].adjust(np.log(p), np.log(p))
    np.testing.assert_allclose(calibrated, np.log(p) - mean)
    assert list(calibrated.argmax(1)) == [0, 0, 0, 1, 1]
    first_three = CALIBRATIONS["batch"].adjust(np.log(p[3:]), np.log(p))  # any rows against the whole batch's mean
    np.testing.assert_allclose(first_three, calibrated[3:])


def test_domain_calibration_divides_by_the_random_in_domain_texts_label_distribution():
    scores, reference, truth = _biased_table()
    calibrated = CALIBRATIONS["domain"].adjust(scores, reference)
    np.testing.assert_allclose(calibrated, CALIBRATIONS["contextual"].adjust(scores, reference))  # Fei et al.'s rule
    assert list(calibrated.argmax(1)) == truth


POOL = [Example("p0", "the cat sat on the mat", "0"), Example("p1", "a dog ran", "1")]


def test_domain_texts_are_pool_words_seeded_and_the_same_in_every_run():
    texts = domain_texts(POOL, seed=0)
    pool_words = {w for e in POOL for w in e.text.split()}
    assert len(texts) == DOMAIN_DRAWS and all(set(t.split()) <= pool_words for t in texts)
    assert {len(t.split()) for t in texts} == {round(9 / 2)}  # the pool's mean length in words
    assert texts[:3] == ["the the a cat", "cat on ran cat", "ran on mat sat"]  # pinned: identical across runs
    assert domain_texts(POOL, seed=0) == texts and domain_texts(POOL, seed=1) != texts
    chinese = domain_texts([Example("z0", "体育新闻", "0"), Example("z1", "财经", "1")], seed=0, draws=2)
    assert chinese == ["体体财", "育体新"]  # characters side by side, as Chinese is written
    with pytest.raises(ValueError, match="demonstration pool, which has no text"):
        domain_texts([Example("e", "  ", "0")], seed=0)


def test_domain_reference_prompts_are_the_run_prompt_with_pool_words_for_the_input():
    builder = PromptBuilder(CARD, Strategy(decoding="ppl", calibration="domain"), POOL, 3)
    prompts = CALIBRATIONS["domain"].reference_prompts(builder)
    assert [p[-1]["content"].rsplit("Text: ", 1)[1] for p in prompts] == domain_texts(POOL, seed=3)
    assert all(builder.instructions in p[0]["content"] for p in prompts)
    assert CALIBRATIONS["batch"].reference_prompts(builder) == []  # batch scores nothing more


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
    assert [Strategy(decoding="ppl", calibration=c).tag() for c in ("batch", "domain")] == ["zero+ppl+bc",
                                                                                             "zero+ppl+dc"]
    from strategies.registry import normalise

    assert normalise(Strategy(calibration="pmi")).calibration == "none"
    assert normalise(Strategy(calibration="batch")).calibration == "none"
    # the seed changes a domain-calibrated run (its random texts), not a batch-calibrated one
    assert [Strategy(decoding="ppl", calibration=c).seeded for c in ("none", "batch", "domain")] == [False, False, True]


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


def _predictor(lm, calibration: str):
    from runners.batching import Batching
    from runners.predict import DecodeSettings, Predictor

    builder = PromptBuilder(CARD, Strategy(decoding="ppl", calibration=calibration), POOL, 0)
    return Predictor(lm, builder, DecodeSettings(Batching(4), 8, 0))


EXAMPLES = [Example(f"t{i}", text, "0") for i, text in enumerate(["awful", "fine", "great", "ok", "bad", "yes", "no"])]


def test_batch_calibration_in_rounds_decides_every_prediction_again_against_the_whole_run(tiny_lm, monkeypatch):
    import runners.predict

    scored: list[list[str]] = []
    real = runners.predict.score_candidates
    monkeypatch.setattr(runners.predict, "score_candidates",
                        lambda lm, prompts, *a, **k: scored.append(list(prompts)) or real(lm, prompts, *a, **k))
    predict = _predictor(tiny_lm, "batch")
    first = predict(EXAMPLES[:3])  # decided against the mean over these three
    raw_first = np.array([list(json.loads(p.candidate_scores).values()) for p in first])
    np.testing.assert_allclose([list(json.loads(p.calibrated_scores).values()) for p in first],
                               CALIBRATIONS["batch"].adjust(raw_first, raw_first), atol=1e-4)
    predict(EXAMPLES[3:])
    whole = _predictor(tiny_lm, "batch")(EXAMPLES)  # one call on every example
    assert predict.so_far() == whole  # after the last round: the same predictions, scores and all
    assert [len(p) for p in scored] == [3, 4, 7]  # the examples only: no reference prompt is scored


def test_other_calibrations_keep_their_predictions_as_made(tiny_lm):
    predict = _predictor(tiny_lm, "domain")
    made = predict(EXAMPLES[:3]) + predict(EXAMPLES[3:])
    assert predict.so_far() == made == _predictor(tiny_lm, "domain")(EXAMPLES)
    assert len(predict.reference) == DOMAIN_DRAWS
