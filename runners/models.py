"""Loading models for inference and training: a causal LM and its tokenizer from a local folder (see
`runners.model_registry` for how a name becomes a folder), with trained stages applied in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, ready for batched left-padded inference. `end_id` is the token that ends a
    turn (the tokenizer's end-of-sequence token, read once at load): generation stops on it, candidates end with it."""

    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    end_id: int


def is_adapter(folder: Path) -> bool:
    """A trained stage is either a PEFT adapter folder or a full model folder."""
    return (folder / "adapter_config.json").is_file()


def load_model(folder: Path, dtype: str, stages: Sequence[Path] = ()) -> LoadedModel:
    """Load the model in `folder` for inference (eval mode, left padding, a pad token) on the GPU if there is one.

    `stages`: trained folders applied in order (a full model replaces the weights, an adapter is merged in),
    so SFT then RL is the base with the SFT adapter merged, then the RL adapter merged."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    full = [s for s in stages if not is_adapter(s)]
    weights = full[-1] if full else folder
    model = AutoModelForCausalLM.from_pretrained(weights, dtype=getattr(torch, dtype), attn_implementation="sdpa")
    adapters = list(stages)[list(stages).index(full[-1]) + 1:] if full else list(stages)
    if adapters:
        from peft import PeftModel

        for adapter in adapters:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return LoadedModel(model.to(device).eval(), tokenizer, device, tokenizer.eos_token_id)
