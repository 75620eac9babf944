"""The KV-cached candidate scorer must equal a direct forward pass per (prompt, candidate)."""

import numpy as np
import pytest
import torch

import runners.inference as inference
from runners.inference import candidate_ids, generate, score_candidates

PROMPTS = ["<|im_start|>user\ni feel sad today<|im_end|>\n<|im_start|>assistant\n",
           "<|im_start|>user\nsuch a long and winding message about nothing in particular, really<|im_end|>\n"
           "<|im_start|>assistant\n",
           "hello"]
CANDIDATES = ["joy", "sadness", "a much longer candidate answer", "1"]


def direct_logprob(lm, prompt: str, cand: list[int]) -> float:
    ids = lm.tokenizer(prompt, add_special_tokens=False).input_ids
    full = torch.tensor([ids + cand])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(full).logits[0].float(), dim=-1)
    return sum(logp[len(ids) - 1 + j, t].item() for j, t in enumerate(cand))


@pytest.mark.parametrize("rows", [128, 3])  # 3 forces candidate chunks and cache copies
def test_cached_scores_equal_direct_computation(tiny_lm, monkeypatch, rows):
    monkeypatch.setattr(inference, "MAX_SCORING_ROWS", rows)
    scores = score_candidates(tiny_lm, PROMPTS, CANDIDATES, batch_size=2)
    cands = candidate_ids(tiny_lm, CANDIDATES)
    expected = np.array([[direct_logprob(tiny_lm, p, c) for c in cands] for p in PROMPTS])
    np.testing.assert_allclose(scores.logprob_sum, expected, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(scores.n_tokens, [len(c) for c in cands])
    np.testing.assert_allclose(scores.normalised("mean"), expected / scores.n_tokens[None, :], atol=1e-4, rtol=0)


def test_batching_does_not_change_generation(tiny_lm):
    one = generate(tiny_lm, PROMPTS, max_new_tokens=5, batch_size=1)
    batched = generate(tiny_lm, PROMPTS, max_new_tokens=5, batch_size=3)
    assert one == batched and all(isinstance(t, str) for t in one)


def test_ppl_after_reasoning_scores_each_answer_after_the_generated_reasoning(tiny_lm, monkeypatch):
    import runners.predict as predict_module
    from runners.predict import DecodeSettings, predict
    from strategies.example import Category, Example, TaskCard
    from strategies.prompts import PromptBuilder
    from strategies.registry import Strategy

    card = TaskCard("en", "Classify.", "Text", (Category("0", "sadness"), Category("1", "joy")))
    builder = PromptBuilder(card, Strategy(decoding="ppl", reasoning="on"), [], 0)
    examples = [Example("a", "so sad", "0"), Example("b", "so happy", "1")]
    generated = ["It sounds sad.\nAnswer: joy", "Happy words"]
    seen: list[list[str]] = []
    real_score = predict_module.score_candidates
    monkeypatch.setattr(predict_module, "generate", lambda lm, prompts, *a, **k: generated)
    monkeypatch.setattr(predict_module, "score_candidates",
                        lambda lm, prompts, *a, **k: seen.append(list(prompts)) or real_score(lm, prompts, *a, **k))
    predictions = predict(tiny_lm, builder, examples, DecodeSettings(2, 8, 0))
    prompts = [inference.prompt_text(tiny_lm, builder.messages(e)) for e in examples]
    assert seen == [[prompts[0] + "It sounds sad.\n", prompts[1] + "Happy words\n"]]
    assert builder.candidates() == ["Answer: sadness", "Answer: joy"]
    assert [p.raw_output for p in predictions] == generated
    assert all(p.label in ("0", "1") and p.candidate_scores for p in predictions)
