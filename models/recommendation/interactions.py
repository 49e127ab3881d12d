"""The user x item feedback matrix the recommenders learn from, and its exposure propensities.

Implicit feedback is missing-not-at-random: a user can only give feedback on an item that was
exposed to them, and exposure favours popular items (Yahoo! R3: self-selected songs) or top
positions (search logs). Each (user, item) pair therefore carries
- `levels`: the highest nested feedback level reached, 0 for none (e.g. 1 = click, 2 = love);
- `propensity`: the probability the pair was exposed, so that P(level >= 1) = propensity x
  P(relevant) under the exposure model the unbiased losses assume.

The matrix is dense (n_users x n_items cells): every loss here sums over all unobserved pairs,
which is exact and fast for catalogs of thousands of items; `check_size` turns a catalog too big
for that into a clear error instead of an out-of-memory crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from models.gnolr import level_labels

RESULT_COLUMNS = ("user_id", "doc_id", "position", "actions")


@dataclass
class InteractionMatrix:
    user_ids: list[str]
    item_ids: list[str]
    levels: np.ndarray  # int8 [U, I]: highest feedback level reached (0 = none, k = level_names[k-1])
    level_names: list[str]  # the nested levels above "nothing", low to high
    propensity: np.ndarray  # float32 [I] (per item) or [U, I] (per pair): P(the pair was exposed)
    seen: np.ndarray | None = None  # bool [U, I]: items not to recommend again; default levels > 0

    def __post_init__(self) -> None:
        n_users, n_items = len(self.user_ids), len(self.item_ids)
        if n_users == 0 or n_items == 0:
            raise ValueError("an interaction matrix needs at least one user and one item")
        for name, ids in (("user", self.user_ids), ("item", self.item_ids)):
            if len(set(ids)) != len(ids):
                raise ValueError(f"{name} ids must be unique")
        if self.levels.shape != (n_users, n_items):
            raise ValueError(f"levels must be [{n_users}, {n_items}]; got {self.levels.shape}")
        if self.levels.min() < 0 or self.levels.max() > len(self.level_names):
            raise ValueError(f"levels must lie in 0..{len(self.level_names)} (one per level name)")
        if self.propensity.shape not in ((n_items,), (n_users, n_items)):
            raise ValueError(f"propensity must be [{n_items}] or [{n_users}, {n_items}]; got {self.propensity.shape}")
        if not ((self.propensity >= 0) & (self.propensity <= 1)).all():
            raise ValueError("propensities must lie in [0, 1]")
        if self.seen is None:
            self.seen = self.levels > 0
        elif self.seen.shape != self.levels.shape:
            raise ValueError(f"seen must be [{n_users}, {n_items}]; got {self.seen.shape}")

    @property
    def positives(self) -> np.ndarray:
        """bool [U, I]: the pair reached the first level (the positive of pointwise losses)."""
        return self.levels > 0

    def pair_propensity(self) -> np.ndarray:
        """float32 [U, I]: the exposure propensity of every pair (per-item ones broadcast)."""
        return np.broadcast_to(self.propensity, self.levels.shape)


def check_size(n_users: int, n_items: int, max_cells: int) -> None:
    if n_users * n_items > max_cells:
        raise ValueError(
            f"{n_users} users x {n_items} items = {n_users * n_items} cells exceeds max_matrix_cells={max_cells}; "
            "the dense full-catalog loss needs that many cells (raise the limit if memory allows)"
        )


def popularity_propensities(positives: np.ndarray, power: float = 0.5) -> np.ndarray:
    """Per-item exposure propensity (n_positives(i) / max_j n_positives(j)) ** power (Saito et al. 2020).

    Items without a positive get 0 (the losses clip propensities from below).
    """
    counts = positives.sum(axis=0).astype(np.float64)
    if counts.max() == 0:
        raise ValueError("no positive feedback: popularity propensities are undefined")
    return ((counts / counts.max()) ** power).astype(np.float32)


def interactions_from_results(
    results: pl.DataFrame, position_propensities: Sequence[float], level_names: Sequence[str], max_cells: int
) -> InteractionMatrix:
    """The (user, document) matrix of the ingested `results` table (docs/contracts.md).

    A pair's level is the highest level (`level_names`, e.g. click < love) any of its shown
    rows reached; its exposure propensity is the chance the user examined it at least once,
    1 - prod over its shown rows of (1 - theta[position]) (independent examinations; positions
    beyond the curve use its last theta). Every row needs a user id: drop anonymous rows first.
    """
    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results lack column(s) {missing}; they have {results.columns}")
    if results.is_empty():
        raise ValueError("no shown results to learn recommendations from")
    if results["user_id"].null_count() or results["doc_id"].null_count():
        raise ValueError("every row needs a user_id and a doc_id (filter anonymous rows first)")
    theta = np.asarray(position_propensities, dtype=np.float64)
    if theta.ndim != 1 or len(theta) == 0 or not ((theta > 0) & (theta <= 1)).all():
        raise ValueError("position propensities must be a non-empty sequence of theta in (0, 1]")
    positions = results["position"].cast(pl.Int64).to_numpy()
    if (positions < 1).any():
        raise ValueError("positions are 1-based")
    row_levels = level_labels(results["actions"].to_list(), list(level_names)).sum(axis=1)
    row_theta = theta[np.minimum(positions, len(theta)) - 1]
    pairs = (
        pl.DataFrame(
            {
                "user_id": results["user_id"].cast(pl.String),
                "doc_id": results["doc_id"].cast(pl.String),
                "level": row_levels.astype(np.int8),
                # theta = 1 would give log(0); a pair examined for sure still comes out at ~1.
                "log_unexamined": np.log1p(-np.minimum(row_theta, 1 - 1e-12)),
            }
        )
        .group_by("user_id", "doc_id")
        .agg(pl.col("level").max(), pl.col("log_unexamined").sum())
    )
    user_ids = sorted(pairs["user_id"].unique().to_list())
    item_ids = sorted(pairs["doc_id"].unique().to_list())
    check_size(len(user_ids), len(item_ids), max_cells)
    user_row = {u: i for i, u in enumerate(user_ids)}
    item_col = {d: i for i, d in enumerate(item_ids)}
    rows = np.fromiter((user_row[u] for u in pairs["user_id"]), dtype=np.int64, count=len(pairs))
    cols = np.fromiter((item_col[d] for d in pairs["doc_id"]), dtype=np.int64, count=len(pairs))
    levels = np.zeros((len(user_ids), len(item_ids)), dtype=np.int8)
    levels[rows, cols] = pairs["level"].to_numpy()
    propensity = np.zeros(levels.shape, dtype=np.float32)
    propensity[rows, cols] = -np.expm1(pairs["log_unexamined"].to_numpy())
    return InteractionMatrix(user_ids, item_ids, levels, list(level_names), propensity)


def debiased_popularity(data: InteractionMatrix, clip: float) -> np.ndarray:
    """Per item, the inverse-propensity estimate of the share of users it is relevant to:
    mean over users of [level >= 1] / max(theta_ui, clip), capped at 1.

    The raw positive count would rank by past exposure; dividing by the exposure propensity
    credits items that were relevant whenever they were shown (the cold-start ranking).
    """
    weighted = data.positives / np.maximum(data.pair_propensity(), clip)
    return np.minimum(weighted.mean(axis=0), 1.0).astype(np.float32)
