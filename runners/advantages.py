"""Policy-gradient advantage estimators, as pure tensor functions (tests check them on hand-computed batches); the
`rl_algo` registrations (strategies/training.py) name the one each algorithm uses.

Shapes: `rewards` [B] (B = prompts x group, each prompt's completions adjacent, as TRL lays them out), `mask`
[B, T] (1 on completion tokens), per-token log-probabilities [B, T]. Estimators return [B] (one advantage per
completion) or [B, T] (per token); TRL's GRPO loss accepts both.

- `grpo`: (r - group mean) / (group std + eps), the GRPO paper's group-normalised advantage (std unbiased, as TRL).
- `reinforce_pp_baseline`: r - group mean on every token of the completion, then whitened over all completion tokens
  of the batch (OpenRLHF `reinforce_baseline`).
- `reinforce_pp`: per-token reward -kl_coef * (log pi_old - log pi_ref) plus the scalar reward on the last token,
  returns summed to the end (gamma = 1), whitened over all completion tokens of the batch (OpenRLHF `reinforce`).
  No group baseline: it works with one completion per prompt too.
Whitening follows OpenRLHF: token-weighted mean and (biased) variance, `(x - mean) * rsqrt(var.clamp(min=1e-8))`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 1e-4  # GRPO std denominator guard (TRL's value)


@dataclass(frozen=True)
class AdvantageInputs:
    rewards: torch.Tensor  # [B]
    mask: torch.Tensor  # [B, T]
    group: int
    kl_coef: float = 0.0
    logps: torch.Tensor | None = None  # [B, T] log pi_old of the sampled tokens
    ref_logps: torch.Tensor | None = None  # [B, T] log pi_ref of the same tokens


def whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero-mean, unit-variance over the masked entries (token-weighted); zero outside the mask."""
    mask = mask.to(values.dtype)
    count = mask.sum().clamp(min=1.0)
    mean = (values * mask).sum() / count
    var = (((values - mean) ** 2) * mask).sum() / count
    return (values - mean) * torch.rsqrt(var.clamp(min=1e-8)) * mask


def _grouped(rewards: torch.Tensor, group: int) -> torch.Tensor:
    return rewards.view(-1, group)


def grpo(x: AdvantageInputs) -> torch.Tensor:
    g = _grouped(x.rewards, x.group)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + EPS)).view(-1)


def reinforce_pp_baseline(x: AdvantageInputs) -> torch.Tensor:
    g = _grouped(x.rewards, x.group)
    centred = (g - g.mean(1, keepdim=True)).view(-1)
    return whiten(centred[:, None] * x.mask, x.mask)


def kl_shaped_returns(rewards: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> torch.Tensor:
    """Per-token returns: the sum from each token to the end of -kl_coef * k1-KL, plus the reward at the last token."""
    mask = mask.to(logps.dtype)
    token_rewards = -kl_coef * (logps - ref_logps) * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)
    token_rewards[torch.arange(len(rewards)), last] += rewards.to(logps.dtype)
    return token_rewards.flip(1).cumsum(1).flip(1) * mask


def reinforce_pp(x: AdvantageInputs) -> torch.Tensor:
    if x.logps is None or x.ref_logps is None:
        raise ValueError("reinforce_pp needs the policy's and the reference's token log-probabilities")
    return whiten(kl_shaped_returns(x.rewards, x.logps, x.ref_logps, x.mask, x.kl_coef), x.mask)
