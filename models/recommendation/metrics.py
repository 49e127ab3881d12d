"""Per-user ranking metrics of the unbiased-recommendation protocol (Saito et al., WSDM 2020).

For each user the candidate items (e.g. that user's randomly chosen test songs) are ranked by
score, best first; ties keep the candidates' input order (a stable sort), so a constant scorer
is judged on the order the data came in, not on an optimistic tie-break.

With binary gains g (1 for a positive item):
- DCG@K    = sum over ranks r <= K of g_r / log2(r + 1)   (not normalised, as in the paper)
- Recall@K = sum_{r <= K} g_r / sum of all g                (the share of the user's positives in the top K)
- MAP@K    = sum_{r <= K} [g_r > 0] * Precision@r / min(K, number of positives)

Users without a positive candidate are skipped for every metric (their Recall is undefined and
counting them as zero would only rescale DCG and MAP by the share of such users).

Gains may be non-binary: with g = 1 / propensity on positives, DCG@K is the inverse-propensity
weighted DCG that estimates the DCG under uniform exposure from missing-not-at-random data
(used for validation on training data); Recall becomes the weighted share; MAP uses only
whether g > 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_CUTOFFS = (1, 3, 5)
METRIC_NAMES = ("DCG", "Recall", "MAP")


def user_metrics(scores: np.ndarray, gains: np.ndarray, cutoffs: Sequence[int] = DEFAULT_CUTOFFS) -> dict[str, float]:
    """DCG@K, Recall@K and MAP@K of one user's candidates; keys like "DCG@5".

    Raises ValueError when the user has no positive candidate (callers skip such users).
    """
    scores, gains = np.asarray(scores, dtype=np.float64), np.asarray(gains, dtype=np.float64)
    if scores.shape != gains.shape or scores.ndim != 1:
        raise ValueError(f"scores and gains must be 1-d arrays of one length; got {scores.shape} and {gains.shape}")
    if (gains < 0).any() or not np.isfinite(scores).all():
        raise ValueError("gains must be non-negative and scores finite")
    relevant_count = int((gains > 0).sum())
    if relevant_count == 0:
        raise ValueError("the user has no positive candidate")
    ranked = gains[np.argsort(-scores, kind="stable")]
    hits = ranked > 0
    discounts = 1.0 / np.log2(np.arange(2, len(ranked) + 2))
    precision_at_rank = np.cumsum(hits) / np.arange(1, len(ranked) + 1)
    metrics = {}
    for k in cutoffs:
        if k < 1:
            raise ValueError(f"cutoffs must be >= 1; got {k}")
        metrics[f"DCG@{k}"] = float((ranked[:k] * discounts[:k]).sum())
        metrics[f"Recall@{k}"] = float(ranked[:k].sum() / gains.sum())
        metrics[f"MAP@{k}"] = float((precision_at_rank[:k] * hits[:k]).sum() / min(k, relevant_count))
    return metrics


def mean_metrics(
    users: Iterable[tuple[np.ndarray, np.ndarray]], cutoffs: Sequence[int] = DEFAULT_CUTOFFS
) -> dict[str, float]:
    """Each metric averaged over the users with at least one positive; `users` yields (scores, gains).

    The result also carries "users" (how many were averaged) and "skipped_users".
    """
    totals: dict[str, float] = {}
    counted = skipped = 0
    for scores, gains in users:
        if not (np.asarray(gains) > 0).any():
            skipped += 1
            continue
        for name, value in user_metrics(scores, gains, cutoffs).items():
            totals[name] = totals.get(name, 0.0) + value
        counted += 1
    if counted == 0:
        raise ValueError("no user has a positive candidate: the metrics are undefined")
    return {**{name: total / counted for name, total in totals.items()}, "users": counted, "skipped_users": skipped}
