"""The floors a user would try before any factorisation: popularity and item-based kNN.

Both read only the positives of an `InteractionMatrix` and return a [users, items] score matrix,
like `FactorizationModel.logits`, so the same metrics code ranks them.

- `popularity_scores`: every user gets the items' training positive counts (no personalisation;
  the ranking the exposure bias itself would produce).
- `item_knn_scores`: cosine similarity between items' positive columns, each item keeping only
  its `neighbours` most similar items (Sarwar et al., 2001; Deshpande & Karypis, 2004); a user's
  score for item i is the sum of the similarities between i and the items the user liked. An
  item nobody liked scores 0 for everyone (kNN cannot recommend cold items).
"""

from __future__ import annotations

import numpy as np

from models.recommendation.interactions import InteractionMatrix


def popularity_scores(data: InteractionMatrix, user_rows: np.ndarray | None = None) -> np.ndarray:
    """[B, I]: each item's number of positives, the same row for every user."""
    counts = data.positives.sum(axis=0).astype(np.float64)
    n = len(data.user_ids) if user_rows is None else len(user_rows)
    return np.broadcast_to(counts, (n, len(counts))).copy()


def item_similarities(data: InteractionMatrix, neighbours: int) -> np.ndarray:
    """[I, I] cosine similarities of the items' positive columns, each row pruned to its top `neighbours`
    (an item is not its own neighbour)."""
    if neighbours < 1:
        raise ValueError(f"neighbours must be >= 1; got {neighbours}")
    x = data.positives.astype(np.float32)
    norms = np.sqrt(x.sum(axis=0))
    norms[norms == 0] = 1.0
    sim = (x.T @ x) / np.outer(norms, norms)
    np.fill_diagonal(sim, 0.0)
    if neighbours < sim.shape[1]:
        # Zero every entry below each row's k-th largest (ties at the threshold may keep a few more).
        kth = np.partition(sim, -neighbours, axis=1)[:, -neighbours][:, None]
        sim = np.where(sim >= kth, sim, 0.0)
    return sim.astype(np.float32)


def item_knn_scores(data: InteractionMatrix, neighbours: int, user_rows: np.ndarray | None = None) -> np.ndarray:
    """[B, I]: sum over the user's positive items j of sim(i, j), with `neighbours` per item."""
    sim = item_similarities(data, neighbours)
    rows = np.arange(len(data.user_ids)) if user_rows is None else np.asarray(user_rows)
    return data.positives[rows].astype(np.float32) @ sim.T
