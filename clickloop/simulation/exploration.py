"""Randomized result lists (interventions) and the display propensities they imply."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Reordering:
    """For each page: `order[q, p]` is the 0-based logging rank shown at position p, and
    `propensity[q, p]` the probability that the randomization put that result at position p."""

    order: np.ndarray
    propensity: np.ndarray


def identity(n_pages: int, width: int) -> Reordering:
    order = np.broadcast_to(np.arange(width), (n_pages, width)).copy()
    return Reordering(order, np.ones((n_pages, width)))


def shuffle_top_n(lengths: np.ndarray, width: int, n: int, rng: np.random.Generator) -> Reordering:
    """Uniformly permute the top min(n, length) results of each page; each of them lands at each
    of those positions with probability 1/min(n, length)."""
    reordering = identity(len(lengths), width)
    span = np.minimum(lengths, n)[:, None]
    ranks = reordering.order
    # Random keys in [0, 1) sort the shuffled span first; keys 1 + rank keep the rest in place.
    keys = np.where(ranks < span, rng.random(ranks.shape), 1.0 + ranks)
    order = np.argsort(keys, axis=1, kind="stable")
    propensity = np.where(ranks < span, 1.0 / np.maximum(span, 1), 1.0)
    return Reordering(order, propensity)


def swap_pairs(lengths: np.ndarray, width: int, n: int, rng: np.random.Generator) -> Reordering:
    """Within the top min(n, length), swap each adjacent pair (1,2), (3,4), ... with probability 1/2,
    independently; a paired result is at either of its pair's positions with probability 1/2."""
    reordering = identity(len(lengths), width)
    order, propensity = reordering.order, reordering.propensity
    span = np.minimum(lengths, n)
    for first in range(0, min(n, width) - 1, 2):
        paired = first + 1 < span
        swap = paired & (rng.random(len(lengths)) < 0.5)
        order[swap, first], order[swap, first + 1] = first + 1, first
        propensity[paired, first:first + 2] = 0.5
    return reordering


def randomize(scheme: str, lengths: np.ndarray, width: int, n: int, rng: np.random.Generator) -> Reordering:
    """The reordering of `scheme` ("none", "swap_pairs" or "shuffle_top_n") for pages of `lengths` results."""
    if scheme == "none":
        return identity(len(lengths), width)
    if scheme == "swap_pairs":
        return swap_pairs(lengths, width, n, rng)
    if scheme == "shuffle_top_n":
        return shuffle_top_n(lengths, width, n, rng)
    raise ValueError(f"unknown exploration scheme {scheme!r}")
