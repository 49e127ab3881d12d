"""Choosing a fusion pipeline's `auto` settings (weights, PRF, where fusion sits) on held-out queries.

Every candidate is scored by nDCG@10 per held-out query against the feedback labels. The weights run
over a grid on the simplex, corners included: a corner weighs one retriever alone, a legitimate pick
that means "do not fuse" when the other retriever adds nothing on this collection. Of the candidates
whose mean reaches the best mean less `simpler_within` of its standard error (the one-standard-error
rule), the simplest wins (fewest retrievers, then fewest PRFs, then the plainest placement): a more
complex pipeline must earn its cost beyond the noise of so few queries. The threshold is the best
candidate's standard error, not each candidate's paired difference to it: with the latter a noisy
candidate qualifies more easily than a steady one, which rewards exactly the variance the rule guards
against. Every row also records the paired difference to the best and its standard error.

Labels speak only of shown documents. `unlabelled: condensed` scores each ranking with the unlabelled
documents removed (Sakai's condensed lists), so a retriever is not punished for finding documents the
logging ranker never showed; `zero` counts them irrelevant, as the trainers' validation does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from indexing.settings import AUTO, FUSION_POINTS, PipelineSpec
from models.feedback_queries import ndcg_at_10

UNLABELLED = ("condensed", "zero")
# The plainer placement first: `after` runs each PRF on its own, `before` and `both` fuse twice.
PLACEMENT_ORDER = {"after": 0, "before": 1, "both": 2}

Labels = Mapping[str, float]  # doc id -> label: > 0 relevant (its gain), 0 not relevant, NaN not known
RankFn = Callable[[PipelineSpec], Mapping[str, Sequence[str]]]  # spec -> query id -> doc ids, best first


@dataclass
class SelectionConfig:
    """How candidates are scored and one chosen."""

    weight_step: float = 0.1  # the simplex grid's step (0.1: 11 points for two retrievers)
    unlabelled: str = "condensed"  # condensed | zero: how a ranked document without a label counts
    simpler_within: float = 1.0  # the best candidate's standard errors a simpler pipeline may trail it by

    def __post_init__(self) -> None:
        steps = 1 / self.weight_step if self.weight_step > 0 else math.inf
        if not math.isfinite(steps) or abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"weight_step must divide 1, got {self.weight_step}")
        if self.unlabelled not in UNLABELLED:
            raise ValueError(f"unlabelled must be one of {UNLABELLED}, got {self.unlabelled!r}")
        if self.simpler_within < 0:
            raise ValueError(f"simpler_within must be >= 0, got {self.simpler_within}")


@dataclass(frozen=True)
class Candidate:
    """One point of the search: a weight per mode of the requested pipeline, PRF modes, placement."""

    weights: tuple[float, ...]
    prf: tuple[str, ...]
    fusion: str

    def spec(self, base: PipelineSpec) -> PipelineSpec:
        """The pipeline it runs: the modes weighted 0 are left out (a corner runs one retriever)."""
        kept = [(m, w) for m, w in zip(base.modes, self.weights, strict=True) if w > 0]
        return PipelineSpec([m for m, _ in kept], weights=[w for _, w in kept], prf=list(self.prf),
                            fusion=self.fusion, method=base.method, depth=base.depth, rrf_k=base.rrf_k)

    def complexity(self) -> tuple[int, int, int]:
        n_modes = sum(w > 0 for w in self.weights)
        placement = PLACEMENT_ORDER[self.fusion] if self.prf and n_modes > 1 else 0
        return n_modes, len(self.prf), placement


@dataclass
class Scored:
    candidate: Candidate
    per_query: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.per_query.mean())

    @property
    def se(self) -> float:
        return standard_error(self.per_query)


@dataclass
class Selection:
    chosen: Scored
    best: Scored
    scored: list[Scored]
    query_ids: list[str]


def standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def simplex_grid(n_modes: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector of `n_modes` non-negative multiples of `step` summing to 1, corners included."""
    n = round(1 / step)
    return [
        tuple(round(part / n, 10) for part in parts)
        for parts in itertools.product(range(n + 1), repeat=n_modes)
        if sum(parts) == n
    ]


def candidates(spec: PipelineSpec, has_prf: Callable[[str], bool], own_feedback_only: Callable[[str], bool],
               step: float) -> list[Candidate]:
    """The candidates for `spec`'s `auto` fields (explicit fields stay as given), without duplicates:
    PRF on a mode weighted 0 changes nothing, nor does the placement of PRF over one retriever.
    `own_feedback_only(mode)`: its PRF reads only its own top documents (RM3), so it cannot follow a fusion."""
    if spec.weights == AUTO:
        grid = simplex_grid(len(spec.modes), step)
    else:
        fixed = spec.weights or [1.0] * len(spec.modes)
        grid = [tuple(w / sum(fixed) for w in fixed)]
    out: dict[Candidate, None] = {}
    for weights in grid:
        active = [m for m, w in zip(spec.modes, weights, strict=True) if w > 0]
        if spec.prf == AUTO:
            options = [m for m in active if has_prf(m)]
            prf_sets = [s for r in range(len(options) + 1) for s in itertools.combinations(options, r)]
        else:
            prf_sets = [tuple(m for m in spec.prf if m in active)]
        for prf in prf_sets:
            placements = FUSION_POINTS if spec.fusion == AUTO else (spec.fusion,)
            if spec.fusion == AUTO and (not prf or len(active) == 1):
                placements = ("after",)
            for fusion in placements:
                if fusion != "after" and len(active) > 1 and any(own_feedback_only(m) for m in prf):
                    continue
                out[Candidate(weights, prf, fusion)] = None
    return list(out)


def query_ndcg(ranking: Sequence[str], labels: Labels, unlabelled: str) -> float:
    """nDCG@10 of one ranking against the labels; unlabelled documents dropped (condensed) or counted 0."""
    def known(doc_id: str) -> bool:
        return doc_id in labels and not math.isnan(labels[doc_id])

    ranked = [d for d in ranking if known(d)] if unlabelled == "condensed" else list(ranking)
    gains = [max(labels[d], 0.0) if known(d) else 0.0 for d in ranked]
    ideal = [g for g in labels.values() if not math.isnan(g) and g > 0]
    return ndcg_at_10(np.asarray(gains, dtype=float), ideal)


def select(spec: PipelineSpec, rank: RankFn, labels: Mapping[str, Labels], has_prf: Callable[[str], bool],
           own_feedback_only: Callable[[str], bool], config: SelectionConfig) -> Selection:
    """Score every candidate for `spec` on the queries of `labels` (query id -> labels) and choose one."""
    query_ids = sorted(labels)
    if not query_ids:
        raise ValueError("no held-out query to choose the pipeline on")
    scored = []
    for candidate in candidates(spec, has_prf, own_feedback_only, config.weight_step):
        rankings = rank(candidate.spec(spec))
        per_query = np.array([query_ndcg(rankings.get(q, []), labels[q], config.unlabelled) for q in query_ids])
        scored.append(Scored(candidate, per_query))
    best = max(scored, key=lambda s: (s.mean, tuple(-c for c in s.candidate.complexity())))
    floor = best.mean - config.simpler_within * best.se
    near = [s for s in scored if s.mean >= floor]
    chosen = min(near, key=lambda s: (s.candidate.complexity(), -s.mean))
    return Selection(chosen, best, scored, query_ids)


def report(selection: Selection, spec: PipelineSpec) -> dict:
    """The selection as plain data: the chosen spec, its score, the best, and every grid point."""
    best = selection.best

    def row(s: Scored) -> dict:
        diff = best.per_query - s.per_query
        return {"weights": list(s.candidate.weights), "prf": list(s.candidate.prf), "fusion": s.candidate.fusion,
                "ndcg@10": s.mean, "se": s.se, "trails_best_by": float(diff.mean()),
                "trails_best_se": standard_error(diff)}

    chosen_spec = selection.chosen.candidate.spec(spec)
    return {
        "chosen": {"modes": chosen_spec.modes, "weights": chosen_spec.weights, "prf": chosen_spec.prf,
                   "fusion": chosen_spec.fusion, "method": chosen_spec.method, "depth": chosen_spec.depth,
                   "rrf_k": chosen_spec.rrf_k},
        "validation": {"queries": len(selection.query_ids), **row(selection.chosen)},
        "best": row(best),
        "grid": [row(s) for s in selection.scored],
    }
