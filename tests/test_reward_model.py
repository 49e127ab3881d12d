"""P[love] reward model on synthetic logs with position bias (real GNOLR training underneath)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.gnolr import GNOLRConfig
from models.reward import (
    FeedbackModels,
    LoveRewardModel,
    RewardConfig,
    expected_calibration_error,
    off_policy_report,
    split_by_day,
    split_by_query,
    train_feedback_models,
)
from tests.test_gnolr_model import TOPICS, SyntheticLogs, synthetic_feedback_logs

GNOLR_CONFIG = GNOLRConfig(max_epochs=12, batch_size=256, learning_rate=5e-3)


@pytest.fixture(scope="module")
def logs() -> SyntheticLogs:
    return synthetic_feedback_logs(sessions_per_query=80, days=4, seed=1)


@pytest.fixture(scope="module")
def trained(logs: SyntheticLogs) -> FeedbackModels:
    return train_feedback_models(logs.results, logs.docs, GNOLR_CONFIG, RewardConfig(calibration_fraction=0.25))


def test_expected_calibration_error_matches_a_hand_computed_value():
    predicted = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    outcome = np.array([0, 1, 1, 1, 0])
    # bins: [0.0,0.1) mean 0.05 vs 0.5; [0.9,1.0] 0.95 vs 1; [0.5,0.6) 0.55 vs 0
    expected = (2 * 0.45 + 2 * 0.05 + 1 * 0.55) / 5
    assert expected_calibration_error(predicted, outcome, bins=10) == pytest.approx(expected)
    with pytest.raises(ValueError):
        expected_calibration_error(np.array([]), np.array([]))


def test_splits_hold_out_the_last_day_and_whole_queries(logs: SyntheticLogs):
    train, test = split_by_day(logs.results, holdout_days=1)
    assert train["day"].max() < test["day"].min()
    assert train.height + test.height == logs.results.height
    rest, calibration = split_by_query(train, 0.25, seed=13)
    assert not set(rest["user_query"]) & set(calibration["user_query"])
    assert rest.height + calibration.height == train.height
    with pytest.raises(ValueError, match="more than 1 day"):
        split_by_day(logs.results.filter(pl.col("day") == test["day"][0]), holdout_days=1)


def test_reward_auc_on_the_held_out_day_beats_chance_clearly(trained: FeedbackModels):
    reward = trained.metrics["reward"]
    assert reward["n"] > 1000
    assert reward["auc"] > 0.8
    assert reward["auc_reward_only"] > 0.7
    assert trained.metrics["gnolr"]["levels"]["click"]["auc"] > 0.75


def test_reward_is_calibrated_on_the_held_out_day(trained: FeedbackModels):
    reward = trained.metrics["reward"]
    assert reward["ece"] < 0.04
    assert reward["mean_predicted"] == pytest.approx(reward["love_rate"], abs=0.03)


def test_position_corrected_reward_ranks_true_relevance_better_than_the_raw_love_rate(
    trained: FeedbackModels, logs: SyntheticLogs
):
    """Where the logging ranker showed the more relevant of two pairs lower, the raw love rate is
    pulled down by position; the reward should order such pairs by relevance more often."""
    train, _ = split_by_day(logs.results, holdout_days=1)
    pairs = train.group_by("user_query", "doc_id").agg(
        pl.col("loved").mean().alias("raw_love_rate"), pl.col("grade").first(), pl.col("position").mean()
    )
    reward = trained.reward.predict(pairs, logs.docs)
    raw = pairs["raw_love_rate"].to_numpy()
    grade, position = pairs["grade"].to_numpy(), pairs["position"].to_numpy()
    better, worse = np.nonzero((grade[:, None] > grade[None, :]) & (position[:, None] > position[None, :] + 1))
    assert len(better) > 100
    corrected_accuracy = (reward[better] > reward[worse]).mean()
    raw_accuracy = (raw[better] > raw[worse]).mean()
    assert corrected_accuracy > raw_accuracy + 0.05
    assert corrected_accuracy > 0.85


def test_reward_of_the_top_grade_is_near_its_true_love_probability(trained: FeedbackModels, logs: SyntheticLogs):
    pairs = logs.results.unique(["user_query", "doc_id"])
    reward = trained.reward.predict(pairs, logs.docs)
    truth = pairs["true_love_prob"].to_numpy()
    top = truth == truth.max()
    # Scale of the reward: P(love | examined at position 1); the synthetic theta_1 is 1.
    assert reward[top].mean() == pytest.approx(truth[top].mean(), abs=0.15)
    assert reward[~top].mean() < 0.1


def test_off_policy_report_exposes_scores_on_never_shown_pairs(trained: FeedbackModels, logs: SyntheticLogs):
    fresh = {f"fresh-{t}": f"The definitive expert manual on {topic}." for t, topic in enumerate(TOPICS)}
    docs = {**logs.docs, **fresh}
    unseen = pl.DataFrame(
        [
            {
                "user_query": topic,
                "doc_id": doc_id,
                "relevant": doc_id == f"fresh-{t}",
                "true_love_prob": 0.6 if doc_id == f"fresh-{t}" else 0.0,
                "source": "new_documents",
            }
            for t, topic in enumerate(TOPICS)
            for doc_id in fresh
        ]
    )
    shown = (
        logs.results.unique(["user_query", "doc_id"])
        .with_columns(relevant=pl.col("grade") > 0)
        .select("user_query", "doc_id", "relevant", "true_love_prob")
    )
    report = off_policy_report(trained.reward, unseen, shown, docs)
    fresh_report = report["new_documents"]
    assert fresh_report["n"] == len(TOPICS) ** 2
    assert fresh_report["auc_relevant"] > 0.8
    assert 0 <= fresh_report["share_irrelevant_above_median_shown_relevant"] <= 0.2
    assert report["shown"]["mean_true"] == pytest.approx(shown["true_love_prob"].mean())
    with pytest.raises(ValueError, match="lack column"):
        off_policy_report(trained.reward, unseen.drop("relevant"), shown, docs)


def test_calibration_needs_both_outcomes(trained: FeedbackModels, logs: SyntheticLogs):
    never_loved = logs.results.filter(~pl.col("loved")).head(500)
    with pytest.raises(ValueError, match="both loved and not-loved"):
        LoveRewardModel.calibrate(trained.gnolr, never_loved, logs.docs)


def test_reward_level_must_be_a_gnolr_level(logs: SyntheticLogs):
    with pytest.raises(ValueError, match="love_level"):
        train_feedback_models(logs.results, logs.docs, GNOLRConfig(levels=["click"]), RewardConfig())


def test_save_and_load_give_identical_rewards(trained: FeedbackModels, logs: SyntheticLogs, tmp_path: Path):
    trained.save(tmp_path / "feedback")
    loaded = LoveRewardModel.load(tmp_path / "feedback" / "reward")
    frame = logs.results.head(400)
    np.testing.assert_array_equal(loaded.predict_observed(frame), trained.reward.predict_observed(frame))
    assert loaded.platt == trained.reward.platt
    assert (tmp_path / "feedback" / "gnolr" / "model.pt").is_file()
