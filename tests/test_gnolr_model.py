"""GNOLR: nested probabilities, the exact loss, and the two-tower model on synthetic logs with a
known structure (real MiniLM features, real Lightning training).

`synthetic_feedback_logs` is shared with the reward-model tests: topic documents whose grade
depends on their kind, shown by a logging ranker with position bias to simulated users.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import roc_auc_score

from models.gnolr import (
    GNOLRConfig,
    GNOLRModel,
    evaluate_levels,
    gnolr_loss,
    level_labels,
    nested_probabilities,
    ordered_thresholds,
)
from models.text_features import TextEmbeddingCache

TOPICS = [
    "caring for pet cats",
    "professional football tactics",
    "cooking Italian pasta",
    "investing in the stock market",
    "volcanic eruptions",
    "jazz improvisation",
    "learning Python programming",
    "organic vegetable gardening",
]
# Document kinds, each with the grade every document of that kind has for its own topic's queries.
KINDS = [
    ("The complete expert guide to {}, answering every question.", 2),
    ("A detailed handbook on {} with worked examples.", 2),
    ("A short news item that mentions {}.", 1),
    ("A forum post asking a question about {}.", 1),
]
QUERY_FORMS = ["{}", "how to get started with {}"]
# Simulated users: examination by position, and P(click), P(love | click) by grade.
EXAMINATION = [1.0, 0.6, 0.4, 0.25, 0.15, 0.1]
CLICK_BY_GRADE = [0.1, 0.5, 0.9]
LOVE_GIVEN_CLICK_BY_GRADE = [0.05, 0.25, 0.6]


@dataclass
class SyntheticLogs:
    results: pl.DataFrame  # the ingested-results contract, plus truth columns `grade` and `true_love_prob`
    docs: dict[str, str]


def true_love_prob(grade: int) -> float:
    """P(love | examined) under the synthetic users."""
    return CLICK_BY_GRADE[grade] * LOVE_GIVEN_CLICK_BY_GRADE[grade]


def synthetic_feedback_logs(sessions_per_query: int = 60, days: int = 4, seed: int = 0) -> SyntheticLogs:
    """Each query shows its topic's documents plus two off-topic ones in a near-fixed order: a
    per-pair logging score (weakly related to the grade) with a little per-session noise, so
    relevant documents often sit low and raw love rates are confounded by position."""
    rng = np.random.default_rng(seed)
    docs = {f"{t}-{k}": form.format(topic) for t, topic in enumerate(TOPICS) for k, (form, _) in enumerate(KINDS)}
    grade_of = {f"{t}-{k}": grade for t in range(len(TOPICS)) for k, (_, grade) in enumerate(KINDS)}
    rows = []
    for t, topic in enumerate(TOPICS):
        others = [d for d in docs if not d.startswith(f"{t}-")]
        for f, form in enumerate(QUERY_FORMS):
            query = form.format(topic)
            candidates = [f"{t}-{k}" for k in range(len(KINDS))] + list(rng.choice(others, 2, replace=False))
            pair_score = {d: 0.4 * grade_of[d] * d.startswith(f"{t}-") + rng.normal() for d in candidates}
            for s in range(sessions_per_query):
                session = f"s{t}-{f}-{s}"
                shown = sorted(candidates, key=lambda d: -(pair_score[d] + rng.normal(scale=0.5)))
                for position, doc_id in enumerate(shown, start=1):
                    grade = grade_of[doc_id] if doc_id.startswith(f"{t}-") else 0
                    examined = rng.random() < EXAMINATION[position - 1]
                    clicked = examined and rng.random() < CLICK_BY_GRADE[grade]
                    loved = clicked and rng.random() < LOVE_GIVEN_CLICK_BY_GRADE[grade]
                    actions = ["impression"] + ["click"] * clicked + ["love"] * loved
                    rows.append(
                        {
                            "query_id": f"q-{session}",
                            "session_id": session,
                            "user_id": f"u{s % 7}",
                            "day": dt.date(2025, 1, 1) + dt.timedelta(days=s % days),
                            "user_query": query,
                            "doc_id": doc_id,
                            "position": position,
                            "logging_rank": position,
                            "device": "desktop",
                            "impressed": True,
                            "clicked": clicked,
                            "loved": loved,
                            "actions": actions,
                            "grade": grade,
                            "true_love_prob": true_love_prob(grade),
                        }
                    )
    return SyntheticLogs(pl.DataFrame(rows), docs)


@pytest.fixture(scope="module")
def logs() -> SyntheticLogs:
    return synthetic_feedback_logs()


@pytest.fixture(scope="module")
def text_features(logs: SyntheticLogs) -> TextEmbeddingCache:
    cache = TextEmbeddingCache()
    cache.embed(logs.docs)
    return cache


@pytest.fixture(scope="module")
def model(logs: SyntheticLogs, text_features: TextEmbeddingCache) -> GNOLRModel:
    config = GNOLRConfig(max_epochs=12, batch_size=256, learning_rate=5e-3)
    return GNOLRModel.fit(logs.results, logs.docs, config, text_features=text_features)


def test_nested_probabilities_are_ordered_and_strictly_inside_the_unit_interval():
    torch.manual_seed(0)
    logits = torch.randn(500, 4) * 6
    probs = nested_probabilities(logits, ordered_thresholds(torch.randn(4)))
    assert probs.shape == (500, 4)
    assert ((probs > 0) & (probs < 1)).all()
    assert (probs[:, 1:] <= probs[:, :-1]).all()


def test_nested_probabilities_reject_unordered_thresholds():
    with pytest.raises(ValueError, match="non-decreasing"):
        nested_probabilities(torch.zeros(2, 2), torch.tensor([1.0, 0.0]))


def test_nested_probabilities_follow_the_formula():
    probs = nested_probabilities(torch.tensor([[1.0, 0.5]]), torch.tensor([0.2, 0.3]))
    z2 = 1.0 - math.log1p(math.exp(0.5))
    expected = [1 / (1 + math.exp(-(1.0 - 0.2))), 1 / (1 + math.exp(-(z2 - 0.3)))]
    assert probs[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_gnolr_loss_equals_the_hand_computed_value():
    probs = torch.tensor([[0.8, 0.3], [0.6, 0.1], [0.4, 0.2]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    ordinal = [-math.log(0.8 - 0.3), -math.log(1 - 0.6), -math.log(0.2)]
    binary = [
        -(math.log(0.8) + math.log(0.7)),
        -(math.log(0.4) + math.log(0.9)),
        -(math.log(0.4) + math.log(0.2)),
    ]
    expected = sum(o + 0.5 * b for o, b in zip(ordinal, binary, strict=True)) / 3
    assert float(gnolr_loss(probs, labels, binary_weight=0.5)) == pytest.approx(expected, rel=1e-6)


def test_gnolr_loss_stays_finite_when_levels_collapse_and_rejects_unnested_labels():
    equal = torch.tensor([[0.5, 0.5]])
    assert torch.isfinite(gnolr_loss(equal, torch.tensor([[1.0, 0.0]])))
    with pytest.raises(ValueError, match="nested"):
        gnolr_loss(equal, torch.tensor([[0.0, 1.0]]))


def test_level_labels_count_higher_actions_and_follow_the_configured_order():
    actions = [["impression"], ["impression", "click"], ["impression", "love"], ["click", "add_to_cart"], None]
    assert level_labels(actions, ["click", "love"]).tolist() == [[0, 0], [1, 0], [1, 1], [1, 0], [0, 0]]
    three = level_labels(actions, ["click", "add_to_cart", "love"])
    assert three.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0], [0, 0, 0]]


def test_config_rejects_bad_levels_and_modes():
    with pytest.raises(ValueError, match="distinct"):
        GNOLRConfig(levels=["click", "click"])
    with pytest.raises(ValueError, match="position_bias"):
        GNOLRConfig(position_bias="ips")


def test_training_loss_decreases(model: GNOLRModel):
    losses = model.training_losses
    assert len(losses) == 12
    assert losses[-1] < 0.85 * losses[0]


def test_model_ranks_higher_levels_above_lower_ones(model: GNOLRModel, logs: SyntheticLogs):
    pairs = logs.results.unique(["user_query", "doc_id"]).sort(["user_query", "doc_id"])
    probs = model.predict(pairs, logs.docs)
    assert (probs[:, 1] <= probs[:, 0]).all()
    grade = pairs["grade"].to_numpy()
    assert roc_auc_score(grade >= 1, probs[:, 0]) > 0.9  # P(click) separates relevant from irrelevant
    relevant = grade >= 1
    assert roc_auc_score(grade[relevant] == 2, probs[relevant, 1]) > 0.9  # P(love) separates the top grade
    by_grade = [probs[grade == g, 1].mean() for g in range(3)]
    assert by_grade[0] < by_grade[1] < by_grade[2]


def test_learned_examination_decreases_with_position(model: GNOLRModel):
    theta = model.examination([1, 2, 3, 6])
    assert theta[0] == 1.0
    assert theta[3] < theta[1] < 1.0  # true curve: 1, 0.6, 0.4, ..., 0.1


def test_new_documents_are_scored_from_their_text(model: GNOLRModel):
    new_docs = {f"new-{t}": f"An in-depth expert guide to {topic} for everyone." for t, topic in enumerate(TOPICS)}
    pairs = pl.DataFrame({"user_query": [t for t in TOPICS for _ in new_docs], "doc_id": list(new_docs) * len(TOPICS)})
    click = model.predict(pairs, new_docs)[:, 0].reshape(len(TOPICS), len(new_docs))
    on_topic = np.eye(len(TOPICS), dtype=bool)
    assert (click.argmax(axis=1) == np.arange(len(TOPICS))).sum() >= 6  # the query's own topic comes first
    assert click[on_topic].mean() > 2 * click[~on_topic].mean()


def test_prediction_of_an_unknown_document_without_text_is_a_clear_error(model: GNOLRModel):
    with pytest.raises(KeyError, match="no text"):
        model.predict(pl.DataFrame({"user_query": ["jazz"], "doc_id": ["never-seen"]}), {})


def test_evaluate_levels_reports_auc_per_level(model: GNOLRModel, logs: SyntheticLogs):
    report = evaluate_levels(model, logs.results.head(3000), logs.docs)
    assert set(report) == {"click", "love"}
    assert report["click"]["auc"] > 0.75
    assert 0 < report["love"]["rate"] < report["click"]["rate"]


def test_user_tower_learns_from_user_ids(logs: SyntheticLogs, text_features: TextEmbeddingCache):
    config = GNOLRConfig(query_tower="user", max_epochs=3, batch_size=512)
    model = GNOLRModel.fit(logs.results, logs.docs, config, text_features=text_features)
    probs = model.predict(logs.results.head(200).select("user_id", "doc_id"), logs.docs)
    assert probs.shape == (200, 2)
    assert model.training_losses[-1] < model.training_losses[0]


def test_save_and_load_give_identical_predictions(model: GNOLRModel, logs: SyntheticLogs, tmp_path: Path):
    model.save(tmp_path / "gnolr")
    loaded = GNOLRModel.load(tmp_path / "gnolr")
    frame = logs.results.head(300)
    np.testing.assert_array_equal(loaded.predict_observed(frame), model.predict_observed(frame))
    assert loaded.training_losses == model.training_losses


def test_given_propensities_are_the_examination_curve_and_survive_save_load(
    logs: SyntheticLogs, text_features: TextEmbeddingCache, tmp_path: Path
):
    config = GNOLRConfig(position_bias="propensities", max_epochs=1)
    with pytest.raises(ValueError, match="needs the propensities"):
        GNOLRModel.fit(logs.results, logs.docs, config, text_features=text_features)
    model = GNOLRModel.fit(
        logs.results.head(2000), logs.docs, config, propensities=EXAMINATION, text_features=text_features
    )
    model.save(tmp_path / "gnolr")
    theta = GNOLRModel.load(tmp_path / "gnolr").examination([1, 3, 6, 9])  # beyond the curve: its last value
    assert theta.tolist() == pytest.approx([1.0, 0.4, 0.1, 0.1])
