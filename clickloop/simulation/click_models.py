"""Click models over a batch of result pages, as [queries, positions] arrays.

Every function takes `shown` (a bool mask: position holds a result) and returns arrays of
the same shape, False/0 where nothing was shown, so pages shorter than top_k need no care.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clickloop.beir import Qrels
from clickloop.simulation.config import MAX_GRADE


def relevance_grades(qrels: Qrels) -> dict[str, dict[str, int]]:
    """BEIR scores as grades 0-4: `round(4 * score / max_score)` over the whole qrels (docs/contracts.md).

    Rounding is Python's (half to even); non-positive scores are grade 0. Unjudged pairs are
    absent here and read as grade 0 by the simulator.
    """
    max_score = max((s for docs in qrels.values() for s in docs.values()), default=0)
    if max_score <= 0:
        raise ValueError("qrels hold no positive relevance score, so no grade can be derived")
    return {
        qid: {doc_id: max(0, round(MAX_GRADE * score / max_score)) for doc_id, score in docs.items()}
        for qid, docs in qrels.items()
    }


def examination_curve(examination: Sequence[float], eta: float, length: int) -> np.ndarray:
    """Examination probability at ranks 1..length: the configured curve (its last value repeated
    beyond its end) raised to `eta`."""
    values = np.asarray(examination, dtype=float)
    if length > len(values):
        values = np.concatenate([values, np.full(length - len(values), values[-1])])
    return values[:length] ** eta


@dataclass(frozen=True)
class PageBehaviour:
    """What the users did on a batch of pages; every array is [queries, positions]."""

    examination_prob: np.ndarray
    examined: np.ndarray
    clicked: np.ndarray


def position_based(
    examination_prob: np.ndarray, click_prob: np.ndarray, shown: np.ndarray, rng: np.random.Generator
) -> PageBehaviour:
    """Position-based model: a result is examined with its position's probability, independently of
    the others, and an examined result is clicked with its click probability."""
    examination_prob = np.where(shown, examination_prob, 0.0)
    examined = rng.random(shown.shape) < examination_prob
    clicked = examined & (rng.random(shown.shape) < click_prob)
    return PageBehaviour(examination_prob, examined, clicked)


def cascade(click_prob: np.ndarray, shown: np.ndarray, rng: np.random.Generator) -> PageBehaviour:
    """Cascade model (Craswell et al., 2008): the user scans top-down, clicks each result with its
    click probability, and leaves after the first click (or at the end of the page).

    So position k is examined exactly when nothing above it was clicked, with probability
    prod_{j<k} (1 - click_prob_j).
    """
    click_prob = np.where(shown, click_prob, 0.0)
    not_clicked_above = np.cumprod(1.0 - click_prob, axis=1)
    examination_prob = np.where(shown, np.hstack([np.ones((len(shown), 1)), not_clicked_above[:, :-1]]), 0.0)
    would_click = (rng.random(shown.shape) < click_prob) & shown
    # Examined: at or above the first would-be click; clicked: that first one only.
    clicks_so_far = np.cumsum(would_click, axis=1)
    examined = shown & ((clicks_so_far == 0) | ((clicks_so_far == 1) & would_click))
    clicked = would_click & (clicks_so_far == 1)
    return PageBehaviour(examination_prob, examined, clicked)


def loves(clicked: np.ndarray, love_prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A love follows some clicks, with the clicked result's love probability (never without a click)."""
    return clicked & (rng.random(clicked.shape) < love_prob)
