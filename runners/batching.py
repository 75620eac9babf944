"""How rows are grouped into forward passes (no torch: a grid's settings are checked without loading a model)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Batching:
    """At most `rows` rows and `tokens` tokens per forward pass (None: the device's default; see
    `runners.inference.default_tokens_per_batch`). How a run is batched never changes its identity."""

    rows: int
    tokens: int | None = None
