"""Sentence embeddings for dense retrieval of demonstrations, through sentence-transformers: any
sentence-transformers folder is read with its own modules (pooling, `max_seq_length`, normalisation, dense layers)
and prompts, the pool encoded as documents and each input as a query (e5's "passage: " / "query: ", bge's query
instruction), as the model's card prescribes for retrieval."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

EMBED_BATCH = 64  # texts per forward pass (sentence-transformers sorts them by length, so a batch pads little)
DOCUMENT_PROMPTS = ("document", "passage", "corpus")  # the names encode_document looks for, in its order


class SentenceEncoder:
    """A sentence-transformers model loaded once, on the GPU when there is one; `documents` and `queries` map texts
    to float32 vectors, [len(texts), dimension], in input order (unit length when the model normalises)."""

    def __init__(self, folder: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(folder), local_files_only=True)

    def documents(self, texts: Sequence[str]) -> np.ndarray:
        # named here: sentence-transformers 6.3 always holds a "document" prompt ("" when the model has none), so its
        # own lookup never reaches an e5-style "passage" prompt
        prompt = next((name for name in DOCUMENT_PROMPTS if self.model.prompts.get(name)), None)
        return self.model.encode_document(list(texts), prompt_name=prompt, batch_size=EMBED_BATCH,
                                          show_progress_bar=False)

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.encode_query(list(texts), batch_size=EMBED_BATCH, show_progress_bar=False)
