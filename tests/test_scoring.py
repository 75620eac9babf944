"""The fast paths must be exact: candidate scores from the shared prefix and the one-pass candidate block equal a
direct forward pass per (prompt, candidate); greedy generation from the shared prefix equals `model.generate` on
each prompt alone; batching by tokens changes nothing."""

import dataclasses

import numpy as np
import pytest
import torch

import runners.inference as inference
from runners.batching import Batching
from runners.inference import candidate_ids, generate, score_candidates, shared_prefix, token_batches

HEADER = "<|im_start|>user\nClassify the text into one of: joy, sadness, anger.\n"
PROMPTS = [HEADER + "i feel sad today<|im_end|>\n<|im_start|>assistant\n",
           HEADER + "such a long and winding message about nothing in particular, really<|im_end|>\n"
           "<|im_start|>assistant\n",
           HEADER + "ok<|im_end|>\n<|im_start|>assistant\n"]
UNRELATED = ["hello", "<|im_start|>user\nbye<|im_end|>\n"]  # no common prefix at all
CANDIDATES = ["joy", "sadness", "a much longer candidate answer", "1"]
BATCHINGS = [Batching(128), Batching(2), Batching(8, tokens=64)]  # one pass; row pairs; one row per pass


def direct_logprob(lm, prompt: str, cand: list[int]) -> float:
    ids = lm.tokenizer(prompt, add_special_tokens=False).input_ids
    full = torch.tensor([ids + cand])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(full).logits[0].float(), dim=-1)
    return sum(logp[len(ids) - 1 + j, t].item() for j, t in enumerate(cand))


@pytest.mark.parametrize("batching", BATCHINGS)
@pytest.mark.parametrize("prompts", [PROMPTS, PROMPTS + UNRELATED])
def test_scores_equal_a_direct_forward_pass(tiny_lm, prompts, batching):
    scores = score_candidates(tiny_lm, prompts, CANDIDATES, batching)
    cands = candidate_ids(tiny_lm, CANDIDATES)
    expected = np.array([[direct_logprob(tiny_lm, p, c) for c in cands] for p in prompts])
    np.testing.assert_allclose(scores.logprob_sum, expected, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(scores.n_tokens, [len(c) for c in cands])
    np.testing.assert_allclose(scores.normalised("mean"), expected / scores.n_tokens[None, :], atol=1e-4, rtol=0)


def test_the_shared_prefix_is_read_once_per_call(tiny_lm, monkeypatch):
    lengths = []
    real = inference.PrefixCache.__init__

    def counted(self, lm, prefix):
        lengths.append(len(prefix))
        real(self, lm, prefix)

    monkeypatch.setattr(inference.PrefixCache, "__init__", counted)
    score_candidates(tiny_lm, PROMPTS, CANDIDATES, Batching(1))  # three passes, one prefix
    header = len(tiny_lm.tokenizer(HEADER, add_special_tokens=False).input_ids)
    assert len(lengths) == 1 and lengths[0] >= header


def generate_alone(lm, prompt: str, max_new_tokens: int) -> list[int]:
    """`model.generate` greedy on `prompt` alone, stopping at `lm.end_id`: the new tokens."""
    tok = lm.tokenizer
    ids = torch.tensor([tok(prompt, add_special_tokens=False).input_ids])
    out = lm.model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                            top_k=None, pad_token_id=tok.pad_token_id, eos_token_id=lm.end_id)
    return out[0, ids.shape[1]:].tolist()


def test_greedy_generation_equals_model_generate_on_each_prompt_alone(tiny_lm):
    expected = [tiny_lm.tokenizer.decode(generate_alone(tiny_lm, p, 6), skip_special_tokens=True)
                for p in PROMPTS + UNRELATED]
    for batching in BATCHINGS:
        assert generate(tiny_lm, PROMPTS + UNRELATED, 6, batching) == expected


def test_a_row_that_has_ended_leaves_the_batch_and_the_others_write_on_unchanged(tiny_lm):
    """Make the first prompt's first token the end of the turn (the tokenizer is left untouched): the rows that
    write it leave the batch after that step, the others go on from the cache rows kept for them, each equal to
    `model.generate` on its prompt alone."""
    prompts = PROMPTS + UNRELATED
    end = generate_alone(tiny_lm, prompts[0], 1)[0]
    ending = dataclasses.replace(tiny_lm, end_id=end)
    alone = [generate_alone(ending, p, 6) for p in prompts]
    assert any(end not in row for row in alone)  # some row writes on
    rows: list[int] = []
    hook = tiny_lm.model.register_forward_pre_hook(lambda module, args, kwargs: rows.append(len(kwargs["input_ids"])),
                                                   with_kwargs=True)
    try:
        written = generate(ending, prompts, 6, Batching(len(prompts)))
    finally:
        hook.remove()
    assert written == [tiny_lm.tokenizer.decode(row, skip_special_tokens=True) for row in alone]
    assert rows[-1] == sum(end not in row for row in alone) < rows[0]  # the last passes read the rows writing only


def test_generation_stops_when_every_row_has_ended(tiny_lm):
    """Make every row's first token the end of the turn: no decoding step follows the prompt's pass. The model and
    tokenizer are left untouched (a copy of the loaded model names another end token; a forward hook counts)."""
    rows = [PROMPTS[0], PROMPTS[0]]
    first = tiny_lm.tokenizer(generate(tiny_lm, rows[:1], 1, Batching(8)), add_special_tokens=False).input_ids[0][0]
    ending_at_first = dataclasses.replace(tiny_lm, end_id=first)
    calls = []
    hook = tiny_lm.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        generate(ending_at_first, rows, 50, Batching(8))
    finally:
        hook.remove()
    assert len(calls) == 2  # the shared prefix, then the prompts' own tokens: 50 new tokens allowed, none needed


def test_a_generating_batch_reports_progress_as_it_writes_and_whole_prompts_in_the_end(tiny_lm):
    increments: list[float] = []
    generate(tiny_lm, PROMPTS, 6, Batching(len(PROMPTS)), increments.append)
    assert len(increments) > 1  # one batch, seen while it writes, not only once it is done
    assert sum(increments) == pytest.approx(len(PROMPTS)) and all(n >= 0 for n in increments)


def test_a_prefix_shared_by_the_chunks_of_a_run_is_computed_once(tiny_lm):
    from runners.inference import PrefixCaches

    calls = []
    hook = tiny_lm.model.register_forward_pre_hook(lambda module, args: calls.append(args))
    prefixes = PrefixCaches()
    try:
        first = score_candidates(tiny_lm, PROMPTS, ["a", "b"], Batching(8), prefixes=prefixes)
        passes = len(calls)
        again = score_candidates(tiny_lm, PROMPTS, ["a", "b"], Batching(8), prefixes=prefixes)
    finally:
        hook.remove()
    assert len(calls) - passes == passes - 1  # the same passes but the prefix's
    assert np.array_equal(first.logprob_sum, again.logprob_sum)


def test_shared_prefix_and_token_batches():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 3, 9], [1, 2, 5]]) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # a prompt keeps one token of its own
    assert shared_prefix([[7, 1], [8, 1]]) == 0
    batches = token_batches([5, 50, 10, 20, 40], 10, Batching(rows=3, tokens=130), torch.device("cpu"))
    assert batches == [[1, 4], [3, 2, 0]]  # longest first; 2 x 60 <= 130, 3 x 30 <= 130
    assert all(len(b) * (max([5, 50, 10, 20, 40][i] for i in b) + 10) <= 130 for b in batches)
    assert token_batches([500], 10, Batching(rows=3, tokens=100), torch.device("cpu")) == [[0]]  # a long row alone
    # one long row is not allowed to pad three short ones to its width (4 x 110 tokens): it goes alone
    assert token_batches([100, 10, 10, 10], 10, Batching(rows=4, tokens=4096), torch.device("cpu")) == [[0], [1, 2, 3]]


def test_ppl_after_reasoning_scores_each_answer_after_the_generated_reasoning(tiny_lm, monkeypatch):
    import runners.predict as predict_module
    from runners.predict import DecodeSettings, Predictor
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
    predictions = Predictor(tiny_lm, builder, DecodeSettings(Batching(2), 8, 0))(examples)
    prompts = [inference.prompt_text(tiny_lm, builder.messages(e)) for e in examples]
    assert seen == [[prompts[0] + "It sounds sad.\n", prompts[1] + "Happy words\n"]]
    assert builder.candidates() == ["Answer: sadness", "Answer: joy"]
    assert [p.raw_output for p in predictions] == generated
    assert all(p.label in ("0", "1") and p.candidate_scores for p in predictions)


def test_a_prompt_past_the_context_is_refused_not_read(tiny_lm):
    long_prompt = "word " * 5000  # past tiny-random's 4,096 tokens
    with pytest.raises(ValueError, match=r"prompt 2 of 2 is [\d,]+ tokens \(\+\d+ for its answer\), over the "
                                         r"model's 4,096-token context"):
        score_candidates(tiny_lm, ["short", long_prompt], ["a", "b"], Batching(4))
    with pytest.raises(ValueError, match="over the model's 4,096-token context"):
        generate(tiny_lm, [long_prompt], 4, Batching(4))
