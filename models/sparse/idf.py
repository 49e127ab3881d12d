"""Corpus IDF over the encoder's vocabulary: the query side's starting weights, and the per-token
penalty of the IDF-aware FLOPS regulariser."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from transformers import PreTrainedTokenizerBase


def corpus_idf(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], batch_size: int = 1000) -> np.ndarray:
    """Lucene's BM25 IDF, log(1 + (N - df + 0.5) / (df + 0.5)), of every vocabulary token in `texts`.

    A token no document holds gets the largest value, as a query term unseen so far would in BM25.
    """
    df = np.zeros(len(tokenizer), dtype=np.int64)
    for start in range(0, len(texts), batch_size):
        # Whole documents, past the model's input length on purpose (document frequency counts every token):
        # verbose=False keeps transformers from warning about a length no model will read.
        encoded = tokenizer(list(texts[start : start + batch_size]), add_special_tokens=False,
                            verbose=False)["input_ids"]
        for ids in encoded:
            df[np.unique(np.asarray(ids, dtype=np.int64))] += 1
    n = len(texts)
    return np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
