"""Training the user -> item recommender and writing its artifact folder (layout.py), which
`indexing.Recommender` serves.

`train_recommender` builds the folder from the ingested `results` table and the position-bias
propensities; `build_recommender` from any trained model and its interaction matrix.

With the content-aware item tower (`text_tower`), the catalog's items that no log row names (cold)
join the index too, scored from their text vectors alone (`FactorizationModel.cold_item_vectors`):
they come after the logged items in the item order and have no popularity (0).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
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
                      summary: dict[str, Any] | None = None, cold_items: ItemFeatures | None = None) -> None:
    """Write the artifact folder for `model` trained on `data` (the same users and items), atomically.

    `cold_items`: items outside `data` that the text tower scores from their features; they are appended."""
    if model.user_ids != data.user_ids or model.item_ids != data.item_ids:
        raise ValueError("the model and the interaction matrix must have the same users and items, in order")
    vectors = model.score_vectors()
    item_vectors, item_ids = vectors.item, list(model.item_ids)
    popularity = debiased_popularity(data, model.config.clip)
    if cold_items is not None and cold_items.ids:
        item_vectors = np.vstack([item_vectors, model.cold_item_vectors(cold_items.vectors)])
        item_ids += cold_items.ids
        popularity = np.concatenate([popularity, np.zeros(len(cold_items.ids), dtype=popularity.dtype)])
    seen = data.seen.astype(bool)
    index = faiss.IndexFlatIP(item_vectors.shape[1])
    index.add(np.ascontiguousarray(item_vectors, dtype=np.float32))
    manifest = {
        "user_ids": model.user_ids,
        "item_ids": item_ids,
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
            popularity=popularity,
            seen_indptr=np.concatenate([[0], np.cumsum(seen.sum(axis=1))]).astype(np.int64),
            seen_indices=np.nonzero(seen)[1].astype(np.int64),
        )
        faiss.write_index(index, str(staged / INDEX_FILE))
        model.save(staged / MODEL_DIR)


@dataclass
class ItemFeatures:
    """Text vectors of catalog items (e.g. the dense index's document vectors), one row per id."""

    ids: list[str]
    vectors: np.ndarray  # float32 [N, F]

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or len(self.vectors) != len(self.ids):
            raise ValueError(f"item features need one row per id; got {self.vectors.shape} for {len(self.ids)} ids")

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """The feature rows of `ids`, in order; an id without features is an error."""
        where = {item: row for row, item in enumerate(self.ids)}
        missing = [item for item in ids if item not in where]
        if missing:
            raise ValueError(f"{len(missing)} item(s) have no text vector, e.g. {missing[:3]}")
        return self.vectors[[where[item] for item in ids]]


# The dense index folder's layout (indexing/dense.py writes it): the FAISS index and its row -> doc id list.
DENSE_INDEX_FILE, DENSE_IDS_FILE = "index.faiss", "doc_ids.json"


def dense_item_features(folder: str | Path) -> ItemFeatures:
    """The document vectors of a dense index folder (e.g. data/indices/dense) as item features; its index
    must keep exact vectors (Flat, or HNSW over flat storage)."""
    folder = Path(folder)
    ids = json.loads((folder / DENSE_IDS_FILE).read_text(encoding="utf-8"))
    index = faiss.read_index(str(folder / DENSE_INDEX_FILE))
    if not isinstance(index, faiss.IndexFlat | faiss.IndexHNSWFlat) or index.ntotal != len(ids):
        raise ValueError(f"{folder}: the text tower needs an exact (Flat or HNSWFlat) index with one row per id")
    return ItemFeatures([str(i) for i in ids], index.reconstruct_n(0, index.ntotal))


def train_recommender(
    results: pl.DataFrame, propensities: Sequence[float], config: RecommenderConfig, out_dir: str | Path,
    item_features: ItemFeatures | None = None,
) -> dict[str, Any]:
    """Train on the ingested `results` (docs/contracts.md) and write the artifact folder; returns its summary.

    `propensities` is the position-bias curve theta by 1-based position (models/propensity.py).
    Rows without a user id cannot be attributed to a user: they are counted in the summary
    (`anonymous_rows`), not used. With `config.text_tower`, `item_features` (every catalog item's text
    vector) feed the item tower and every catalog item the logs never name becomes recommendable.
    """
    if config.text_tower and item_features is None:
        raise ValueError("text_tower needs the catalog's item features (the dense index's document vectors)")
    anonymous = results.filter(pl.col("user_id").is_null())
    data = interactions_from_results(
        results.filter(pl.col("user_id").is_not_null()), propensities, config.feedback_levels, config.max_matrix_cells
    )
    features = item_features.rows(data.item_ids) if config.text_tower and item_features else None
    model = FactorizationModel.fit(data, config, item_features=features)
    cold = None
    if config.text_tower and item_features is not None:
        logged = set(data.item_ids)
        cold_ids = [item for item in item_features.ids if item not in logged]
        cold = ItemFeatures(cold_ids, item_features.rows(cold_ids))
    summary = {
        "method": config.method,
        "rows": len(results),
        "anonymous_rows": len(anonymous),
        "users": len(data.user_ids),
        "items": len(data.item_ids),
        "pairs_per_level": {name: int((data.levels >= k).sum()) for k, name in enumerate(data.level_names, 1)},
        "epoch_losses": model.module.epoch_losses,
        "cold_items": len(cold.ids) if cold else 0,
    }
    build_recommender(model, data, out_dir, summary, cold)
    return summary
