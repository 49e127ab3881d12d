"""Stage `feedback`: the models that turn the ingested clicks and loves into unbiased signal.

From `data/ingested/results.parquet` it writes, under `data/feedback/` (one atomic swap):

- `propensities.json`: examination propensity by position (per device when the logs say),
  harvested from exploration or by regression EM (`models.propensity`);
- `labels.parquet`: clipped-IPS relevance labels per (query, document) beside the naive click
  rate (`models.relevance_labels`), the training signal of the retrievers;
- `gnolr/` and `reward/`: the ordinal impression < click < love model and the calibrated
  P[love] reward, trained on all days but the held-out last one (`models.reward`);
- `recommender/`: the unbiased user -> item recommender with its FAISS index
  (`models.recommendation.artifact`, served by `indexing.Recommender`), skipped with a reason
  when the logs name no users;

and `metrics/feedback.json` with each model's held-out figures.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from clickloop.atomic import atomic_path, write_json
from clickloop.beir import BeirDataset
from clickloop.params import load_params, section
from models.gnolr import GNOLRConfig
from models.propensity import PropensityConfig, estimate_propensities
from models.recommendation.artifact import train_recommender
from models.recommendation.factorization import RecommenderConfig
from models.relevance_labels import LabelConfig, relevance_labels, write_labels
from models.reward import RewardConfig, train_feedback_models

log = logging.getLogger(__name__)


@dataclass
class FeedbackConfig:
    """params.yaml section `feedback`."""

    propensity: PropensityConfig = field(default_factory=PropensityConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    gnolr: GNOLRConfig = field(default_factory=GNOLRConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    recommender: RecommenderConfig = field(default_factory=RecommenderConfig)
    dataset_dir: str = "data/dataset"
    results_file: str = "data/ingested/results.parquet"
    out_dir: str = "data/feedback"
    metrics_file: str = "metrics/feedback.json"


def run(config: FeedbackConfig) -> dict[str, Any]:
    """Fit every feedback model on the ingested results; write the artifacts and return the metrics."""
    results = pl.read_parquet(config.results_file)
    docs = {doc.doc_id: doc.contents for doc in BeirDataset(Path(config.dataset_dir)).corpus()}
    curve = estimate_propensities(results, config.propensity)
    if curve.diagnostics.get("relevance_model") == "per_pair" and not curve.diagnostics["multi_position_pairs"]:
        log.warning(
            "no (query, document) was shown at two positions and the logs carry no exploration: the examination "
            "curve is not identified and stays at the naive click-rate curve; log some exploration traffic"
        )
    if curve.estimator == "latent_class_em":
        log.warning(
            "the logs carry too little exploration to harvest the examination curve; it rests on the latent-class "
            "model (%d relevance classes), standard errors of log θ by position: %s. Log some exploration traffic "
            "to check it",
            curve.diagnostics["latent_classes"],
            ", ".join(f"{se:.2f}" for se in curve.diagnostics["log_theta_se"]),
        )
    labels = relevance_labels(results, curve, config.labels)
    models = train_feedback_models(results, docs, config.gnolr, config.reward, list(curve.relative))
    metrics: dict[str, Any] = {
        "propensity": {
            "estimator": curve.estimator,
            "theta": list(curve.relative),
            "by_context": {value: list(c.relative) for value, c in curve.by_context.items()},
        },
        "labels": _label_summary(labels),
        # The models' configs are params.yaml's; DVC already tracks them there.
        **{name: value for name, value in models.metrics.items() if name != "config"},
    }
    with atomic_path(config.out_dir) as staged:
        staged.mkdir()
        curve.to_json(staged / "propensities.json")
        write_labels(labels, staged / "labels.parquet")
        models.save(staged)
        metrics["recommender"] = _recommender(results, list(curve.relative), config.recommender, staged / "recommender")
    write_json(config.metrics_file, metrics)
    return metrics


def _label_summary(labels: pl.DataFrame) -> dict[str, Any]:
    return {
        "pairs": labels.height,
        "clicked_pairs": labels.filter(pl.col("n_clicks") > 0).height,
        "mean_naive_ctr": float(labels["naive_ctr"].mean()),
        "mean_ips_label": float(labels["ips_label"].mean()),
        "mean_posterior_relevance": float(labels["posterior_relevance"].mean()),
    }


def _recommender(results: pl.DataFrame, theta: list[float], config: RecommenderConfig, out_dir: Path) -> dict[str, Any]:
    if results["user_id"].drop_nulls().is_empty():
        log.warning("no result rows carry a user_id: the recommender is not trained")
        return {"skipped": "the logs name no users"}
    return train_recommender(results, theta, config, out_dir)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = section("feedback", FeedbackConfig)
    config.gnolr.seed = config.reward.seed = config.recommender.seed = int(load_params()["seed"])
    metrics = run(config)
    summary = {k: v for k, v in metrics.items() if k in ("propensity", "labels", "reward")}
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
