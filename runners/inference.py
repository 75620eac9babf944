"""Batched greedy generation and perplexity scoring of candidate completions.

The scorer encodes each prompt once (one batched pass, keeping its KV cache) and scores all candidates of that
prompt in one more batched pass over copies of the cache, so the cost is prompts + candidates, not
prompts x candidates. Log-likelihoods equal a direct per-candidate forward pass (tests check to 1e-4).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from runners.models import LoadedModel
from strategies.prompts import Message, render_plain

OnProgress = Callable[[int], None]
MAX_SCORING_ROWS = 128  # prompt x candidate rows per scoring pass: bounds the memory of the repeated KV cache


def prompt_text(lm: LoadedModel, messages: Sequence[Message]) -> str:
    """The prompt as the model sees it: its chat template when it has one, plain text otherwise."""
    if getattr(lm.tokenizer, "chat_template", None):
        return lm.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return render_plain(messages)


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _by_length(lm: LoadedModel, prompts: Sequence[str]) -> list[int]:
    """Indices of prompts longest first, so batches hold prompts of similar length (little padding)."""
    lengths = [len(ids) for ids in lm.tokenizer(list(prompts), add_special_tokens=False).input_ids]
    return sorted(range(len(prompts)), key=lambda i: -lengths[i])


def _encode(lm: LoadedModel, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    enc = lm.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(lm.device) for k, v in enc.items()}


@torch.inference_mode()
def generate(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int, batch_size: int,
             on_progress: OnProgress = lambda n: None) -> list[str]:
    """Greedy completions of `prompts` (stopping at end of turn or after `max_new_tokens`), in input order."""
    order = _by_length(lm, prompts)
    outputs: list[str] = [""] * len(prompts)
    tok = lm.tokenizer
    for batch in _batches(len(order), batch_size):
        idx = [order[i] for i in batch]
        enc = _encode(lm, [prompts[i] for i in idx])
        out = lm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                                top_k=None, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        for i, text in zip(idx, texts):
            outputs[i] = text
        on_progress(len(idx))
    return outputs


@dataclass(frozen=True)
class CandidateScores:
    """Log-likelihood of every candidate after every prompt ([prompts, candidates]) and candidate lengths."""

    logprob_sum: np.ndarray
    n_tokens: np.ndarray

    def normalised(self, norm: str) -> np.ndarray:
        """`sum`: total log-likelihood; `mean`: per token (the log of inverse perplexity)."""
        return self.logprob_sum if norm == "sum" else self.logprob_sum / self.n_tokens[None, :]


def candidate_ids(lm: LoadedModel, candidates: Sequence[str]) -> list[list[int]]:
    """Token ids of each candidate completion, ending with the end-of-turn token (so "joy" != "joyful")."""
    ids = lm.tokenizer(list(candidates), add_special_tokens=False).input_ids
    return [list(c) + [lm.tokenizer.eos_token_id] for c in ids]


@torch.inference_mode()
def score_candidates(lm: LoadedModel, prompts: Sequence[str], candidates: Sequence[str], batch_size: int,
                     on_progress: OnProgress = lambda n: None) -> CandidateScores:
    """Log-likelihood of each candidate completion after each prompt; each prompt is encoded once."""
    cand = candidate_ids(lm, candidates)
    width = max(map(len, cand))
    pad = lm.tokenizer.pad_token_id
    cand_ids = torch.tensor([c + [pad] * (width - len(c)) for c in cand], device=lm.device)
    cand_mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in cand], device=lm.device)
    chunk = max(1, MAX_SCORING_ROWS // batch_size)
    result = np.zeros((len(prompts), len(cand)))
    order = _by_length(lm, prompts)
    for batch in _batches(len(order), batch_size):
        idx = [order[i] for i in batch]
        enc = _encode(lm, [prompts[i] for i in idx])
        mask = enc["attention_mask"]
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = lm.model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=positions, use_cache=True,
                       logits_to_keep=1)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]: predicts each candidate's token 0
        for part in _batches(len(cand), chunk):
            k = len(part)
            cache = copy.deepcopy(out.past_key_values)
            cache.batch_repeat_interleave(k)
            ids, cmask = cand_ids[part.start:part.stop].repeat(len(idx), 1), cand_mask[part.start:part.stop]
            full_mask = torch.cat([mask.repeat_interleave(k, 0), cmask.repeat(len(idx), 1)], dim=1)
            pos = mask.sum(-1).repeat_interleave(k)[:, None] + torch.arange(width, device=lm.device)[None, :]
            logits = lm.model(input_ids=ids, attention_mask=full_mask, position_ids=pos, past_key_values=cache).logits
            rest = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            head = first.repeat_interleave(k, 0).gather(-1, ids[:, :1])
            token_lp = torch.cat([head, rest], dim=1) * cmask.repeat(len(idx), 1)
            result[np.ix_(idx, list(part))] = token_lp.sum(-1).view(len(idx), k).double().cpu().numpy()
        on_progress(len(idx))
    return CandidateScores(result, np.array([len(c) for c in cand], dtype=float))
