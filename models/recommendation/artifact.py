"""Training the user -> item recommender and writing its artifact folder (layout.py), which
`indexing.Recommender` serves.

`train_recommender` builds the folder from the ingested `results` table and the position-bias
propensities; `build_recommender` from any trained model and its interaction matrix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import polars as pl

from clickloop.atomic import atomic_path
from models.recommendation.factorization import FactorizationModel, RecommenderConfig
from models.recommendation.interactions import InteractionMatrix, debiased_popularity, interactions_from_results
from models.recommendation.layout import INDEX_FILE, MANIFEST_FILE, MODEL_DIR, VECTORS_FILE


def build_recommender(model: FactorizationModel, data: InteractionMatrix, out_dir: str | Path,
                      summary: dict[str, Any] | None = None) -> None:
    """Write the artifact folder for `model` trained on `data` (the same users and items), atomically."""
    if model.user_ids != data.user_ids or model.item_ids != data.item_ids:
        raise ValueError("the model and the interaction matrix must have the same users and items, in order")
    vectors = model.score_vectors()
    seen = data.seen.astype(bool)
    index = faiss.IndexFlatIP(vectors.item.shape[1])
    index.add(np.ascontiguousarray(vectors.item, dtype=np.float32))
    manifest = {
        "user_ids": model.user_ids,
        "item_ids": model.item_ids,
        "config": asdict(model.config),
        "summary": summary or {},
    }
    with atomic_path(out_dir) as staged:
        staged.mkdir()
        (staged / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        np.savez(
            staged / VECTORS_FILE,
            user=vectors.user,
            user_offset=vectors.user_offset,
            popularity=debiased_popularity(data, model.config.clip),
            seen_indptr=np.concatenate([[0], np.cumsum(seen.sum(axis=1))]).astype(np.int64),
            seen_indices=np.nonzero(seen)[1].astype(np.int64),
        )
        faiss.write_index(index, str(staged / INDEX_FILE))
        model.save(staged / MODEL_DIR)


def train_recommender(
    results: pl.DataFrame, propensities: Sequence[float], config: RecommenderConfig, out_dir: str | Path
) -> dict[str, Any]:
    """Train on the ingested `results` (docs/contracts.md) and write the artifact folder; returns its summary.

    `propensities` is the position-bias curve theta by 1-based position (models/propensity.py).
    Rows without a user id cannot be attributed to a user: they are counted in the summary
    (`anonymous_rows`), not used.
    """
    anonymous = results.filter(pl.col("user_id").is_null())
    data = interactions_from_results(
        results.filter(pl.col("user_id").is_not_null()), propensities, config.feedback_levels, config.max_matrix_cells
    )
    model = FactorizationModel.fit(data, config)
    summary = {
        "method": config.method,
        "rows": len(results),
        "anonymous_rows": len(anonymous),
        "users": len(data.user_ids),
        "items": len(data.item_ids),
        "pairs_per_level": {name: int((data.levels >= k).sum()) for k, name in enumerate(data.level_names, 1)},
        "epoch_losses": model.module.epoch_losses,
    }
    build_recommender(model, data, out_dir, summary)
    return summary
