"""Reading prompts fast: greedy generation and perplexity scoring of candidate completions, both starting from the
prompt prefix every prompt of a run shares, computed once.

- **Shared prefix.** The prompts of a run are tokenised once; the longest token prefix common to all of them (the
  chat header, the instructions, the category list, fixed demonstrations) goes through the model once, and every
  batch starts from its KV cache (expanded across the batch as a view: no copy until new tokens are appended).
  Only each prompt's own tokens, its *suffix*, are read per example.
- **Batches by tokens.** Rows are sorted by length and split into forward passes within a token budget (and at most
  `batch_size` rows) with the least padding, so short prompts go in large batches and long ones in small.
- **Scoring in one pass.** A row is [suffix, candidate 1, ..., candidate K], with an attention mask under which
  each candidate sees the prefix, the suffix and its own earlier tokens only, and positions that restart after the
  suffix for every candidate: the log-likelihood of every candidate after the prompt comes out of one forward
  pass, the prompt read once and each candidate token once (but its last, which predicts nothing). Equal to a
  direct full-prompt forward pass per candidate (tests check to 1e-4, padding and batch splits included).
- **Generation stops when it is done.** A greedy loop on the cache; a row that has ended its turn leaves the batch
  and the cache, and a batch ends as soon as every row has. Equal, token for token, to `model.generate` greedy on
  each prompt alone (tested).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from runners.batching import Batching
from runners.models import LoadedModel
from runners.phases import Phases
from strategies.lookup import entry
from strategies.prompts import Message, render_plain
from strategies.scoring import PPL_NORMS

OnProgress = Callable[[float], None]  # so many more prompts done: an increment (a fraction while a batch generates)
PASS_COST = 64  # a forward pass's fixed cost (reading every weight once), in tokens' worth of work
LOGITS_BUDGET = 32 * 2**20  # bytes of kept logits (positions x vocabulary) per scoring pass


def default_tokens_per_batch(device: torch.device) -> int:
    """Tokens per forward pass: enough rows for efficient matrix products on a CPU, many more on a GPU."""
    return 32768 if device.type == "cuda" else 8192


def prompt_text(lm: LoadedModel, messages: Sequence[Message]) -> str:
    """The prompt as the model sees it: its chat template when it has one, plain text otherwise."""
    if getattr(lm.tokenizer, "chat_template", None):
        return lm.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return render_plain(messages)


def shared_prefix(ids: Sequence[Sequence[int]]) -> int:
    """The length of the longest token prefix all `ids` share, leaving every prompt at least one token of its own
    (the scorer and the generator read the next token off a prompt's last position)."""
    if not ids:
        return 0
    limit = min(len(x) for x in ids) - 1
    first = ids[0]
    n = 0
    while n < limit and all(x[n] == first[n] for x in ids):
        n += 1
    return n


class PrefixCache:
    """The KV cache of a token prefix, computed once; `for_rows(n)` gives a cache for a batch of n rows that views
    it (no copy: appending the rows' tokens makes their own tensors)."""

    def __init__(self, lm: LoadedModel, prefix: Sequence[int]) -> None:
        self.lm, self.length = lm, len(prefix)
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        if prefix:
            out = lm.model(input_ids=torch.tensor([list(prefix)], device=lm.device), use_cache=True,
                           logits_to_keep=1)
            self.layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]

    def for_rows(self, n: int):
        from transformers import DynamicCache

        if not self.layers:
            return DynamicCache(config=self.lm.model.config)
        return DynamicCache([(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in self.layers],
                            config=self.lm.model.config)


class PrefixCaches:
    """The last prefix cache a run computed, by its tokens: a run asked for in rounds (a search's pruner watches
    them) reads the prefix its earlier rounds computed instead of computing it again."""

    def __init__(self) -> None:
        self._last: tuple[tuple[int, ...], PrefixCache] | None = None

    def of(self, lm: LoadedModel, prefix: Sequence[int]) -> PrefixCache:
        key = tuple(prefix)
        if self._last is None or self._last[0] != key:
            self._last = key, PrefixCache(lm, prefix)
        return self._last[1]


def _encode(lm: LoadedModel, texts: Sequence[str], extra: int) -> list[list[int]]:
    """Token ids of `texts`, each of which must leave `extra` tokens (its answer) within the model's context: a
    longer one is refused with a line here, not read into memory it cannot fit."""
    ids = [list(x) for x in lm.tokenizer(list(texts), add_special_tokens=False).input_ids]
    context = getattr(lm.model.config, "max_position_embeddings", None)
    for i, row in enumerate(ids):
        if context and len(row) + extra > context:
            raise ValueError(f"prompt {i + 1} of {len(ids)} is {len(row):,} tokens (+{extra} for its answer), over "
                             f"the model's {context:,}-token context; shorten or remove that row")
    return ids


def token_batches(lengths: Sequence[int], extra: int, batching: Batching, device: torch.device,
                  row_limit: int | None = None, steps: int = 1) -> list[list[int]]:
    """Row indices grouped into forward passes, longest first. A pass holds at most `batching.rows` rows (and
    `row_limit`), and rows x (its longest row + `extra`) tokens within the token budget (a row too long for it goes
    alone). Among the splits of the length-sorted rows that obey this, the one with the least work: padded tokens
    plus `PASS_COST` per forward pass, of which a batch makes `steps` (one per generated token when generating)
    (dynamic programming; a greedy fill pads short rows to a long one's width)."""
    budget = batching.tokens or default_tokens_per_batch(device)
    cap = min(batching.rows, row_limit or batching.rows)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    least = [0.0] + [float("inf")] * len(order)  # least[j]: the least work for order[:j]
    start = [0] * (len(order) + 1)  # start[j]: where the last pass of that split begins
    for j in range(1, len(order) + 1):
        for i in range(j - 1, max(-1, j - cap - 1), -1):  # the last pass is order[i:j]; its longest is order[i]
            rows, width = j - i, lengths[order[i]] + extra
            if rows > 1 and rows * width > budget:
                break  # an earlier start only adds rows and widens
            work = least[i] + rows * width + PASS_COST * steps
            if work < least[j]:
                least[j], start[j] = work, i
    batches, j = [], len(order)
    while j > 0:
        batches.append(order[start[j]:j])
        j = start[j]
    return batches[::-1]


def _left_padded(rows: Sequence[Sequence[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows left-padded to one width: the ids and a mask of the real tokens."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], device=device)
    real = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    return ids, real


def _suffix_positions(real: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """Positions of left-padded suffix tokens after the prefix (a padding position takes the first real one's)."""
    return (n_prefix + real.cumsum(-1) - 1).clamp(min=n_prefix)


@torch.inference_mode()
def generate(lm: LoadedModel, prompts: Sequence[str], max_new_tokens: int, batching: Batching,
             on_progress: OnProgress = lambda n: None, phases: Phases | None = None,
             prefixes: PrefixCaches | None = None) -> list[str]:
    """Greedy completions of `prompts` (stopping at the end of the turn or after `max_new_tokens`), in input order;
    `phases`: where the time goes (tokenise, prefix, generate); `prefixes`: the run's prefix caches."""
    phases, prefixes = phases or Phases(), prefixes or PrefixCaches()
    with phases("tokenise"):
        ids = _encode(lm, prompts, max_new_tokens)
    with phases("prefix"):
        n_prefix = shared_prefix(ids)
        prefix = prefixes.of(lm, ids[0][:n_prefix] if ids else [])
    with phases("generate"):
        return _generate_after(lm, prefix, [x[n_prefix:] for x in ids], max_new_tokens, batching, on_progress)


def _generate_after(lm: LoadedModel, prefix: PrefixCache, suffixes: list[list[int]], max_new_tokens: int,
                    batching: Batching, on_progress: OnProgress) -> list[str]:
    """`generate`'s loop: the greedy completions of the prompts `prefix` + each of `suffixes`."""
    outputs = [""] * len(suffixes)
    for batch in token_batches([len(s) for s in suffixes], max_new_tokens, batching, lm.device,
                               steps=1 + max_new_tokens):
        written = _greedy(lm, prefix, [suffixes[i] for i in batch], max_new_tokens, on_progress)
        for i, row in zip(batch, written):
            outputs[i] = lm.tokenizer.decode(row, skip_special_tokens=True)
    return outputs


def _greedy(lm: LoadedModel, prefix: PrefixCache, rows: list[list[int]], max_new_tokens: int,
            on_progress: OnProgress) -> list[list[int]]:
    """The tokens each of one batch's `rows` writes greedily after `prefix` (up to and including its end of turn).
    A row that has ended leaves the batch and the cache at once, so the steps after it are paid by the rows still
    writing only (a reasoning batch writes for the length of its longest row, most rows far shorter)."""
    new_ids, real = _left_padded(rows, lm.tokenizer.pad_token_id, lm.device)
    positions = _suffix_positions(real, prefix.length)
    mask = torch.cat([torch.ones(len(rows), prefix.length, dtype=real.dtype, device=lm.device), real], dim=1)
    out = lm.model(input_ids=new_ids, attention_mask=mask, position_ids=positions,
                   past_key_values=prefix.for_rows(len(rows)), use_cache=True, logits_to_keep=1)
    cache, last = out.past_key_values, positions[:, -1]
    written = torch.full((len(rows), max_new_tokens), lm.end_id, device=lm.device)  # an ended row's rest: its end
    live = torch.arange(len(rows), device=lm.device)  # the rows still writing, by their index in `rows`
    for step in range(max_new_tokens):
        on_progress(len(rows) / max_new_tokens)  # a batch that writes for minutes still shows progress
        chosen = out.logits[:, -1].argmax(-1)
        written[live, step] = chosen
        going = chosen != lm.end_id
        n_going = int(going.sum())  # the one read back to the host a step
        if step + 1 == max_new_tokens or n_going == 0:
            break
        if n_going < len(live):
            keep = going.nonzero().squeeze(1)
            live, chosen, last, mask = live[keep], chosen[keep], last[keep], mask[keep]
            cache.batch_select_indices(keep)
        last = last + 1
        mask = torch.cat([mask, torch.ones(len(live), 1, dtype=mask.dtype, device=lm.device)], dim=1)
        out = lm.model(input_ids=chosen[:, None], attention_mask=mask, position_ids=last[:, None],
                       past_key_values=cache, use_cache=True, logits_to_keep=1)
    on_progress(len(rows) * (1 - (step + 1) / max_new_tokens))
    return [row[:row.index(lm.end_id) + 1] if lm.end_id in row else row for row in written.tolist()]


@dataclass(frozen=True)
class CandidateScores:
    """Log-likelihood of every candidate after every prompt ([prompts, candidates]) and candidate lengths."""

    logprob_sum: np.ndarray
    n_tokens: np.ndarray

    def normalised(self, norm: str) -> np.ndarray:
        """The scores under the registered `ppl_norm` value `norm` (an unknown one is an error, not a default)."""
        return entry(PPL_NORMS, norm, "ppl_norm").normalise(self.logprob_sum, self.n_tokens)


def candidate_ids(lm: LoadedModel, candidates: Sequence[str]) -> list[list[int]]:
    """Token ids of each candidate completion, ending with the end-of-turn token (so "joy" != "joyful")."""
    ids = lm.tokenizer(list(candidates), add_special_tokens=False).input_ids
    return [list(c) + [lm.end_id] for c in ids]


@dataclass(frozen=True)
class _CandidateBlock:
    """The candidates laid out after a suffix: the tokens each needs as input (all but its last, which predicts
    nothing), one candidate after another, the attention among them (each sees its own earlier tokens only), their
    positions after the suffix, and for every candidate token, which kept logit predicts it and whose it is."""

    inputs: list[int]
    within: torch.Tensor  # [inputs, inputs] bool
    offsets: list[int]  # position of each input token within its own candidate
    targets: list[int]  # every candidate's tokens, one candidate after another
    predictors: list[int]  # for each target: its kept logit (0: the suffix's last position; 1 + i: input i)
    owner: list[int]  # for each target: its candidate

    @classmethod
    def of(cls, candidates: Sequence[Sequence[int]]) -> _CandidateBlock:
        inputs, offsets, targets, predictors, owner = [], [], [], [], []
        n_inputs = sum(len(c) - 1 for c in candidates)
        within = torch.zeros(n_inputs, n_inputs, dtype=torch.bool)
        for k, cand in enumerate(candidates):
            start = len(inputs)
            for j, token in enumerate(cand):
                targets.append(token)
                owner.append(k)
                predictors.append(0 if j == 0 else 1 + start + j - 1)
            for j, token in enumerate(cand[:-1]):
                within[start + j, start:start + j + 1] = True
                inputs.append(token)
                offsets.append(j)
        return cls(inputs, within, offsets, targets, predictors, owner)


@torch.inference_mode()
def score_candidates(lm: LoadedModel, prompts: Sequence[str], candidates: Sequence[str], batching: Batching,
                     on_progress: OnProgress = lambda n: None, phases: Phases | None = None,
                     prefixes: PrefixCaches | None = None) -> CandidateScores:
    """Log-likelihood of each candidate completion after each prompt (see the module doc); `phases`: where the time
    goes (tokenise, prefix, score); `prefixes`: the run's prefix caches."""
    phases, prefixes = phases or Phases(), prefixes or PrefixCaches()
    with phases("tokenise"):
        cand = candidate_ids(lm, candidates)
        ids = _encode(lm, prompts, max(map(len, cand)))
    with phases("prefix"):
        n_prefix = shared_prefix(ids)
        prefix = prefixes.of(lm, ids[0][:n_prefix] if ids else [])
    with phases("score"):
        return _score_after(lm, prefix, [x[n_prefix:] for x in ids], cand, batching, on_progress)


def _score_after(lm: LoadedModel, prefix: PrefixCache, suffixes: list[list[int]], cand: list[list[int]],
                 batching: Batching, on_progress: OnProgress) -> CandidateScores:
    """`score_candidates`' passes: every candidate of `cand` after the prompts `prefix` + each of `suffixes`."""
    n_prefix, block = prefix.length, _CandidateBlock.of(cand)
    block_len = len(block.inputs)
    n_kept = 1 + block_len  # the suffix's last position, then every input of the block
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    row_limit = max(1, LOGITS_BUDGET // (n_kept * vocab * 4))
    targets = torch.tensor(block.targets, device=lm.device)
    predictors = torch.tensor(block.predictors, device=lm.device)
    owner = torch.tensor(block.owner, device=lm.device)
    inputs = torch.tensor(block.inputs, device=lm.device)
    offsets = torch.tensor(block.offsets, device=lm.device)
    within = block.within.to(lm.device)
    result = np.zeros((len(suffixes), len(cand)))
    for batch in token_batches([len(s) for s in suffixes], block_len, batching, lm.device, row_limit):
        rows = [suffixes[i] for i in batch]
        suffix_ids, real = _left_padded(rows, lm.tokenizer.pad_token_id, lm.device)
        width, n = suffix_ids.shape[1], len(rows)
        input_ids = torch.cat([suffix_ids, inputs.expand(n, -1)], dim=1)
        positions = torch.cat([_suffix_positions(real, n_prefix), n_prefix + real.sum(-1)[:, None] + offsets[None, :]],
                              dim=1)
        mask = torch.zeros(n, 1, width + block_len, n_prefix + width + block_len, dtype=torch.bool,
                           device=lm.device)
        mask[:, :, :, :n_prefix] = True  # everything sees the shared prefix
        suffix_seen = real.bool()[:, None, None, :]  # the real suffix tokens
        causal = torch.tril(torch.ones(width, width, dtype=torch.bool, device=lm.device))
        mask[:, :, :width, n_prefix:n_prefix + width] = causal[None, None] & suffix_seen
        mask[:, :, width:, n_prefix:n_prefix + width] = suffix_seen.expand(n, 1, block_len, width)
        mask[:, :, width:, n_prefix + width:] = within
        pad_rows = ~real.bool()  # a padding position sees itself, so no softmax row is empty
        mask[:, 0, :width, n_prefix:n_prefix + width] |= torch.diag_embed(pad_rows)
        out = lm.model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                       past_key_values=prefix.for_rows(n), logits_to_keep=n_kept)
        logits = out.logits.float()  # [n, kept, vocab]
        normaliser = torch.logsumexp(logits, dim=-1)  # log-softmax without a second vocabulary-wide tensor
        token_lp = logits[:, predictors, targets] - normaliser[:, predictors]  # [n, candidate tokens]
        sums = torch.zeros(n, len(cand), dtype=torch.float64, device=lm.device)
        sums.index_add_(1, owner, token_lp.double())
        result[batch] = sums.cpu().numpy()
        on_progress(len(batch))
    return CandidateScores(result, np.array([len(c) for c in cand], dtype=float))
