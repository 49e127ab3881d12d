"""Unbiased relevance labels per (query text, document) from position-biased clicks.

The label is the clipped inverse-propensity estimate (Saito et al., WSDM 2020):

    ips_label = Σ_impressions clicked / max(θ_position, clip) / n_impressions

Under the position-based model E[clicked] = θ_position · γ, so without clipping the label is an
unbiased estimate of γ on the scale of position 1 (θ_1 = 1, i.e. the click rate the pair would
get shown first). `clip` bounds each weight by 1/clip: it trades variance for a downward bias on
pairs shown mostly at positions with θ < clip. The naive click rate, counts, love counts and the
standard error of the IPS mean sit beside it. Pairs are keyed by the normalised `user_query`
text (`models.propensity.normalized_query`), since `query_id` names one issued search.

IPS gives every pair a label, however little it was seen: a document shown only at position 10
under a steep curve is examined about once in a hundred impressions, so zero clicks there say
almost nothing, yet its IPS label (0) and sample standard error (0) read as certainly irrelevant.
`posterior_relevance` keeps that uncertainty. Under the PBM a pair's clicks are close to
Binomial(E, γ) with E = Σ θ_position its expected examinations (unclipped), and γ follows a
Beta(α, β) prior fitted to all pairs by maximising the beta-binomial marginal likelihood
(empirical Bayes). The posterior mean (clicks + α) / (E + α + β) is the debiased label with
shrinkage instead of clipping: a pair examined often reads as its click rate per examination,
one hardly examined reads as the prior, and `posterior_sd` says which is which.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.optimize import minimize
from scipy.special import betaln

from clickloop.atomic import atomic_path
from models.propensity import (
    QUERY,
    RESULT_COLUMNS,
    PropensityCurve,
    PropensityError,
    normalized_query,
    validate_results,
)

LABEL_COLUMNS = (
    QUERY,
    "doc_id",
    "n_impressions",
    "n_clicks",
    "n_loves",
    "naive_ctr",
    "naive_se",
    "ips_label",
    "ips_se",
    "expected_examinations",
    "posterior_relevance",
    "posterior_sd",
)


@dataclass
class LabelConfig:
    """The `feedback.labels` params section."""

    # Floor on the relative propensity θ_k / θ_1 in the IPS weight: no click counts more than
    # 1/clip. Lower is less biased and noisier.
    clip: float = 0.05


def relevance_labels(results: pl.DataFrame, propensities: PropensityCurve, config: LabelConfig) -> pl.DataFrame:
    """One row per shown (query, doc_id) with the columns in `LABEL_COLUMNS`.

    `results` is the ingested results table (`user_query`, `doc_id`, `position`, `clicked`,
    `loved`, and the curve's context column, e.g. `device`, when it has per-context curves).
    `naive_se` and `ips_se` (standard errors of the two means) are null for pairs shown once;
    `expected_examinations` (Σ θ, unclipped) says how many examinations the impressions amount
    to; `posterior_relevance` and `posterior_sd` are the empirical-Bayes posterior of γ given
    the clicks and those examinations (module docstring).
    """
    validate_results(results, (*RESULT_COLUMNS, "loved"))
    if not 0 < config.clip <= 1:
        raise PropensityError(f"labels.clip must be in (0, 1], got {config.clip}")
    context = propensities.context_column
    contexts = results[context] if context in results.columns else None
    theta = propensities.theta(results["position"], contexts)
    per_impression = results.select(
        normalized_query().alias(QUERY),
        "doc_id",
        pl.col("clicked").cast(pl.Float64).alias("click"),
        pl.col("loved").cast(pl.Int64).alias("love"),
        pl.Series("theta", theta),
    ).with_columns((pl.col("click") / pl.col("theta").clip(lower_bound=config.clip)).alias("weighted_click"))
    n = pl.col("n_impressions")
    labels = (
        per_impression.group_by(QUERY, "doc_id")
        .agg(
            pl.len().alias("n_impressions"),
            pl.col("click").sum().cast(pl.Int64).alias("n_clicks"),
            pl.col("love").sum().alias("n_loves"),
            pl.col("click").mean().alias("naive_ctr"),
            pl.col("weighted_click").mean().alias("ips_label"),
            pl.col("weighted_click").pow(2).mean().alias("mean_square"),
            pl.col("theta").sum().alias("expected_examinations"),
        )
        .with_columns(
            # Standard errors of the sample means, from the sample variance (n - 1 denominator);
            # for 0/1 clicks the mean square is the mean itself.
            _standard_error(pl.col("naive_ctr"), pl.col("naive_ctr"), n).alias("naive_se"),
            _standard_error(pl.col("ips_label"), pl.col("mean_square"), n).alias("ips_se"),
        )
    )
    return labels.with_columns(**_beta_binomial_posterior(labels)).select(LABEL_COLUMNS).sort(QUERY, "doc_id")


def _standard_error(mean: pl.Expr, mean_square: pl.Expr, n: pl.Expr) -> pl.Expr:
    return pl.when(n > 1).then(((mean_square - mean.pow(2)).clip(lower_bound=0) / (n - 1)).sqrt())


def _beta_binomial_posterior(labels: pl.DataFrame) -> dict[str, pl.Series]:
    """Posterior mean and sd of each pair's γ under the empirical-Bayes Beta prior."""
    clicks = labels["n_clicks"].to_numpy().astype(np.float64)
    # An underestimated θ can leave fewer expected examinations than clicks; cap γ's evidence at 1.
    trials = np.maximum(labels["expected_examinations"].to_numpy(), clicks)
    alpha, beta = fit_beta_prior(clicks, trials)
    a, b = clicks + alpha, trials - clicks + beta
    mean = a / (a + b)
    return {
        "posterior_relevance": pl.Series(mean),
        "posterior_sd": pl.Series(np.sqrt(mean * (1 - mean) / (a + b + 1))),
    }


def fit_beta_prior(successes: np.ndarray, trials: np.ndarray) -> tuple[float, float]:
    """(α, β) maximising the beta-binomial marginal likelihood of `successes` in `trials`.

    Trials may be fractional (expected examinations): the likelihood's Beta functions extend to
    them. The binomial coefficient does not depend on (α, β) and is left out.
    """
    if len(successes) == 0:
        raise PropensityError("no (query, document) pairs to fit a relevance prior to")

    def negative_log_likelihood(log_params: np.ndarray) -> float:
        alpha, beta = np.exp(log_params)
        return -float(np.sum(betaln(successes + alpha, trials - successes + beta)) - len(trials) * betaln(alpha, beta))

    mean = float(np.clip(successes.sum() / max(trials.sum(), 1e-12), 1e-3, 1 - 1e-3))
    start = np.log([mean * 2.0, (1 - mean) * 2.0])
    fitted = minimize(negative_log_likelihood, start, method="L-BFGS-B", bounds=[(-9.0, 9.0)] * 2)
    alpha, beta = np.exp(fitted.x)
    return float(alpha), float(beta)


def write_labels(labels: pl.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write the label table as Parquet, atomically."""
    with atomic_path(path) as tmp:
        labels.write_parquet(tmp)
