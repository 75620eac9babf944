"""Each advantage estimator against values computed by hand (the arithmetic is written out in the comments)."""

from __future__ import annotations

import pytest
import torch

from runners.advantages import AdvantageInputs, grpo, kl_shaped_returns, reinforce_pp, reinforce_pp_baseline

approx = lambda values: pytest.approx(values, abs=1e-4)  # noqa: E731


def test_grpo_normalises_within_each_group():
    # group 1: rewards 1,0,0,0 -> mean .25, unbiased std sqrt((.75^2 + 3 * .25^2) / 3) = .5
    # group 2: rewards 1,1,0,0 -> mean .5, unbiased std sqrt(4 * .25 / 3) = .57735
    x = AdvantageInputs(torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0]), torch.ones(8, 2), group=4)
    expected = [0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001,
                0.5 / 0.57745, 0.5 / 0.57745, -0.5 / 0.57745, -0.5 / 0.57745]
    assert grpo(x).tolist() == approx(expected)


def test_grpo_group_without_variance_gets_zero_advantage():
    x = AdvantageInputs(torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.ones(4, 1), group=2)
    assert grpo(x).tolist() == approx([0, 0, 0, 0])


def test_reinforce_pp_baseline_subtracts_group_mean_then_whitens_over_tokens():
    # rewards 1,0 | 1,1 (group 2) -> centred .5, -.5 | 0, 0; token lengths 2,1,2,1 -> 6 tokens:
    # values .5,.5 | -.5 | 0,0 | 0; mean .5/6 = .083333; biased var = (2 * .416667^2 + .583333^2 + 3 * .083333^2) / 6
    # = .118056, std .343592 -> .5 -> 1.212678, -.5 -> -1.697749, 0 -> -.242536
    mask = torch.tensor([[1.0, 1], [1, 0], [1, 1], [1, 0]])
    x = AdvantageInputs(torch.tensor([1.0, 0, 1, 1]), mask, group=2)
    got = reinforce_pp_baseline(x)
    assert got.tolist() == [approx([1.212678, 1.212678]), approx([-1.697749, 0]), approx([-0.242536, -0.242536]),
                            approx([-0.242536, 0])]
    assert (got * mask).sum().item() == approx(0.0)


def test_reinforce_pp_folds_kl_into_the_reward_and_whitens_returns():
    # k1 KL = logp - ref = [.5, 0] and [0, (masked)]; token rewards -0.1 * KL = [-.05, 0] and [0]; the reward goes on
    # the last token: [-.05, 1] and [0]; returns to the end: [.95, 1] and [0]; over 3 tokens mean .65,
    # biased var (.3^2 + .35^2 + .65^2) / 3 = .211667, std .460072
    logps, ref = torch.tensor([[-1.0, -2], [-1, -1]]), torch.tensor([[-1.5, -2], [-1, -3]])
    mask = torch.tensor([[1.0, 1], [1, 0]])
    rewards = torch.tensor([1.0, 0.0])
    assert kl_shaped_returns(rewards, logps, ref, mask, 0.1).tolist() == [approx([0.95, 1.0]), approx([0.0, 0.0])]
    x = AdvantageInputs(rewards, mask, group=1, kl_coef=0.1, logps=logps, ref_logps=ref)
    got = reinforce_pp(x)
    assert got.tolist() == [approx([0.30 / 0.460072, 0.35 / 0.460072]), approx([-0.65 / 0.460072, 0.0])]


def test_reinforce_pp_needs_log_probabilities():
    with pytest.raises(ValueError, match="log-probabilities"):
        reinforce_pp(AdvantageInputs(torch.ones(2), torch.ones(2, 1), group=1))
