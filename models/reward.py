"""P[love] reward model (RLUF, Han et al. 2025): the probability that a result receives a love,
corrected for position bias and calibrated.

It reuses GNOLR: love is GNOLR's top level, and GNOLR is trained position-aware (observed
P(love at position p) = theta_p * P(love | q, d, examined)), so the relevance part is already
free of the logging position. On top, Platt scaling is fitted on a calibration slice of
queries held out from training, position-aware as well:

    P(love observed at position p) = theta_p * sigmoid(alpha * logit(r(q, d)) + beta)

where r is GNOLR's top-level probability and theta the model's examination curve, with
alpha >= 0 (`models.calibration`): calibration never reverses the model's order, and a slice too
small to trust, or one on which the model ranks no better than chance, keeps the model's own
probabilities (identity) with the reason recorded. What the
calibrated reward `predict` returns is therefore P(love | q, d, examined with the attention of
position 1): with a learned curve (theta_1 = 1) that is the love probability of the result
shown at position 1; with given propensities (absolute theta) it is P(love | examined).
Platt rather than isotonic: the position factor has to sit inside the likelihood, which a
two-parameter sigmoid allows and a step function fitted to binned outcomes does not.

`train_feedback_models` is the entry point of the feedback stage: a share of the distinct
queries is held out entirely (`heldout_query_fraction`, never trained or calibrated on), the rest
train on days 1..N-1 (minus the calibration slice); the reward is scored on the held-out last
day(s) of the seen queries and on every day of the held-out queries, since a policy will ask it
about queries it has not seen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from clickloop.atomic import atomic_path
from models.calibration import Calibration, CalibrationConfig, fit_monotone_platt
from models.gnolr import GNOLRConfig, GNOLRModel, evaluate_levels, level_labels
from models.text_features import TextEmbeddingCache


@dataclass
class RewardConfig:
    love_level: str = "love"  # the GNOLR level whose probability is the reward
    holdout_days: int = 1  # the last days are the test set
    calibration_fraction: float = 0.15  # share of training queries (by query text) held out for Platt
    # Share of all distinct queries held out of training and calibration, to score the reward on
    # queries it has not seen (0: none held out, no such score).
    heldout_query_fraction: float = 0.15
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    ece_bins: int = 10  # equal-width bins
    seed: int = 13

    def __post_init__(self) -> None:
        if not 0 < self.calibration_fraction < 1:
            raise ValueError(f"calibration_fraction must be in (0, 1); got {self.calibration_fraction}")
        if not 0 <= self.heldout_query_fraction < 1:
            raise ValueError(f"heldout_query_fraction must be in [0, 1); got {self.heldout_query_fraction}")
        if self.holdout_days < 1 or self.ece_bins < 1:
            raise ValueError("holdout_days and ece_bins must be at least 1")


def expected_calibration_error(predicted: np.ndarray, outcome: np.ndarray, bins: int = 10) -> float:
    """Weighted mean |mean prediction - outcome rate| over `bins` equal-width probability bins."""
    predicted, outcome = np.asarray(predicted, dtype=float), np.asarray(outcome, dtype=float)
    if predicted.shape != outcome.shape or predicted.ndim != 1 or len(predicted) == 0:
        raise ValueError("need two non-empty 1-d arrays of the same length")
    which = np.minimum((predicted * bins).astype(int), bins - 1)
    error = 0.0
    for b in np.unique(which):
        members = which == b
        error += members.sum() * abs(predicted[members].mean() - outcome[members].mean())
    return float(error / len(predicted))


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present (it is undefined there)."""
    labels = np.asarray(labels, dtype=bool)
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


class LoveRewardModel:
    """Calibrated P[love | query, doc, examined at position 1] on top of a GNOLR model."""

    def __init__(
        self,
        gnolr: GNOLRModel,
        love_level: str = "love",
        platt: tuple[float, float] = (1.0, 0.0),
        calibration: dict[str, Any] | None = None,
    ) -> None:
        if love_level not in gnolr.levels:
            raise ValueError(f"love level {love_level!r} is not a GNOLR level {gnolr.levels}")
        if platt[0] < 0:
            raise ValueError(f"a negative Platt scale {platt[0]} would invert the model; the scale must be >= 0")
        self.gnolr = gnolr
        self.love_level = love_level
        self.platt = (float(platt[0]), float(platt[1]))
        self.calibration = calibration or {"method": "identity", "reason": "not calibrated"}

    @classmethod
    def calibrate(
        cls,
        gnolr: GNOLRModel,
        calibration: pl.DataFrame,
        docs: Mapping[str, str],
        love_level: str = "love",
        config: CalibrationConfig | None = None,
    ) -> LoveRewardModel:
        """Fit the monotone position-aware Platt scaling on shown results GNOLR did not train on
        (or keep the model's probabilities, with the reason, where the slice cannot support it)."""
        model = cls(gnolr, love_level)
        loved = _loved(calibration, gnolr, love_level)
        fitted: Calibration = fit_monotone_platt(
            _logit(model._uncalibrated(calibration, docs)),
            loved,
            gnolr.examination(calibration["position"].to_numpy()),
            calibration["user_query"].n_unique() if "user_query" in calibration.columns else len(loved),
            config,
        )
        model.platt = fitted.platt
        model.calibration = fitted.to_dict()
        return model

    def predict(self, frame: pl.DataFrame, docs: Mapping[str, str] | None = None) -> np.ndarray:
        """The reward: calibrated P(love | query, doc, examined at position 1), one per row of
        `frame` (`user_query` or `user_id`, and `doc_id`; the position, if any, is ignored)."""
        scale, shift = self.platt
        return 1 / (1 + np.exp(-(scale * _logit(self._uncalibrated(frame, docs)) + shift)))

    def predict_observed(self, frame: pl.DataFrame, docs: Mapping[str, str] | None = None) -> np.ndarray:
        """P(love at the row's shown position) = theta_position x the reward."""
        return self.gnolr.examination(frame["position"].to_numpy()) * self.predict(frame, docs)

    def evaluate(self, results: pl.DataFrame, docs: Mapping[str, str] | None = None, bins: int = 10) -> dict[str, Any]:
        """On (held-out) shown results: AUC and ECE of the position-aware prediction against the
        logged loves, and the AUC of the position-free reward alone."""
        loved = _loved(results, self.gnolr, self.love_level)
        reward = self.predict(results, docs)
        observed = self.gnolr.examination(results["position"].to_numpy()) * reward
        return {
            "n": len(loved),
            "love_rate": float(loved.mean()),
            "mean_predicted": float(observed.mean()),
            "auc": _auc(loved, observed),
            "auc_reward_only": _auc(loved, reward),
            "ece": expected_calibration_error(observed, loved, bins),
            "ece_bins": bins,
        }

    def save(self, directory: str | Path) -> None:
        """Write reward.json and the GNOLR model (gnolr/) into `directory`, atomically."""
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            self.gnolr.save(tmp / "gnolr")
            meta = {"love_level": self.love_level, "platt": self.platt, "calibration": self.calibration}
            (tmp / "reward.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: str | Path) -> LoveRewardModel:
        directory = Path(directory)
        meta = json.loads((directory / "reward.json").read_text())
        platt = tuple(meta["platt"])
        if platt[0] < 0:  # written before calibration was monotone: keep the model's own order
            platt, meta["calibration"] = (1.0, 0.0), {
                "method": "identity", "reason": f"the saved Platt scale {platt[0]:.4g} was negative (would invert)"}
        return cls(GNOLRModel.load(directory / "gnolr"), meta["love_level"], platt, meta.get("calibration"))

    def _uncalibrated(self, frame: pl.DataFrame, docs: Mapping[str, str] | None) -> np.ndarray:
        return self.gnolr.predict(frame, docs)[:, self.gnolr.levels.index(self.love_level)]


def _loved(results: pl.DataFrame, gnolr: GNOLRModel, love_level: str) -> np.ndarray:
    """Whether each result reached the love level (as GNOLR's labels count it), as bool."""
    if "actions" not in results.columns:
        raise ValueError(f"results lack the `actions` column; they have {results.columns}")
    return level_labels(results["actions"].to_list(), gnolr.levels)[:, gnolr.levels.index(love_level)] > 0


# --- splits --------------------------------------------------------------------------------


def split_by_day(results: pl.DataFrame, holdout_days: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(days 1..N-holdout_days, the last holdout_days days)."""
    days = results["day"].unique().sort().to_list()
    if len(days) <= holdout_days:
        raise ValueError(f"need more than {holdout_days} day(s) of logs to hold out; got {len(days)}")
    first_test_day = days[-holdout_days]
    return results.filter(pl.col("day") < first_test_day), results.filter(pl.col("day") >= first_test_day)


def split_by_query(
    results: pl.DataFrame, fraction: float, seed: int, salt: str = ""
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(rest, slice): the slice holds about `fraction` of the distinct query texts, chosen by a
    seeded hash so the split is stable across runs and across days; splits with different `salt`
    choose independently."""

    def in_slice(query: str) -> bool:
        digest = hashlib.blake2b(f"{seed}:{salt}{query}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < fraction

    chosen = results.select(pl.col("user_query").map_elements(in_slice, return_dtype=pl.Boolean)).to_series()
    return results.filter(~chosen), results.filter(chosen)


@dataclass
class RewardSplits:
    """The rows each part of the reward's training and evaluation uses."""

    fit: pl.DataFrame  # seen queries, training days, minus the calibration slice: GNOLR trains here
    calibration: pl.DataFrame  # a slice of the seen queries, training days: the Platt fit
    test: pl.DataFrame  # seen queries, held-out last day(s)
    heldout_queries: pl.DataFrame  # queries never trained or calibrated on, every day


HELDOUT_SALT = "heldout-queries:"


def reward_splits(results: pl.DataFrame, config: RewardConfig) -> RewardSplits:
    """Hold out whole queries first (all their days), then the last day(s), then the calibration slice."""
    seen, heldout = results, results.clear()
    if config.heldout_query_fraction > 0:
        seen, heldout = split_by_query(results, config.heldout_query_fraction, config.seed, HELDOUT_SALT)
    train, test = split_by_day(seen, config.holdout_days)
    fit_rows, calibration = split_by_query(train, config.calibration_fraction, config.seed)
    return RewardSplits(fit_rows, calibration, test, heldout)


# --- off-policy behaviour ------------------------------------------------------------------


def off_policy_report(
    model: LoveRewardModel, unseen: pl.DataFrame, shown: pl.DataFrame, docs: Mapping[str, str]
) -> dict[str, Any]:
    """How the reward behaves on pairs the logging ranker never showed, against the truth.

    Both frames have `user_query`, `doc_id`, `true_love_prob` (the truth on the reward's scale,
    P(love | examined at position 1)) and `relevant` (bool); `unseen` also has `source` (e.g.
    `bm25_50_200`, `random`). Per source: mean predicted vs mean true reward, and how many
    unseen pairs outscore the median shown relevant pair (overall, and among the truly
    irrelevant ones: those are the results a policy could exploit).
    """
    for name, frame in (("unseen", unseen), ("shown", shown)):
        missing = {"user_query", "doc_id", "true_love_prob", "relevant"} - set(frame.columns)
        if missing:
            raise ValueError(f"{name} pairs lack column(s) {sorted(missing)}")
    shown_score = model.predict(shown, docs)
    shown_relevant = shown["relevant"].to_numpy()
    if not shown_relevant.any():
        raise ValueError("no shown relevant pair to compare the unseen pairs with")
    bar = float(np.median(shown_score[shown_relevant]))
    report: dict[str, Any] = {"shown": _reward_summary(shown_score, shown), "median_shown_relevant_reward": bar}
    unseen_score = model.predict(unseen, docs)
    for source in unseen["source"].unique().sort().to_list():
        members = (unseen["source"] == source).to_numpy()
        frame, score = unseen.filter(members), unseen_score[members]
        irrelevant = ~frame["relevant"].to_numpy()
        summary = _reward_summary(score, frame)
        summary["share_above_median_shown_relevant"] = float((score > bar).mean())
        summary["share_irrelevant_above_median_shown_relevant"] = (
            float((score[irrelevant] > bar).mean()) if irrelevant.any() else float("nan")
        )
        report[source] = summary
    return report


def _reward_summary(score: np.ndarray, frame: pl.DataFrame) -> dict[str, Any]:
    truth = frame["true_love_prob"].to_numpy()
    return {
        "n": len(score),
        "share_relevant": float(frame["relevant"].mean()),
        "mean_predicted": float(score.mean()),
        "mean_true": float(truth.mean()),
        "mean_overestimate": float((score - truth).mean()),
        "auc_relevant": _auc(frame["relevant"].to_numpy(), score),
    }


# --- the feedback-stage entry point ---------------------------------------------------------


@dataclass
class FeedbackModels:
    gnolr: GNOLRModel
    reward: LoveRewardModel
    metrics: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | Path) -> None:
        """gnolr/ and reward/ under `directory` (each written atomically)."""
        self.gnolr.save(Path(directory) / "gnolr")
        self.reward.save(Path(directory) / "reward")


def train_feedback_models(
    results: pl.DataFrame,
    docs: Mapping[str, str],
    gnolr_config: GNOLRConfig | None = None,
    reward_config: RewardConfig | None = None,
    propensities: Sequence[float] | None = None,
    text_features: TextEmbeddingCache | None = None,
) -> FeedbackModels:
    """Train GNOLR on days 1..N-holdout (minus a calibration slice of queries), calibrate the
    P[love] reward on that slice, and evaluate both on the held-out days.

    `results` follows `data/ingested/results.parquet`; `docs` maps doc id -> title + text;
    `propensities` (theta by position, e.g. `PropensityCurve` values) are used when
    `gnolr_config.position_bias == "propensities"`; `text_features` is a document-embedding
    cache to reuse (it is filled with the documents the logs show).
    """
    gnolr_config = gnolr_config or GNOLRConfig()
    reward_config = reward_config or RewardConfig()
    if reward_config.love_level not in gnolr_config.levels:
        raise ValueError(f"reward love_level {reward_config.love_level!r} is not in gnolr levels {gnolr_config.levels}")
    splits = reward_splits(results, reward_config)
    if splits.fit.is_empty() or splits.calibration.is_empty():
        raise ValueError("too few distinct queries to hold out a calibration slice")
    gnolr = GNOLRModel.fit(splits.fit, docs, gnolr_config, propensities, text_features)
    reward = LoveRewardModel.calibrate(gnolr, splits.calibration, docs, reward_config.love_level,
                                       reward_config.calibration)
    metrics = {
        "split": {
            "train_rows": splits.fit.height,
            "calibration_rows": splits.calibration.height,
            "calibration_queries": splits.calibration["user_query"].n_unique(),
            "test_rows": splits.test.height,
            "test_days": [str(d) for d in splits.test["day"].unique().sort().to_list()],
            "heldout_query_rows": splits.heldout_queries.height,
            "heldout_queries": splits.heldout_queries["user_query"].n_unique(),
        },
        "gnolr": {"levels": evaluate_levels(gnolr, splits.test, docs), "training_losses": gnolr.training_losses},
        "reward": {**reward.evaluate(splits.test, docs, reward_config.ece_bins), "platt": list(reward.platt),
                   "calibration": reward.calibration},
        "reward_heldout_queries": heldout_query_metrics(reward, splits.heldout_queries, docs, reward_config.ece_bins),
        "config": {"gnolr": asdict(gnolr_config), "reward": asdict(reward_config)},
    }
    return FeedbackModels(gnolr, reward, metrics)


def heldout_query_metrics(
    reward: LoveRewardModel, heldout: pl.DataFrame, docs: Mapping[str, str], bins: int
) -> dict[str, Any]:
    """The reward's figures on queries it never saw (every day of them), or why there are none."""
    if heldout.is_empty():
        return {"skipped": "no query held out (heldout_query_fraction 0, or too few distinct queries)"}
    loved = _loved(heldout, reward.gnolr, reward.love_level)
    if not 0 < loved.sum() < len(loved):
        return {"skipped": f"{int(loved.sum())} of {len(loved)} held-out-query results loved: AUC needs both"}
    return {"queries": heldout["user_query"].n_unique(), **reward.evaluate(heldout, docs, bins)}
