"""Exact search of an encoder over cached document states, without building an index.

A query's score of a document needs the document's weights on the query's own tokens only, so
scoring a query set projects the corpus onto the queries' distinct tokens instead of the whole
vocabulary: the same ranking the impact index gives (with the same integer quantisation), at a
fraction of the encoding cost. Benchmarks use it to compare many trained encoders on one corpus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from sentence_transformers import SparseEncoder

from models.sparse.cache import DocumentStates
from models.sparse.encoder import document_logits, query_module, query_token_ids, splade_pool

Run = dict[str, dict[str, float]]


@torch.no_grad()
def exact_search(
    model: SparseEncoder,
    states: DocumentStates,
    doc_ids: Sequence[str],
    queries: Mapping[str, str],
    k: int = 100,
    impact_scale: float = 100.0,
    query_scale: float = 100.0,
    batch_size: int = 64,
) -> Run:
    """Top-`k` documents per query (id -> text), scored as the Lucene impact index scores them:
    document weights x `impact_scale` and query weights x `query_scale`, each rounded to integers."""
    qids = list(queries)
    tokens = query_token_ids(model, [queries[q] for q in qids])
    vocab = torch.tensor(sorted({t for ts in tokens for t in ts}) or [0])
    blocks = []
    for start in range(0, len(states), batch_size):
        hidden, lengths = states.padded(range(start, min(start + batch_size, len(states))))
        blocks.append(splade_pool(document_logits(model, hidden, vocab), lengths).float())
    docs = torch.round(torch.cat(blocks) * impact_scale).numpy()
    column = {t: j for j, t in enumerate(vocab.tolist())}
    weights = query_module(model).weight.detach().cpu().numpy()
    query_matrix = np.zeros((len(qids), len(vocab)))
    for i, ts in enumerate(tokens):
        for t in ts:
            query_matrix[i, column[t]] = max(0, round(float(weights[t]) * query_scale))
    scores = query_matrix @ docs.T
    run: Run = {}
    for i, qid in enumerate(qids):
        top = np.argsort(-scores[i], kind="stable")[:k]
        run[qid] = {doc_ids[j]: float(scores[i, j]) for j in top if scores[i, j] > 0}
    return run
