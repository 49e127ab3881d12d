"""Position-bias propensities: how likely a user examines the result shown at each position.

Both estimators assume the position-based click model (PBM): P(click | q, d, k) = θ_k · γ_qd,
examination θ_k depends only on the shown position k (and the context, e.g. the device),
relevance γ_qd only on the query and document.

- `HarvestingEstimator` (intervention harvesting; Agarwal et al., WSDM 2019; Fang et al.,
  SIGIR 2019): when the same (query, document) was shown at two positions k and k' — because
  exploration shuffled or swapped results, or rankers changed — the click rates of that pair
  at k and k' share γ_qd, so summed over all such pairs their ratio estimates θ_k' / θ_k.
  The pairwise log-ratios are combined into one curve by weighted least squares with
  θ_1 = 1 (inverse-variance weights), which checks that exploration links every position and
  gives a start; the curve is then refined to the maximum-likelihood PBM fit with per-pair
  relevance (the EM below), which weighs every harvested pair by what it actually tells
  (Agarwal et al.'s extremum estimator does the same over interventional sets). Only
  relative propensities are identified this way.
- `RegressionEMEstimator` (Wang et al., WSDM 2018): EM over the latent examination and
  relevance of each shown result. The M-step re-estimates θ_k in closed form and γ_qd either
  by a logistic regression on (query, document) features with the expected relevance as soft
  targets (the paper's regression step; it identifies θ even when each pair was always shown
  at one position) or, without features, per pair (identified only by pairs shown at
  several positions; positions without such pairs keep their naive click-rate start value).
- `LatentClassEMEstimator`: the same EM with relevance restricted to a few latent classes:
  each (query, document) belongs to one of G classes with click-on-examination γ_g shared by
  every position, in shares π that depend on the position the pair is usually shown at. A
  deterministic logging ranker confounds position with relevance, so per-pair γ cannot tell
  them apart and features rarely explain relevance well enough; classes can, because a
  relevant document is clicked at the same γ_g wherever it is examined, so the click rates
  of each class scale with θ_k from position to position. The assumptions are that relevance
  comes in a few levels (graded judgments do) and that examination does not rise down the
  list; G is chosen by BIC.

`estimate_propensities(results, config)` picks one: harvesting when the logs carry enough
exploration and it identifies every position; otherwise regression EM when relevance
features are given and latent-class EM when they are not.

Input is the ingested `results` table (docs/contracts.md): one row per shown result with at
least `user_query`, `doc_id`, `position`, `clicked`; `exploration` and `device` are used when
present. Rows shown below `max_position` are left out of the fit; lookups there use θ_K.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.linear_model import LogisticRegression

from clickloop.atomic import write_json

RESULT_COLUMNS = ("user_query", "doc_id", "position", "clicked")
QUERY = "query"  # the normalised query text, the key of every per-(query, document) statistic
ESTIMATORS = ("auto", "harvesting", "regression_em", "latent_class_em")


@dataclass
class PropensityConfig:
    """The `feedback.propensity` params section."""

    estimator: str = "auto"  # "auto", "harvesting", "regression_em" or "latent_class_em"
    max_position: int = 10  # θ is estimated for positions 1..max_position
    context_column: str | None = "device"  # per-context curves when the logs carry several values
    min_context_results: int = 5_000  # a context with fewer shown results uses the pooled curve
    min_exploration_results: int = 5_000  # "auto" harvests only from at least this many explored rows
    em_max_iterations: int = 1_000
    em_tolerance: float = 1e-7  # stop when no θ_k moves by more than this in one iteration
    em_regression_c: float = 1.0  # inverse L2 strength of the relevance regression
    max_latent_classes: int = 4  # latent-class EM tries 1..this many relevance classes (BIC picks)
    probability_floor: float = 1e-6  # keeps θ and γ inside (0, 1) so the EM's logs stay finite


class PropensityError(ValueError):
    """The results cannot give a propensity curve: bad input or unidentifiable positions."""


@dataclass(frozen=True)
class PropensityCurve:
    """Examination propensity per position 1..K, relative to position 1 (θ_1 = 1).

    `absolute` holds the fitted θ_k on their own scale where the estimator gives one (regression
    EM); under the PBM clicks fix θ only up to a constant, so treat it as indicative.
    `by_context` maps a context value (e.g. `mobile`) to its own curve.
    """

    relative: tuple[float, ...]
    estimator: str
    n_results: int
    absolute: tuple[float, ...] | None = None
    context_column: str | None = None
    by_context: dict[str, PropensityCurve] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def max_position(self) -> int:
        return len(self.relative)

    def theta(self, positions: np.ndarray | pl.Series, contexts: np.ndarray | pl.Series | None = None) -> np.ndarray:
        """Relative θ for each (1-based position, context); unknown contexts use the pooled curve."""
        index = np.minimum(np.asarray(positions, dtype=np.int64), self.max_position) - 1
        if (index < 0).any():
            raise PropensityError("positions are 1-based: got a position below 1")
        theta = np.asarray(self.relative)[index]
        if contexts is None or not self.by_context:
            return theta
        contexts = np.asarray(contexts, dtype=object)
        for value, curve in self.by_context.items():
            rows = contexts == value
            theta[rows] = np.asarray(curve.relative)[index[rows]]
        return theta

    def to_dict(self) -> dict[str, Any]:
        # "propensities" is the key the evaluate stage reads.
        return {
            "propensities": list(self.relative),
            "absolute": None if self.absolute is None else list(self.absolute),
            "estimator": self.estimator,
            "n_results": self.n_results,
            "context_column": self.context_column,
            "by_context": {value: curve.to_dict() for value, curve in self.by_context.items()},
            "diagnostics": self.diagnostics,
        }

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> PropensityCurve:
        try:
            return cls(
                relative=tuple(float(t) for t in payload["propensities"]),
                estimator=str(payload["estimator"]),
                n_results=int(payload["n_results"]),
                absolute=None if payload.get("absolute") is None else tuple(float(t) for t in payload["absolute"]),
                context_column=payload.get("context_column"),
                by_context={v: cls.from_dict(c) for v, c in (payload.get("by_context") or {}).items()},
                diagnostics=dict(payload.get("diagnostics") or {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PropensityError(f"not a propensity curve: {e!r}") from None

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Write atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> PropensityCurve:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def normalized_query(column: str = "user_query") -> pl.Expr:
    """The query key: case- and whitespace-insensitive text (query_id is per issued search)."""
    return pl.col(column).str.to_lowercase().str.strip_chars().str.replace_all(r"\s+", " ")


def validate_results(results: pl.DataFrame, required: tuple[str, ...] = RESULT_COLUMNS) -> None:
    """Raise `PropensityError` on a results table the feedback models cannot use."""
    if not isinstance(results, pl.DataFrame):
        raise PropensityError(f"results must be a polars DataFrame, got {type(results).__name__}")
    missing = [c for c in required if c not in results.columns]
    if missing:
        raise PropensityError(f"results lack column(s) {missing}; have {results.columns}")
    if results.is_empty():
        raise PropensityError("results are empty: no shown results to learn from")
    nulls = {c: n for c in required if (n := results[c].null_count())}
    if nulls:
        raise PropensityError(f"results have nulls in required columns: {nulls}")
    if results["position"].min() < 1:
        raise PropensityError("results have positions below 1 (positions are 1-based)")


def position_groups(results: pl.DataFrame, max_position: int) -> pl.DataFrame:
    """Shown results aggregated per (query, doc_id, position): `n` shown, `c` clicked."""
    return (
        results.filter(pl.col("position") <= max_position)
        .group_by(normalized_query().alias(QUERY), "doc_id", "position")
        .agg(pl.len().alias("n"), pl.col("clicked").cast(pl.Int64).sum().alias("c"))
        .sort(QUERY, "doc_id", "position")
    )


class HarvestingEstimator:
    """Relative propensities from (query, document) pairs shown at several positions."""

    name = "harvesting"

    def __init__(self, config: PropensityConfig) -> None:
        self.config = config

    def fit(self, results: pl.DataFrame) -> PropensityCurve:
        validate_results(results)
        k = self.config.max_position
        groups = position_groups(results, k)
        left = groups.rename({"position": "pos_a", "n": "n_a", "c": "c_a"})
        right = groups.rename({"position": "pos_b", "n": "n_b", "c": "c_b"})
        # Weighting each pair by the harmonic mean of its two counts keeps the ratio unbiased
        # (both sides share Σ w·γ) while pairs seen once at a position count for little.
        pair_sets = (
            left.join(right, on=[QUERY, "doc_id"])
            .filter(pl.col("pos_a") < pl.col("pos_b"))
            .with_columns((pl.col("n_a") * pl.col("n_b") / (pl.col("n_a") + pl.col("n_b"))).alias("w"))
            .group_by("pos_a", "pos_b")
            .agg(
                (pl.col("w") * pl.col("c_a") / pl.col("n_a")).sum().alias("rate_a"),
                (pl.col("w") * pl.col("c_b") / pl.col("n_b")).sum().alias("rate_b"),
                pl.col("c_a").sum().alias("clicks_a"),
                pl.col("c_b").sum().alias("clicks_b"),
                pl.len().alias("n_pairs"),
            )
            .filter((pl.col("clicks_a") > 0) & (pl.col("clicks_b") > 0))
        )
        a = pair_sets["pos_a"].to_numpy() - 1
        b = pair_sets["pos_b"].to_numpy() - 1
        _require_connected(a, b, k)
        log_ratio = np.log(pair_sets["rate_b"].to_numpy() / pair_sets["rate_a"].to_numpy())
        # Delta-method variance of a log click-count ratio: 1/clicks_a + 1/clicks_b.
        weight = 1.0 / (1.0 / pair_sets["clicks_a"].to_numpy() + 1.0 / pair_sets["clicks_b"].to_numpy())
        design = np.zeros((len(a), k))
        design[np.arange(len(a)), b] = 1.0
        design[np.arange(len(a)), a] -= 1.0
        sqrt_w = np.sqrt(weight)[:, None]
        # Column 0 (log θ_1) is dropped: pinning it to 0 makes the system full rank.
        log_theta, *_ = np.linalg.lstsq(design[:, 1:] * sqrt_w, log_ratio * sqrt_w[:, 0], rcond=None)
        pairwise = np.exp(np.concatenate([[0.0], log_theta]))
        # The per-pair model fixes θ only up to scale; halving keeps the start inside (0, 1).
        fit = PositionBasedEM(groups, self.config).fit(start=pairwise * 0.5)
        return PropensityCurve(
            relative=_as_tuple(fit.theta / fit.theta[0]),
            estimator=self.name,
            n_results=results.height,
            diagnostics={
                "position_pairs": len(a),
                "harvested_document_pairs": int(pair_sets["n_pairs"].sum()),
                "pairwise_curve": [float(t) for t in pairwise],
                **fit.diagnostics,
            },
        )


def _require_connected(a: np.ndarray, b: np.ndarray, k: int) -> None:
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(k, k))
    _, component = connected_components(graph, directed=False)
    unlinked = [p + 1 for p in range(k) if component[p] != component[0]]
    if unlinked:
        raise PropensityError(
            f"harvesting cannot place position(s) {unlinked} relative to position 1: no (query, document) "
            "was shown and clicked both there and at a linked position"
        )


@dataclass(frozen=True)
class EMFit:
    theta: np.ndarray  # examination by position, on the EM's own (absolute) scale
    diagnostics: dict[str, Any]


class PositionBasedEM:
    """EM for P(click) = θ_position · γ_(query, doc) over `position_groups` counts (Wang et al., 2018).

    The E-step splits each group's non-clicks into "not examined" and "examined, not relevant";
    the M-step re-estimates θ_k in closed form and γ per pair, or through `regression` when
    given (a model refitted to the expected relevant counts).
    """

    def __init__(self, groups: pl.DataFrame, config: PropensityConfig) -> None:
        self.config = config
        self.pairs = groups.select(QUERY, "doc_id").unique(maintain_order=True).with_row_index("pair")
        groups = groups.join(self.pairs, on=[QUERY, "doc_id"])
        self.pair = groups["pair"].to_numpy()
        self.pos = groups["position"].to_numpy() - 1
        self.n = groups["n"].to_numpy().astype(float)
        self.c = groups["c"].to_numpy().astype(float)
        self.n_pair = np.bincount(self.pair, weights=self.n)
        self.n_pos = np.bincount(self.pos, weights=self.n, minlength=config.max_position)
        if (self.n_pos == 0).any():
            empty = [p + 1 for p in np.flatnonzero(self.n_pos == 0)]
            raise PropensityError(f"the EM needs results at every position; none at {empty}")

    def click_rate_curve(self) -> np.ndarray:
        ctr = np.bincount(self.pos, weights=self.c, minlength=self.config.max_position) / self.n_pos
        return ctr / max(ctr[0], self.config.probability_floor)

    def fit(self, start: np.ndarray, regression: _SoftLogisticRegression | None = None) -> EMFit:
        cfg, floor = self.config, self.config.probability_floor
        pair, pos, n, c = self.pair, self.pos, self.n, self.c
        theta = np.clip(np.asarray(start, dtype=float), floor, 1 - floor)
        gamma = np.clip(np.bincount(pair, weights=c) / np.bincount(pair, weights=n * theta[pos]), floor, 1 - floor)
        iterations, moved = 0, math.inf
        while iterations < cfg.em_max_iterations and moved >= cfg.em_tolerance:
            iterations += 1
            t, g = theta[pos], gamma[pair]
            no_click = 1 - t * g
            examined = c + (n - c) * t * (1 - g) / no_click
            relevant = c + (n - c) * (1 - t) * g / no_click
            new_theta = np.bincount(pos, weights=examined, minlength=cfg.max_position) / self.n_pos
            new_theta = np.clip(new_theta, floor, 1 - floor)
            expected_relevant = np.bincount(pair, weights=relevant)
            if regression is None:
                gamma = expected_relevant / self.n_pair
            else:
                gamma = regression.refit(expected_relevant, self.n_pair)
            gamma = np.clip(gamma, floor, 1 - floor)
            moved = float(np.max(np.abs(new_theta - theta)))
            theta = new_theta
        t, g = theta[pos], gamma[pair]
        log_likelihood = float(np.sum(c * np.log(t * g) + (n - c) * np.log(1 - t * g)))
        return EMFit(theta, {
            "iterations": iterations,
            "converged": moved < cfg.em_tolerance,
            "log_likelihood": log_likelihood,
            "n_pairs": self.pairs.height,
            # Per-pair relevance identifies θ only through pairs shown at several positions.
            "multi_position_pairs": int((np.bincount(pair) > 1).sum()),
        })


class RegressionEMEstimator:
    """Regression EM (Wang et al., WSDM 2018) over P(click) = θ_position · γ_(query, doc).

    `features`, when given, has `query` (normalised text, see `normalized_query`), `doc_id`
    and numeric feature columns for every shown pair; γ is then a logistic regression on
    them. Without features γ is estimated per pair.
    """

    name = "regression_em"

    def __init__(self, config: PropensityConfig, features: pl.DataFrame | None = None) -> None:
        self.config = config
        self.features = features

    def fit(self, results: pl.DataFrame) -> PropensityCurve:
        validate_results(results)
        em = PositionBasedEM(position_groups(results, self.config.max_position), self.config)
        regression = self._relevance_regression(em.pairs)
        # Start from the naive click-rate curve: where the data cannot identify θ, that is
        # where the per-pair model leaves it.
        fit = em.fit(start=em.click_rate_curve(), regression=regression)
        return PropensityCurve(
            relative=_as_tuple(fit.theta / fit.theta[0]),
            absolute=_as_tuple(fit.theta) if regression is not None else None,
            estimator=self.name,
            n_results=results.height,
            diagnostics={"relevance_model": "per_pair" if regression is None else "regression", **fit.diagnostics},
        )

    def _relevance_regression(self, pairs: pl.DataFrame) -> _SoftLogisticRegression | None:
        if self.features is None:
            return None
        feature_columns = [c for c in self.features.columns if c not in (QUERY, "doc_id")]
        if not feature_columns or not {QUERY, "doc_id"} <= set(self.features.columns):
            raise PropensityError(
                f"features need `{QUERY}`, `doc_id` and numeric columns; have {self.features.columns}"
            )
        joined = pairs.join(self.features.unique([QUERY, "doc_id"]), on=[QUERY, "doc_id"], how="left").sort("pair")
        lacking = joined.filter(pl.any_horizontal(pl.col(feature_columns).is_null())).height
        if lacking:
            raise PropensityError(f"features are missing for {lacking} of {pairs.height} shown (query, doc) pairs")
        return _SoftLogisticRegression(joined.select(feature_columns).to_numpy().astype(float), self.config)


class _SoftLogisticRegression:
    """γ = σ(w·x + b), fitted to expected relevant counts out of n (soft binary targets)."""

    def __init__(self, x: np.ndarray, config: PropensityConfig) -> None:
        spread = x.std(axis=0)
        self.x = (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
        self.model = LogisticRegression(C=config.em_regression_c, warm_start=True, max_iter=200)

    def refit(self, relevant: np.ndarray, n: np.ndarray) -> np.ndarray:
        # Each pair enters twice, as a positive weighted by its expected relevant count and
        # as a negative weighted by the rest: the cross-entropy against the soft target.
        m = len(n)
        x = np.vstack([self.x, self.x])
        y = np.concatenate([np.ones(m), np.zeros(m)])
        weight = np.concatenate([relevant, n - relevant])
        self.model.fit(x, y, sample_weight=weight)
        return self.model.predict_proba(self.x)[:, 1]


class LatentClassEMEstimator:
    """PBM with each pair's relevance one of G latent classes (module docstring), fitted by
    maximum likelihood.

    The likelihood marginalises each pair's class: Σ_g π_(home, g) Π_rows Binom(c; n, θ_k γ_g),
    with θ_1 = 1 (γ carries the scale). Alternating EM updates crawl here: with ~100 impressions
    a pair its class posterior is nearly hard, and θ, γ and π settle together only after
    thousands of steps or in a poor local optimum, so all parameters move at once (L-BFGS).
    The surface has local modes where a stretch of positions holds only the top class at a tiny
    θ (or only the bottom one at a large θ) and the class shares follow; the curve is kept
    non-increasing down the list, which rules out some of them, and three starts (flat, the
    click-rate curve, its square root) are fitted and the highest likelihood kept. The standard
    errors describe the chosen mode only.
    """

    name = "latent_class_em"

    def __init__(self, config: PropensityConfig) -> None:
        self.config = config

    def fit(self, results: pl.DataFrame) -> PropensityCurve:
        validate_results(results)
        if self.config.max_latent_classes < 1:
            raise PropensityError(f"max_latent_classes must be at least 1, got {self.config.max_latent_classes}")
        groups = position_groups(results, self.config.max_position)
        em = PositionBasedEM(groups, self.config)
        home = _home_positions(groups, em)
        click_rate = em.click_rate_curve()
        starts = (np.full(self.config.max_position, 0.5), click_rate, np.sqrt(click_rate))
        fits = [
            max((self._fit_classes(em, home, g, start) for start in starts), key=_log_likelihood)
            for g in range(1, self.config.max_latent_classes + 1)
        ]
        best = min(fits, key=lambda f: f.diagnostics["bic"])
        return PropensityCurve(
            relative=_as_tuple(best.theta),
            estimator=self.name,
            n_results=results.height,
            diagnostics={**best.diagnostics, "bic_by_classes": [f.diagnostics["bic"] for f in fits]},
        )

    def _fit_classes(self, em: PositionBasedEM, home: np.ndarray, n_classes: int, start: np.ndarray) -> EMFit:
        k, floor = self.config.max_position, self.config.probability_floor
        pair, pos, home_t = (torch.tensor(a, dtype=torch.long) for a in (em.pair, em.pos, home))
        n, c = (torch.tensor(a, dtype=torch.float64) for a in (em.n, em.c))
        n_pairs = len(home)
        start = np.clip(start, 0.01, 0.99)
        # Classes start spread over the pairs' click rates per examination at the start curve.
        rate = np.bincount(em.pair, weights=em.c) / np.bincount(em.pair, weights=em.n * start[em.pos])
        gamma0 = np.clip(np.quantile(rate, (np.arange(n_classes) + 0.5) / n_classes), 0.01, 0.99)
        # One vector: logit θ_2..θ_K, logit γ_1..γ_G, and per home position the share logits of
        # classes 2..G against class 1 (fixed at 0, so the Hessian has no softmax null direction).
        # θ_k = θ_(k-1) · sigmoid(step_k): examination never rises down the list. Without it the
        # likelihood has a mode per position where θ_k jumps and the class shares follow.
        steps = np.clip(start[1:] / start[:-1], 0.01, 0.99)
        params = torch.cat(
            [
                torch.logit(torch.tensor(steps, dtype=torch.float64)),
                torch.logit(torch.tensor(gamma0, dtype=torch.float64)),
                torch.zeros(k * (n_classes - 1), dtype=torch.float64),
            ]
        ).requires_grad_()

        def log_likelihood(vector: torch.Tensor) -> torch.Tensor:
            theta = _monotone_curve(vector[: k - 1])
            gamma = torch.sigmoid(vector[k - 1 : k - 1 + n_classes])
            share_logits = torch.cat(
                [torch.zeros(k, 1, dtype=torch.float64), vector[k - 1 + n_classes :].reshape(k, n_classes - 1)], dim=1
            )
            p = (theta[pos, None] * gamma[None, :]).clamp(floor, 1 - floor)
            per_row = c[:, None] * torch.log(p) + (n - c)[:, None] * torch.log1p(-p)
            per_pair = torch.zeros(n_pairs, n_classes, dtype=torch.float64).index_add(0, pair, per_row)
            return torch.logsumexp(per_pair + torch.log_softmax(share_logits, dim=1)[home_t], dim=1).sum()

        optimizer = torch.optim.LBFGS([params], max_iter=self.config.em_max_iterations, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = -log_likelihood(params) / n_pairs
            loss.backward()
            return loss

        optimizer.step(closure)
        fitted = params.detach()
        value = float(log_likelihood(fitted))
        theta = _monotone_curve(fitted[: k - 1]).numpy()
        gamma = torch.sigmoid(fitted[k - 1 : k - 1 + n_classes]).numpy()
        # Standard errors of log θ from the observed information (delta method through the steps);
        # the pseudo-inverse leaves directions the data do not inform (e.g. shares of a position
        # no pair calls home) out of the rest.
        information = -torch.autograd.functional.hessian(log_likelihood, fitted).numpy()
        step_covariance = np.linalg.pinv(information)[: k - 1, : k - 1]
        # log θ_k = Σ_(j<=k) log sigmoid(step_j), and d log sigmoid(x) / dx = 1 - sigmoid(x).
        step_prob = torch.sigmoid(fitted[: k - 1]).numpy()
        jacobian = np.tril(np.ones((k - 1, k - 1))) * (1 - step_prob)[None, :]
        log_theta_se = np.sqrt(np.clip(np.diag(jacobian @ step_covariance @ jacobian.T), 0, None))
        n_parameters = (n_classes - 1) * len(np.unique(home)) + n_classes + k - 1
        return EMFit(
            theta,
            {
                "latent_classes": n_classes,
                "class_gamma": [float(v) for v in gamma],
                "log_theta_se": [0.0, *(float(v) for v in log_theta_se)],  # θ_1 = 1 exactly
                "log_likelihood": value,
                "bic": -2 * value + n_parameters * math.log(n_pairs),
                "n_pairs": n_pairs,
            },
        )


def _monotone_curve(steps: torch.Tensor) -> torch.Tensor:
    """θ_1 = 1 and θ_k = θ_(k-1) · sigmoid(steps_(k-1))."""
    return torch.exp(torch.cat([torch.zeros(1, dtype=steps.dtype), torch.cumsum(F.logsigmoid(steps), dim=0)]))


def _log_likelihood(fit: EMFit) -> float:
    return fit.diagnostics["log_likelihood"]


def _home_positions(groups: pl.DataFrame, em: PositionBasedEM) -> np.ndarray:
    """The 0-based position each pair was shown at most often (the lowest on ties), by EM pair index."""
    rows = groups.join(em.pairs, on=[QUERY, "doc_id"]).sort(["pair", "n", "position"], descending=[False, True, False])
    first = rows.group_by("pair", maintain_order=True).first()
    return first["position"].to_numpy() - 1


def estimate_propensities(
    results: pl.DataFrame, config: PropensityConfig, features: pl.DataFrame | None = None
) -> PropensityCurve:
    """The propensity curve of `results`, pooled and per context (see the module docstring).

    With `estimator: auto`, harvesting is used when at least `min_exploration_results` rows
    carry exploration (`exploration` != "none") and it links every position; otherwise
    regression EM when `features` are given, latent-class EM when not.
    """
    if config.estimator not in ESTIMATORS:
        raise PropensityError(f"unknown estimator {config.estimator!r}; choose one of {ESTIMATORS}")
    if config.max_position < 1:
        raise PropensityError(f"max_position must be at least 1, got {config.max_position}")
    validate_results(results)
    pooled, estimator = _fit_choosing(results, config, features)
    column = config.context_column
    if column is None or column not in results.columns or results[column].drop_nulls().n_unique() < 2:
        return pooled
    by_context, pooled_for = {}, []
    for (value,), rows in results.filter(pl.col(column).is_not_null()).group_by(column):
        try:
            if rows.height < config.min_context_results:
                raise PropensityError(f"only {rows.height} results")
            by_context[str(value)] = estimator.fit(rows)
        except PropensityError as e:
            pooled_for.append({"context": str(value), "reason": str(e)})
    return PropensityCurve(
        relative=pooled.relative,
        absolute=pooled.absolute,
        estimator=pooled.estimator,
        n_results=pooled.n_results,
        context_column=column,
        by_context=dict(sorted(by_context.items())),
        diagnostics={**pooled.diagnostics, "contexts_using_pooled_curve": sorted(pooled_for, key=str)},
    )


def _fit_choosing(
    results: pl.DataFrame, config: PropensityConfig, features: pl.DataFrame | None
) -> tuple[PropensityCurve, HarvestingEstimator | RegressionEMEstimator | LatentClassEMEstimator]:
    harvesting = HarvestingEstimator(config)
    regression = RegressionEMEstimator(config, features)
    latent = LatentClassEMEstimator(config)
    named = {"harvesting": harvesting, "regression_em": regression, "latent_class_em": latent}
    if config.estimator in named:
        return named[config.estimator].fit(results), named[config.estimator]
    explored = pl.col("exploration").fill_null("none") != "none"
    n_explored = results.filter(explored).height if "exploration" in results.columns else 0
    if n_explored >= config.min_exploration_results:
        try:
            return harvesting.fit(results), harvesting
        except PropensityError:
            pass  # exploration too thin to link every position: fall through to EM
    fallback = regression if features is not None else latent
    return fallback.fit(results), fallback


def _as_tuple(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
