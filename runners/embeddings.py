"""Sentence embeddings for dense retrieval of demonstrations, read from a sentence-transformers folder with plain
transformers (no sentence-transformers dependency): the encoder, the pooling its `1_Pooling/config.json` names
(mean, CLS or max), its `max_seq_length`, and L2 normalisation when its `modules.json` lists a Normalize module,
as `SentenceTransformer.encode` computes them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

EMBED_BATCH = 64  # texts per forward pass (sorted by length, so a batch pads little)


class SentenceEmbedder:
    """An encoder loaded once; `embed` maps texts to float32 vectors (unit length when the model normalises)."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).to(self.device).eval()
        self.pooling = _pooling(_json(folder / "1_Pooling" / "config.json"), folder)
        self.max_length = int(_json(folder / "sentence_bert_config.json").get("max_seq_length", 512))
        modules = folder / "modules.json"
        self.normalise = modules.is_file() and any(m.get("type", "").endswith("Normalize")
                                                   for m in json.loads(modules.read_text()))

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), dimension] float32, in input order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), EMBED_BATCH):
            chunk = order[start:start + EMBED_BATCH]
            batch = self.tokenizer([texts[i] for i in chunk], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            elif self.pooling == "max":
                pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
            else:
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            if self.normalise:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            vectors[chunk] = pooled.float().cpu().numpy()
        return vectors


POOLINGS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean"}


def _pooling(config: dict, folder: Path) -> str:
    """The one pooling mode a sentence-transformers pooling config enables (mean when there is no config)."""
    enabled = [key for key, on in config.items() if key.startswith("pooling_mode_") and on]
    if not enabled:
        return "mean"
    if len(enabled) > 1 or enabled[0] not in POOLINGS:
        raise ValueError(f"{folder}: pooling {', '.join(enabled)} is not supported; one of {', '.join(POOLINGS)}")
    return POOLINGS[enabled[0]]


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
