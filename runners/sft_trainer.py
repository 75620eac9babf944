"""The suite's SFT trainer: TRL `SFTTrainer` whose loss reads the LM head at the completion's positions only.

TRL 1.16's fused LM head scores only the labelled positions where Triton runs (CUDA, XPU); elsewhere, the CPU
included, it scores every position of the batch, prompt and padding too, with its entropy and top-1 pass over the
whole vocabulary, and projects every position again in the backward. For completion-only SFT, where the completion
is a few tokens of a ~100-token row, that made a step about 1.4x the cost of a plain `Trainer` step
(benchmarks/train_throughput.py). Where the fused head is not compact, this trainer asks the model for the logits
of the labelled positions only (`logits_to_keep` as a mask, so the model's own logit scaling and soft-capping
apply), and takes the loss, the entropy and the token accuracy from those logits: the same loss and curves (to
float rounding), every step, at a fraction of the cost. Elsewhere TRL's compact fused head is kept.
"""

from __future__ import annotations

import torch
from transformers.utils import is_triton_available
from trl import SFTTrainer


def fused_head_is_compact(device: torch.device) -> bool:
    """Whether TRL's fused LM head scores only the labelled positions on `device` (TRL: `kernels.chunked_logprob.
    _use_triton`, Triton on CUDA or XPU); elsewhere it scores every position."""
    return is_triton_available() and device.type in ("cuda", "xpu")


def completion_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each target [M] and the whole log-distribution [M, V] (fp32), from logits [M, V]."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    return log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1), log_p


def token_curves(log_p: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Mean entropy of the next-token distributions `log_p` [M, V] and the share of `targets` [M] that are their
    top-1 token: TRL's `entropy` and `mean_token_accuracy` (0.0 for no positions)."""
    valid = max(len(targets), 1)
    return -(log_p.exp() * log_p).sum().item() / valid, (log_p.argmax(-1) == targets).sum().item() / valid


class CompletionSFTTrainer(SFTTrainer):
    """`SFTTrainer` that reads the LM head only where the loss needs it, on devices where TRL's fused head reads
    every position; logs TRL's `entropy`, `mean_token_accuracy` and `num_tokens` as TRL does."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._reads_completion_only(inputs, return_outputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"][:, 1:]
        keep = labels != -100  # position t predicts token t + 1
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False,
                        logits_to_keep=torch.cat([keep, torch.zeros_like(keep[:, :1])], dim=1))
        targets = labels[keep]
        log_probs, log_p = completion_logprobs(outputs.logits, targets)
        count = keep.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -log_probs.sum() / torch.as_tensor(count).clamp(min=1)
        self._log_metrics(log_p.detach(), targets, int(inputs["attention_mask"].sum()))
        return loss

    def _reads_completion_only(self, inputs: dict, return_outputs: bool) -> bool:
        """Whether this step takes the completion-only path: one process, no MoE auxiliary loss, no caller wanting
        the model's outputs, and a device where TRL's fused head would read every position."""
        return (not return_outputs and not self.aux_loss_enabled and self.accelerator.num_processes == 1
                and not fused_head_is_compact(inputs["input_ids"].device))

    def _log_metrics(self, log_p: torch.Tensor, targets: torch.Tensor, batch_tokens: int) -> None:
        """The curves and the token count TRL's `compute_loss` records, over the labelled positions (`log_p` [M, V])."""
        metrics = self._metrics["train" if self.model.training else "eval"]
        entropy, accuracy = token_curves(log_p, targets)
        metrics["entropy"].append(entropy)
        metrics["mean_token_accuracy"].append(accuracy)
        if self.model.training:
            self._total_train_tokens += batch_tokens
        metrics["num_tokens"] = [self._total_train_tokens]
