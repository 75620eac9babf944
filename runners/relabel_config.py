"""Settings of GenCLS++'s uncertain label, beside `runners.relabel` (pydantic only, no torch)."""

from __future__ import annotations

from pydantic import Field

from runners.sft_config import Settings


class RelabelSettings(Settings):
    """The `fraction` of training examples the scorers are least sure of become "uncertain" in the SFT data.
    `scorers`: model refs, `base` = the model being trained (zero-shot probabilities)."""

    fraction: float = Field(default=0.1, gt=0, lt=1)
    scorers: tuple[str, ...] = Field(default=("base",), min_length=1)
