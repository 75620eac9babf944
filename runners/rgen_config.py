"""Settings of the reasoning generator (R-Gen) of two-stage reasoning, beside `runners.rgen` (which builds its rows
and writes the reasonings; `runners.sft` trains it). Pydantic only, no torch."""

from __future__ import annotations

from pydantic import Field

from runners.sft_config import Settings, SFTSettings


class RGenSettings(Settings):
    """Two-stage reasoning (recipes with reasoning_source rgen or self): the reasoning generator R-Gen is trained
    on `per_corpus` rows of each corpus (bundled name or a question/answer/reasoning file), then writes a reasoning
    of at most `max_new_tokens` for every training example; `mask_labels` hides category names in them."""

    corpora: tuple[str, ...] = Field(default=("cose", "esnli", "gsm8k"), min_length=1)
    per_corpus: int = Field(default=64, ge=1)
    model: str | None = None  # the base model R-Gen is trained from; default: the classifier's own model
    sft: SFTSettings = SFTSettings(max_length=512)
    max_new_tokens: int = Field(default=64, ge=1)
    mask_labels: bool = False
    skip_invalid: bool = False  # skip (and count) empty or over-long corpus rows instead of stopping
