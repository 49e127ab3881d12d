"""The Recommender API: top-k items for a user from a trained factorisation, served by FAISS.

An artifact folder (`data/feedback/recommender/` from the feedback stage) holds
- `recommender.json`: user and item ids (row order), the training config and summary;
- `vectors.npz`: user vectors, per-user score offsets, the debiased item popularity (the
  cold-start ranking) and each user's seen items (CSR: `seen_indptr`, `seen_indices`);
- `items.faiss`: the item vectors in an exact inner-product index (always a CPU index on disk);
- `model/`: the trained torch model (`FactorizationModel.load`), for inspection or retraining.
A user's score for an item is sigmoid(<user vector, item vector> + user offset), the model's
probability that the item is relevant (reaches the first feedback level) for that user.

`train_recommender` builds the folder from the ingested `results` table and the position-bias
propensities; `build_recommender` from any trained model and its interaction matrix.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import polars as pl

from clickloop.atomic import atomic_path
from clickloop.params import from_dict
from indexing.dense import _on_gpu_if_possible
from indexing.errors import SearchInputError, check_k, require
from models.recommendation import (
    FactorizationModel,
    InteractionMatrix,
    RecommenderConfig,
    debiased_popularity,
    interactions_from_results,
)

MANIFEST_FILE = "recommender.json"
VECTORS_FILE = "vectors.npz"
INDEX_FILE = "items.faiss"
MODEL_DIR = "model"
COLD_START_POLICIES = ("error", "popular")


class UnknownUserError(SearchInputError):
    """A user the recommender was not trained on (and no cold-start fallback was asked for)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(
            f"unknown user {user_id!r}: not in the training logs; pass cold_start='popular' for the "
            "debiased most-popular items"
        )
        self.user_id = user_id


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    score: float  # personalised: P(relevant); fallback: the estimated share of users it is relevant to
    rank: int  # 1-based
    fallback: bool  # True when it comes from the cold-start popularity ranking, not from the user's vector


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


class Recommender:
    """Recommend items to users from an artifact folder. Loads it once; safe to call from many threads."""

    def __init__(self, artifact_dir: str | Path = "data/feedback/recommender", cold_start: str = "error") -> None:
        """`cold_start`: what `recommend` does for an unknown user by default, "error" (UnknownUserError)
        or "popular" (the debiased most-popular items, marked `fallback=True`)."""
        self._check_cold_start(cold_start)
        self.cold_start = cold_start
        root = require(Path(artifact_dir), "recommender artifact folder")
        manifest = json.loads(require(root / MANIFEST_FILE, "recommender manifest").read_text())
        self.item_ids: list[str] = manifest["item_ids"]
        self._user_row = {user: row for row, user in enumerate(manifest["user_ids"])}
        self.config = from_dict(RecommenderConfig, manifest["config"], where=str(root / MANIFEST_FILE))
        self.summary: dict[str, Any] = manifest["summary"]
        with np.load(require(root / VECTORS_FILE, "recommender vectors")) as vectors:
            self._user_vectors = vectors["user"]
            self._user_offset = vectors["user_offset"]
            self._popularity_order = np.argsort(-vectors["popularity"], kind="stable")
            self._popularity = vectors["popularity"]
            self._seen_indptr, self._seen_indices = vectors["seen_indptr"], vectors["seen_indices"]
        cpu_index = faiss.read_index(str(require(root / INDEX_FILE, "recommender FAISS index")))
        if cpu_index.ntotal != len(self.item_ids) or len(self._user_vectors) != len(self._user_row):
            raise ValueError(f"{root}: the index, vectors and ids disagree on the number of items or users; retrain it")
        self._index = _on_gpu_if_possible(cpu_index)
        # GPU FAISS indices must not be searched from two threads at once.
        self._lock = threading.Lock()

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._user_row

    @property
    def n_users(self) -> int:
        return len(self._user_row)

    def recommend(
        self, user_id: str, k: int = 10, exclude_seen: bool = True, cold_start: str | None = None
    ) -> list[Recommendation]:
        """The top `k` items for `user_id`, best first.

        `exclude_seen` leaves out the items the user already gave feedback on in training.
        Fewer than `k` come back only when the catalog (less the seen items) is smaller.
        An unknown user raises `UnknownUserError` unless the cold-start policy (this call's
        `cold_start`, else the Recommender's) is "popular".
        """
        if not isinstance(user_id, str) or not user_id.strip():
            raise SearchInputError(f"user_id must be a non-empty string, got {user_id!r}")
        check_k(k)
        policy = self.cold_start if cold_start is None else self._check_cold_start(cold_start)
        row = self._user_row.get(user_id)
        if row is None:
            if policy == "error":
                raise UnknownUserError(user_id)
            return [
                Recommendation(self.item_ids[item], float(self._popularity[item]), rank, fallback=True)
                for rank, item in enumerate(self._popularity_order[:k].tolist(), start=1)
            ]
        seen = self._seen_indices[self._seen_indptr[row] : self._seen_indptr[row + 1]] if exclude_seen else ()
        depth = min(k + len(seen), len(self.item_ids))
        with self._lock:
            inner, items = self._index.search(self._user_vectors[row : row + 1], depth)
        excluded = set(np.asarray(seen).tolist())
        ranked = [(item, ip) for item, ip in zip(items[0].tolist(), inner[0].tolist(), strict=True)
                  if item >= 0 and item not in excluded][:k]
        offset = float(self._user_offset[row])
        return [
            Recommendation(self.item_ids[item], 1.0 / (1.0 + float(np.exp(-(ip + offset)))), rank, fallback=False)
            for rank, (item, ip) in enumerate(ranked, start=1)
        ]

    @staticmethod
    def _check_cold_start(policy: str) -> str:
        if policy not in COLD_START_POLICIES:
            raise SearchInputError(f"cold_start must be one of {COLD_START_POLICIES}, got {policy!r}")
        return policy
