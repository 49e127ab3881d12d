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

and `metrics/feedback.json` with each model's held-out figures. Before anything is learned, the
traffic guard (`models.traffic_guard`) sets aside the rows of clients whose volume or click pattern
is implausible, counted by reason in `metrics/feedback.json` `traffic_guard`.

It runs on whatever the logs hold. With no logged results at all (a new deployment, simulation
off) it writes an empty `labels.parquet` and nothing else (the sparse stage then starts cold, the
evaluate stage reports judged metrics only). With too few days or queries to hold out, GNOLR and
the reward are skipped with the reason. Logged documents absent from the corpus (removed since,
or a catalog out of step with the logs) are counted in `unknown_documents`: they still inform the
examination curve and the labels (both facts about the logs), but GNOLR and the reward need their
text and the recommender must not recommend them, so those learn from the corpus documents only.
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
from models.gnolr import GNOLRConfig, level_labels
from models.propensity import QUERY, PropensityConfig, estimate_propensities
from models.recommendation.artifact import dense_item_features, train_recommender
from models.recommendation.factorization import RecommenderConfig
from models.relevance_labels import LABEL_COLUMNS, LabelConfig, relevance_labels, write_labels
from models.reward import RewardConfig, reward_splits, train_feedback_models
from models.traffic_guard import TrafficGuardConfig, guard

log = logging.getLogger(__name__)


@dataclass
class FeedbackConfig:
    """params.yaml section `feedback`."""

    propensity: PropensityConfig = field(default_factory=PropensityConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    gnolr: GNOLRConfig = field(default_factory=GNOLRConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    recommender: RecommenderConfig = field(default_factory=RecommenderConfig)
    traffic_guard: TrafficGuardConfig = field(default_factory=TrafficGuardConfig)
    dataset_dir: str = "data/dataset"
    dense_dir: str = "data/indices/dense"  # the recommender's text tower reads its document vectors
    results_file: str = "data/ingested/results.parquet"
    out_dir: str = "data/feedback"
    metrics_file: str = "metrics/feedback.json"


def run(config: FeedbackConfig) -> dict[str, Any]:
    """Fit every feedback model on the ingested results; write the artifacts and return the metrics."""
    results = pl.read_parquet(config.results_file)
    docs = {doc.doc_id: doc.contents for doc in BeirDataset(Path(config.dataset_dir)).corpus()}
    unknown = unknown_documents(results, docs)
    if unknown["result_rows"]:
        log.warning(
            "%d logged results (%d distinct documents, e.g. %s) name documents absent from the corpus: they count "
            "for the examination curve and the labels, not for GNOLR, the reward or the recommender",
            unknown["result_rows"], unknown["distinct"], unknown["examples"],
        )
    # Implausible clients (spam, click farms) are set aside, with the reason, before any model learns.
    guarded = guard(results, config.traffic_guard)
    results = guarded.kept
    if guarded.report.get("clients_flagged"):
        log.warning("traffic guard: %d clients flagged, %d of %d result rows set aside (%s)",
                    guarded.report["clients_flagged"], guarded.report["rows_set_aside"], guarded.report["rows_in"],
                    {r: v["clients"] for r, v in guarded.report["by_reason"].items() if v["clients"]})
    if results.is_empty():
        return _without_logs(config, unknown)
    known = results.filter(pl.col("doc_id").is_in(list(docs)))
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
    skipped = _reward_skip_reason(known, config)
    models = None
    if skipped:
        log.warning("GNOLR and the P[love] reward are not trained: %s", skipped)
    else:
        models = train_feedback_models(known, docs, config.gnolr, config.reward, list(curve.relative))
    metrics: dict[str, Any] = {
        "logs": _log_summary(results),
        "unknown_documents": unknown,
        "traffic_guard": guarded.report,
        "propensity": {
            "estimator": curve.estimator,
            "theta": list(curve.relative),
            "by_context": {value: list(c.relative) for value, c in curve.by_context.items()},
        },
        "labels": _label_summary(labels),
        # The models' configs are params.yaml's; DVC already tracks them there.
        **({name: value for name, value in models.metrics.items() if name != "config"} if models
           else {"gnolr": {"skipped": skipped}, "reward": {"skipped": skipped}}),
    }
    with atomic_path(config.out_dir) as staged:
        staged.mkdir()
        curve.to_json(staged / "propensities.json")
        write_labels(labels, staged / "labels.parquet")
        if models:
            models.save(staged)
        metrics["recommender"] = _recommender(known, list(curve.relative), config, staged / "recommender")
    write_json(config.metrics_file, metrics)
    return metrics


def unknown_documents(results: pl.DataFrame, docs: dict[str, str], examples: int = 5) -> dict[str, Any]:
    """How many logged results name a document the corpus lacks: rows, clicked rows, distinct ids, a few."""
    absent = results.filter(~pl.col("doc_id").is_in(list(docs)))
    distinct = absent["doc_id"].unique().sort()
    return {
        "result_rows": absent.height,
        "clicked_rows": int(absent["clicked"].sum()),
        "distinct": distinct.len(),
        "share_of_rows": round(absent.height / results.height, 6) if results.height else 0.0,
        "examples": distinct.head(examples).to_list(),
    }


def empty_labels() -> pl.DataFrame:
    """labels.parquet with no rows, in the schema `relevance_labels` writes (the sparse stage reads it)."""
    dtypes = {QUERY: pl.String, "doc_id": pl.String, "n_impressions": pl.UInt32, "n_clicks": pl.Int64,
              "n_loves": pl.Int64}
    return pl.DataFrame(schema={name: dtypes.get(name, pl.Float64) for name in LABEL_COLUMNS})


def _without_logs(config: FeedbackConfig, unknown: dict[str, Any]) -> dict[str, Any]:
    """No logged results: an empty label table (a DVC output the sparse stage reads) and the reason."""
    reason = f"no logged results in {config.results_file}"
    log.warning("%s: no feedback model is trained (the sparse stage starts cold, evaluate reports judged "
                "metrics only); drop UBI logs into feedback_logs/YYYY-MM-DD/ or turn simulate.enabled on", reason)
    with atomic_path(config.out_dir) as staged:
        staged.mkdir()
        write_labels(empty_labels(), staged / "labels.parquet")
    metrics = {"logs": {"result_rows": 0, "queries": 0, "days": 0}, "unknown_documents": unknown,
               "skipped": reason, "labels": {"pairs": 0}}
    write_json(config.metrics_file, metrics)
    return metrics


def _log_summary(results: pl.DataFrame) -> dict[str, int]:
    return {"result_rows": results.height, "queries": results["query_id"].n_unique(),
            "days": results["day"].n_unique()}


def _reward_skip_reason(results: pl.DataFrame, config: FeedbackConfig) -> str | None:
    """Why GNOLR and the reward cannot be trained on `results`, or None: they hold out the last days and a
    calibration slice of the queries that needs results with and without the love level (the checks
    `train_feedback_models` would fail on, as a reason: real logs may hold one day, or no loves yet)."""
    reward = config.reward
    if results.is_empty():
        return "no logged result names a corpus document"
    days = results["day"].n_unique()
    if days <= reward.holdout_days:
        return f"{days} day(s) of logs, and the last {reward.holdout_days} day(s) are held out for evaluation"
    splits = reward_splits(results, reward)
    if splits.fit.is_empty() or splits.calibration.is_empty():
        return "too few distinct queries to hold out a calibration slice"
    calibration = splits.calibration
    if reward.love_level in config.gnolr.levels:  # else train_feedback_models names the misconfiguration
        levels = level_labels(calibration["actions"].to_list(), config.gnolr.levels)
        loved = int((levels[:, config.gnolr.levels.index(reward.love_level)] > 0).sum())
        if not 0 < loved < calibration.height:
            return (f"{loved} of the {calibration.height} results in the calibration slice reached "
                    f"{reward.love_level!r}: the reward is calibrated on both outcomes")
    return None


def _label_summary(labels: pl.DataFrame) -> dict[str, Any]:
    return {
        "pairs": labels.height,
        "clicked_pairs": labels.filter(pl.col("n_clicks") > 0).height,
        "mean_naive_ctr": float(labels["naive_ctr"].mean()),
        "mean_ips_label": float(labels["ips_label"].mean()),
        "mean_posterior_relevance": float(labels["posterior_relevance"].mean()),
    }


def _recommender(results: pl.DataFrame, theta: list[float], config: FeedbackConfig, out_dir: Path) -> dict[str, Any]:
    if results["user_id"].drop_nulls().is_empty():
        log.warning("no result rows carry a user_id: the recommender is not trained")
        return {"skipped": "the logs name no users"}
    # The text tower scores every catalog item, the ones no log names (cold) included, from its dense vector.
    features = dense_item_features(config.dense_dir) if config.recommender.text_tower else None
    return train_recommender(results, theta, config.recommender, out_dir, features)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = section("feedback", FeedbackConfig)
    config.gnolr.seed = config.reward.seed = config.recommender.seed = int(load_params()["seed"])
    metrics = run(config)
    summary = {k: v for k, v in metrics.items() if k in ("propensity", "labels", "reward")}
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
