"""The Recommender API: top-k items for a user from a trained factorisation, served by FAISS.

It reads the artifact folder the feedback stage writes (`data/feedback/recommender/`; the
layout is in models/recommendation/layout.py, the training in models/recommendation/artifact.py).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from clickloop.params import from_dict
from indexing.dense import _on_gpu_if_possible
from indexing.errors import CorruptIndexError, SearchInputError, check_k, reading, require
from models.recommendation import RecommenderConfig
from models.recommendation.layout import INDEX_FILE, MANIFEST_FILE, VECTORS_FILE

STAGE = "feedback"  # the DVC stage that trains the recommender and writes its artifact folder
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


class Recommender:
    """Recommend items to users from an artifact folder. Loads it once; safe to call from many threads."""

    def __init__(self, artifact_dir: str | Path = "data/feedback/recommender", cold_start: str = "error") -> None:
        """`cold_start`: what `recommend` does for an unknown user by default, "error" (UnknownUserError)
        or "popular" (the debiased most-popular items, marked `fallback=True`)."""
        self._check_cold_start(cold_start)
        self.cold_start = cold_start
        root = require(Path(artifact_dir), "recommender artifact folder", STAGE)
        with reading(root / MANIFEST_FILE, "recommender manifest", STAGE) as manifest_file:
            manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
            self.item_ids: list[str] = manifest["item_ids"]
            self._user_row = {user: row for row, user in enumerate(manifest["user_ids"])}
            self.config = from_dict(RecommenderConfig, manifest["config"], where=str(manifest_file))
            self.summary: dict[str, Any] = manifest["summary"]
        with reading(root / VECTORS_FILE, "recommender vectors", STAGE) as path, np.load(path) as vectors:
            self._user_vectors = vectors["user"]
            self._user_offset = vectors["user_offset"]
            self._popularity_order = np.argsort(-vectors["popularity"], kind="stable")
            self._popularity = vectors["popularity"]
            self._seen_indptr, self._seen_indices = vectors["seen_indptr"], vectors["seen_indices"]
        with reading(root / INDEX_FILE, "recommender FAISS index", STAGE) as index_file:
            cpu_index = faiss.read_index(str(index_file))
        if cpu_index.ntotal != len(self.item_ids) or len(self._user_vectors) != len(self._user_row):
            raise CorruptIndexError(root, "recommender artifact folder", STAGE,
                                    "the index, vectors and ids disagree on the number of items or users")
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
