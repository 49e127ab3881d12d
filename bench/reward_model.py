"""Semi-synthetic SciFact benchmark of GNOLR and the P[love] reward model (issue "Feedback
models", part B).

SciFact's 809 train queries are issued by the project's simulator over a BM25 logging ranker
(the project's Lucene index, top 100, 10 shown, 10% of searches shuffled), the UBI logs are
ingested, and `models.reward.train_feedback_models` trains GNOLR on days 1..N-1 (minus a
calibration slice of queries) and calibrates the reward. On the held-out day it reports:

- GNOLR AUC per level (click, love), position-aware and examined-only;
- P[love] AUC and ECE (10 equal-width bins) against the logged loves, and the reward per true
  grade against the truth's love probability at position 1;
- baselines measured in the same run on the same day: the love rate by position (training
  days), and the per-(query, doc) love rate of the training days (global rate when unseen);
- the ceiling: the AUC of the truth itself, each row's examination probability x the love rate
  of examined results of its grade (no model can rank the logged loves better, bar noise);
- the off-policy report: rewards of (query, doc) pairs the logging ranker never showed
  (BM25 ranks 50-200 and random documents) against their true love probability.

Truth scale: the reward is P(love | query, doc, shown at position 1) (learned examination with
theta_1 = 1); its truth is theta_1 x P(love | examined, grade), both measured on the
simulator's truth rows (so noisy and adversarial users are included as they are in the logs).

Every figure is measured over several seeds (`--seeds`, 13 14 15 by default: the simulation,
the query splits and GNOLR's training), and on two kinds of rows: the held-out day of the queries
the reward trained on, and every day of a share of queries held out of training and calibration
altogether (`heldout_query_fraction`): the reward on queries it has not seen, as a policy will
ask it. Each seed also reports the calibration that was fitted (monotone: scale >= 0, or the
model's own probabilities with the reason).

Run: `nice -n 15 .venv/bin/python -m bench.reward_model [--sessions-per-day N] [--seeds 13 14 15]`.
Writes reports/reward_model.json and .md and prints them.

`--dataset default --pipeline-dir DIR` does the same on the embedded default's simulated week as
the pipeline left it in DIR (`data/ingested/results.parquet`, `data/dataset/`,
`data/simulated_truth/`; copy them out of a running checkout first): one simulation, the seeds
vary the query splits and the training. Writes reports/reward_model_default.json and .md.

`--pipeline` instead reads the default pipeline's outputs (after `dvc repro`): its reward AUC on
the held-out day beside the truth's own AUC there; writes reports/reward_model_pipeline.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from bench.scifact_logs import REPO, SCIFACT, bm25_rankings, ingest_logs, portable, scifact
from clickloop.atomic import atomic_path, write_json, write_text
from clickloop.beir import BeirDataset, Qrels
from clickloop.simulation.click_models import relevance_grades
from clickloop.simulation.config import ExplorationConfig, SimulatorConfig
from clickloop.simulation.simulator import Simulator
from clickloop.simulation.ubi_logs import write_simulation
from models.gnolr import GNOLRConfig
from models.reward import RewardConfig, off_policy_report, reward_splits, train_feedback_models
from models.text_features import TextEmbeddingCache


@dataclass
class BenchConfig:
    dataset_dir: Path = SCIFACT
    work_dir: Path = REPO / "data" / "bench" / "reward_model"
    report_file: Path = REPO / "reports" / "reward_model.json"
    days: int = 7
    sessions_per_day: int = 2000
    depth: int = 200  # BM25 candidates per query: the logging ranker shows the top `shown`
    shown: int = 10
    exploration_share: float = 0.1
    unseen_bm25_ranks: tuple[int, int] = (50, 200)  # off-policy pairs: BM25 ranks in this range
    unseen_per_query: int = 10  # sampled per query from each off-policy source
    off_policy_queries: int = 300
    seed: int = 13
    seeds: tuple[int, ...] = (13, 14, 15)
    gnolr: GNOLRConfig = field(default_factory=GNOLRConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def with_seed(self, seed: int) -> BenchConfig:
        """The same bench with `seed` for the simulation, the query splits and GNOLR's training."""
        return dataclasses.replace(
            self,
            seed=seed,
            gnolr=dataclasses.replace(self.gnolr, seed=seed),
            reward=dataclasses.replace(self.reward, seed=seed),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions-per-day", type=int, default=BenchConfig.sessions_per_day)
    parser.add_argument("--epochs", type=int, default=GNOLRConfig.max_epochs)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(BenchConfig.seeds))
    parser.add_argument("--dataset", choices=("scifact", "default"), default="scifact")
    parser.add_argument("--pipeline-dir", type=Path, default=REPO, help="--dataset default: where data/ lies")
    parser.add_argument("--search-share", type=float, default=1.0,
                        help="--dataset default: keep this share of the logged searches (all queries)")
    parser.add_argument("--work-dir", type=Path, default=BenchConfig.work_dir)
    parser.add_argument("--no-doc-id", action="store_true", help="GNOLR without document-id embeddings (text only)")
    parser.add_argument("--report-file", type=Path, default=None, help="instead of reports/reward_model[_default].json")
    parser.add_argument("--off-policy-queries", type=int, default=BenchConfig.off_policy_queries,
                        help="queries of the never-shown-pairs report (0: no such report)")
    parser.add_argument("--pipeline", action="store_true", help="the default pipeline's reward against its ceiling")
    args = parser.parse_args()
    if args.pipeline:
        report = pipeline_ceiling(REPO)
        write_json(REPO / "reports" / "reward_model_pipeline.json", report)
        print(json.dumps(report, indent=2))
        return
    config = BenchConfig(
        sessions_per_day=args.sessions_per_day,
        gnolr=GNOLRConfig(max_epochs=args.epochs, use_doc_id=not args.no_doc_id),
        seeds=tuple(args.seeds),
        work_dir=args.work_dir,
        off_policy_queries=args.off_policy_queries,
    )
    if args.dataset == "default":
        config = dataclasses.replace(config, report_file=REPO / "reports" / "reward_model_default.json")
    if args.report_file:
        config = dataclasses.replace(config, report_file=args.report_file)
        share = f", {args.search_share:.0%} of its searches" if args.search_share < 1 else ""
        dataset = f"embedded default (the pipeline's simulated week{share}, GNOLR {args.epochs} epochs)"
        report = run_seeds(config, lambda seeded: run_pipeline_logs(seeded, args.pipeline_dir, args.search_share),
                           dataset)
    else:
        dataset = f"SciFact train queries, simulated over BM25 ({args.sessions_per_day} sessions a day for 7 days)"
        report = run_seeds(config, run, dataset)
    print(markdown_seeds(report))


def run_seeds(config: BenchConfig, bench: Callable[[BenchConfig], dict[str, Any]], dataset: str) -> dict[str, Any]:
    """`bench` once per seed; the report (per-seed summary rows, their mean and sd) is written after each."""
    per_seed: dict[str, Any] = {}
    for seed in config.seeds:
        per_seed[str(seed)] = bench(config.with_seed(seed))
        print(json.dumps(summary_row(per_seed[str(seed)])), flush=True)
        report = _seeds_report(per_seed) | {"dataset": dataset}
        write_json(config.report_file, report)
        write_text(config.report_file.with_suffix(".md"), markdown_seeds(report))
    return report


def _seeds_report(per_seed: dict[str, Any]) -> dict[str, Any]:
    rows = {seed: summary_row(report) for seed, report in per_seed.items()}
    numbers = list(dict.fromkeys(k for r in rows.values() for k, v in r.items() if isinstance(v, float)))
    spread = {
        k: {"mean": float(np.mean(values)), "sd": float(np.std(values)), "min": float(np.min(values))}
        for k in numbers
        if (values := [r[k] for r in rows.values() if isinstance(r.get(k), float)])
    }
    return {"summary": {"per_seed": rows, "over_seeds": spread}, "seeds": per_seed}


def summary_row(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of one seed: held-out day and held-out queries, calibration."""
    metrics = report["feedback_metrics"]
    day, unseen = metrics["reward"], metrics["reward_heldout_queries"]
    row: dict[str, Any] = {
        "day_auc": day["auc"], "day_auc_reward_only": day["auc_reward_only"], "day_ece": day["ece"],
        "day_auc_truth_ceiling": report["baselines_held_out_day"]["auc_truth_ceiling"],
        "calibration": day["calibration"]["method"], "platt_scale": day["platt"][0],
        "unconstrained_scale": day["calibration"].get("unconstrained_scale"),
        "calibration_queries": metrics["split"]["calibration_queries"],
        "heldout_queries": metrics["split"]["heldout_queries"],
    }
    if "skipped" not in unseen:
        row |= {
            "queries_auc": unseen["auc"], "queries_auc_reward_only": unseen["auc_reward_only"],
            "queries_ece": unseen["ece"], "queries_auc_truth_ceiling": report["heldout_queries"]["auc_truth_ceiling"],
            "queries_auc_relevant": report["heldout_queries"]["auc_relevant_pairs"],
        }
    return row


def run(config: BenchConfig) -> dict[str, Any]:
    started = time.monotonic()
    dataset = scifact(config.dataset_dir)
    docs = {doc.doc_id: doc.contents for doc in dataset.corpus()}
    queries, qrels = dataset.queries("train"), dataset.qrels("train")
    candidates = bm25_candidates(config, dataset, queries)
    results, truth = simulate(config, queries, candidates, qrels)
    timings = {"simulate_and_ingest_s": time.monotonic() - started}

    report = train_and_score(config, results, truth, docs, timings)
    models = report.pop("models")
    true_reward = report["true_reward_by_grade"]
    if config.off_policy_queries > 0:
        unseen, shown = off_policy_pairs(config, results, truth, queries, candidates, docs, qrels, true_reward)
        report["off_policy"] = off_policy_report(models.reward, unseen, shown, docs)
    report["timings"] = timings | {"total_s": time.monotonic() - started}
    return report


def run_pipeline_logs(config: BenchConfig, pipeline_dir: Path, search_share: float = 1.0) -> dict[str, Any]:
    """The same figures on the logs and truth a pipeline run left in `pipeline_dir` (one simulation);
    `search_share` < 1 keeps that share of the searches (chosen by a hash of the search id)."""
    started = time.monotonic()
    docs = {doc.doc_id: doc.contents for doc in BeirDataset(pipeline_dir / "data" / "dataset").corpus()}
    results = pl.read_parquet(pipeline_dir / "data" / "ingested" / "results.parquet")
    results = results.filter(pl.col("doc_id").is_in(list(docs)))
    if search_share < 1:
        results = results.filter(pl.col("query_id").hash(seed=7) % 10_000 < int(search_share * 10_000))
    truth = read_truth(pipeline_dir / "data" / "simulated_truth" / "results.parquet")
    report = train_and_score(config, results, truth, docs, {})
    report.pop("models")
    report["timings"]["total_s"] = time.monotonic() - started
    return report


def train_and_score(
    config: BenchConfig, results: pl.DataFrame, truth: pl.DataFrame, docs: dict[str, str], timings: dict[str, float]
) -> dict[str, Any]:
    """Train the feedback models on `results`; score them on the held-out day and held-out queries."""
    trained_at = time.monotonic()
    cache_dir = config.work_dir / f"doc_embeddings_{len(docs)}"
    doc_features = TextEmbeddingCache.load(cache_dir) if (cache_dir / "keys.json").is_file() else None
    models = train_feedback_models(results, docs, config.gnolr, config.reward, text_features=doc_features)
    timings["train_s"] = time.monotonic() - trained_at
    with atomic_path(cache_dir) as staged:  # holds every document embedded above, for the next run
        models.gnolr.doc_features.save(staged)
    true_reward = true_reward_by_grade(truth)
    splits = reward_splits(results, config.reward)
    test = _with_grades(splits.test, truth)
    heldout = _with_grades(splits.heldout_queries, truth)
    report: dict[str, Any] = {
        "config": portable(dataclasses.asdict(config)),
        "n_results": results.height,
        "n_days": results["day"].n_unique(),
        "feedback_metrics": models.metrics,
        "baselines_held_out_day": baselines(pl.concat([splits.fit, splits.calibration]), test)
        | {"auc_truth_ceiling": truth_auc(test, truth)},
        "reward_vs_truth_held_out_day": reward_vs_truth(models.reward.predict(test, docs), test, true_reward),
        "true_reward_by_grade": true_reward,
        "timings": timings,
        "models": models,
    }
    if not heldout.is_empty():
        pairs = heldout.unique(["user_query", "doc_id"])
        report["heldout_queries"] = {
            "auc_truth_ceiling": truth_auc(heldout, truth),
            "pairs": pairs.height,
            "auc_relevant_pairs": float(roc_auc_score(pairs["grade"] > 0, models.reward.predict(pairs, docs)))
            if 0 < int((pairs["grade"] > 0).sum()) < pairs.height else float("nan"),
            "reward_vs_truth": reward_vs_truth(models.reward.predict(heldout, docs), heldout, true_reward),
        }
    return report


def _with_grades(frame: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    joined = frame.join(truth, on=["query_id", "doc_id"], how="left")
    if joined["grade"].null_count():
        raise RuntimeError("results without a truth row: the simulator and ingest disagree")
    return joined


def bm25_candidates(config: BenchConfig, dataset: BeirDataset, queries: dict[str, str]) -> dict[str, list[str]]:
    rankings = bm25_rankings(dataset, config.work_dir / "bm25", queries, config.depth)
    return {qid: [doc_id for doc_id, _ in ranking] for qid, ranking in rankings.items()}


def simulate(
    config: BenchConfig, queries: dict[str, str], candidates: dict[str, list[str]], qrels: Qrels
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Ingested results of the simulated days, and the truth rows (grade, examined, loved)."""
    simulator_config = SimulatorConfig(
        days=config.days,
        sessions_per_day=config.sessions_per_day,
        top_k=config.shown,
        exploration=ExplorationConfig(scheme="shuffle_top_n", share=config.exploration_share, n=config.shown),
    )
    simulator = Simulator(simulator_config, queries, candidates, qrels, config.seed)
    run_dir = config.work_dir / f"sim_{config.days}x{config.sessions_per_day}_seed{config.seed}"
    if not (run_dir / "ingested" / "results.parquet").is_file():
        write_simulation(simulator, run_dir / "logs", run_dir / "truth")
        ingest_logs(run_dir / "logs", run_dir)
    return pl.read_parquet(run_dir / "ingested" / "results.parquet"), read_truth(run_dir / "truth" / "results.parquet")


def read_truth(path: Path) -> pl.DataFrame:
    """The simulator's truth rows (grade, examination probability, examined, loved) per shown result."""
    truth = pl.read_parquet(path).select(
        "query_id", "doc_id", "position", "grade", "examination_prob", "examined", "loved"
    )
    return truth.rename({"position": "truth_position", "loved": "truth_loved"})


def pipeline_ceiling(repo: Path) -> dict[str, Any]:
    """The default pipeline's reward AUC on its held-out day(s) and the truth's own AUC there."""
    metrics = json.loads((repo / "metrics" / "feedback.json").read_text())
    results = pl.read_parquet(repo / "data" / "ingested" / "results.parquet")
    truth = read_truth(repo / "data" / "simulated_truth" / "results.parquet")
    days = [dt.date.fromisoformat(day) for day in metrics["split"]["test_days"]]
    test = results.filter(pl.col("day").is_in(days)).join(truth, on=["query_id", "doc_id"], how="left")
    if test["grade"].null_count():
        raise RuntimeError("held-out results without a truth row: the simulator and ingest disagree")
    return {
        "test_days": metrics["split"]["test_days"],
        "n": test.height,
        "reward_auc": metrics["reward"]["auc"],
        "reward_ece": metrics["reward"]["ece"],
        "truth_ceiling_auc": truth_auc(test, truth),
    }


def true_reward_by_grade(truth: pl.DataFrame) -> dict[int, float]:
    """theta_1 x P(love | examined, grade), measured on the simulator's truth rows."""
    theta_1 = truth.filter(pl.col("truth_position") == 1)["examined"].mean()
    examined = truth.filter(pl.col("examined")).group_by("grade").agg(pl.col("truth_loved").mean())
    return {int(g): float(theta_1 * rate) for g, rate in examined.sort("grade").iter_rows()}


def baselines(train: pl.DataFrame, test: pl.DataFrame) -> dict[str, Any]:
    """AUC against the held-out loves of estimators that need no model."""
    loved = test["loved"].to_numpy()
    by_position = train.group_by("position").agg(pl.col("loved").mean().alias("by_position"))
    by_pair = train.group_by("user_query", "doc_id").agg(pl.col("loved").mean().alias("by_pair"))
    scored = (
        test.join(by_position, on="position", how="left")
        .join(by_pair, on=["user_query", "doc_id"], how="left")
        .with_columns(pl.col("by_position", "by_pair").fill_null(train["loved"].mean()))
    )
    return {
        "love_rate": float(loved.mean()),
        "auc_love_rate_by_position": float(roc_auc_score(loved, scored["by_position"])),
        "auc_love_rate_by_query_doc": float(roc_auc_score(loved, scored["by_pair"])),
        "share_pairs_seen_in_training": float(test.join(by_pair, on=["user_query", "doc_id"], how="semi").height)
        / test.height,
    }


def truth_auc(test: pl.DataFrame, truth: pl.DataFrame) -> float:
    """AUC against the held-out loves of the truth's P(love at the shown position)."""
    examined = truth.filter(pl.col("examined")).group_by("grade").agg(pl.col("truth_loved").mean().alias("rate"))
    scored = test.join(examined, on="grade", how="left").with_columns(pl.col("rate").fill_null(0.0))
    return float(roc_auc_score(test["loved"].to_numpy(), (scored["examination_prob"] * scored["rate"]).to_numpy()))


def reward_vs_truth(reward: np.ndarray, test: pl.DataFrame, true_reward: dict[int, float]) -> dict[str, Any]:
    grade = test["grade"].to_numpy()
    truth = np.array([true_reward.get(int(g), 0.0) for g in grade])
    per_grade = {
        int(g): {"n": int((grade == g).sum()), "mean_reward": float(reward[grade == g].mean()), "true": true_reward[g]}
        for g in np.unique(grade)
    }
    return {"mean_abs_error_vs_true_reward": float(np.abs(reward - truth).mean()), "per_grade": per_grade}


def off_policy_pairs(
    config: BenchConfig,
    results: pl.DataFrame,
    truth: pl.DataFrame,
    queries: dict[str, str],
    candidates: dict[str, list[str]],
    docs: dict[str, str],
    qrels: Qrels,
    true_reward: dict[int, float],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Never-shown pairs (BM25 ranks 50-200, random documents) and the shown pairs, with truth."""
    rng = np.random.default_rng(config.seed)
    grades = relevance_grades(qrels)
    shown_pairs = results.select("user_query", "doc_id").unique()
    # The logs carry the query text; the dataset's query id (for qrels and BM25) is found by text.
    text_to_qid = {text: qid for qid, text in sorted(queries.items(), reverse=True)}
    issued = sorted(set(shown_pairs["user_query"].to_list()))
    chosen = rng.choice(issued, min(config.off_policy_queries, len(issued)), replace=False)
    shown_set = set(shown_pairs.iter_rows())
    corpus = np.array(sorted(docs))
    low, high = config.unseen_bm25_ranks
    rows = []
    for text in chosen:
        qid = text_to_qid[text]
        sources = {
            f"bm25_{low}_{high}": rng.permutation(candidates[qid][low - 1 : high])[: config.unseen_per_query],
            "random": rng.choice(corpus, config.unseen_per_query, replace=False),
        }
        for source, doc_ids in sources.items():
            for doc_id in doc_ids:
                if (text, doc_id) not in shown_set:
                    grade = grades.get(qid, {}).get(doc_id, 0)
                    rows.append((text, str(doc_id), source, grade))
    unseen = pl.DataFrame(rows, schema=["user_query", "doc_id", "source", "grade"], orient="row")
    shown = (
        results.select("user_query", "doc_id", "query_id")
        .join(truth.select("query_id", "doc_id", "grade"), on=["query_id", "doc_id"])
        .unique(["user_query", "doc_id"])
        .filter(pl.col("user_query").is_in(chosen.tolist()))
    )
    return tuple(_with_truth(frame, true_reward) for frame in (unseen, shown))  # type: ignore[return-value]


def _with_truth(frame: pl.DataFrame, true_reward: dict[int, float]) -> pl.DataFrame:
    return frame.with_columns(
        pl.col("grade").replace_strict(true_reward, default=0.0, return_dtype=pl.Float64).alias("true_love_prob"),
        (pl.col("grade") > 0).alias("relevant"),
    )


def markdown(report: dict[str, Any]) -> str:
    metrics = report["feedback_metrics"]
    reward, levels, base = metrics["reward"], metrics["gnolr"]["levels"], report["baselines_held_out_day"]
    lines = [
        "# Semi-synthetic SciFact: GNOLR and the P[love] reward model",
        "",
        f"{report['n_results']} shown results over {report['n_days']} days; held-out day "
        f"{metrics['split']['test_days']} ({metrics['split']['test_rows']} results).",
        "",
        "| held-out day | AUC | AUC examined-only | ECE | mean predicted | observed rate |",
        "|---|---|---|---|---|---|",
    ]
    for level, m in levels.items():
        lines.append(
            f"| GNOLR P({level}) | {m['auc']:.4f} | {m['auc_examined_only']:.4f} | - | "
            f"{m['mean_predicted']:.4f} | {m['rate']:.4f} |"
        )
    lines += [
        f"| reward P[love] | {reward['auc']:.4f} | {reward['auc_reward_only']:.4f} | {reward['ece']:.4f} | "
        f"{reward['mean_predicted']:.4f} | {reward['love_rate']:.4f} |",
        f"| baseline: love rate by position | {base['auc_love_rate_by_position']:.4f} | | | | |",
        f"| baseline: love rate by (query, doc), training days | {base['auc_love_rate_by_query_doc']:.4f} | | | | |",
        f"| ceiling: the truth's P(love at the shown position) | {base['auc_truth_ceiling']:.4f} | | | | |",
        "",
        "Reward per true grade on the held-out day (truth: P(love at position 1)):",
        "",
        "| grade | n | mean reward | true |",
        "|---|---|---|---|",
    ]
    for grade, m in report["reward_vs_truth_held_out_day"]["per_grade"].items():
        lines.append(f"| {grade} | {m['n']} | {m['mean_reward']:.4f} | {m['true']:.4f} |")
    lines += [
        "",
        "Off-policy (pairs the logging ranker never showed):",
        "",
        "| pairs | n | share relevant | mean reward | mean true | share > median shown-relevant | "
        "share of irrelevant > median shown-relevant | AUC relevant |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for source, m in report.get("off_policy", {}).items():
        if isinstance(m, dict):
            lines.append(
                f"| {source} | {m['n']} | {m['share_relevant']:.4f} | {m['mean_predicted']:.4f} | "
                f"{m['mean_true']:.4f} | {m.get('share_above_median_shown_relevant', float('nan')):.4f} | "
                f"{m.get('share_irrelevant_above_median_shown_relevant', float('nan')):.4f} | "
                f"{m['auc_relevant']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def markdown_seeds(report: dict[str, Any]) -> str:
    """The per-seed summary table, then each seed's full tables."""
    rows = report["summary"]["per_seed"]
    lines = [
        f"# P[love] reward on queries it has not seen: {report['dataset']}",
        "",
        "AUC of the position-aware prediction against the logged loves (and of the reward alone, without the",
        "position factor), ECE (10 bins); `held-out day`: the last day of the queries the reward trained on;",
        "`held-out queries`: every day of queries never trained or calibrated on. Ceiling: the truth's own AUC.",
        "`AUC relevant`: the reward alone against true relevance (grade > 0) on the held-out queries' shown pairs.",
        "",
        "| seed | day AUC | day AUC reward only | day ECE | day ceiling | queries | queries AUC | "
        "queries AUC reward only | queries ECE | queries ceiling | AUC relevant | calibration | Platt scale "
        "(unconstrained) | calibration queries |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))

    for seed, r in rows.items():
        lines.append(
            f"| {seed} | {f(r['day_auc'])} | {f(r['day_auc_reward_only'])} | {f(r['day_ece'])} | "
            f"{f(r['day_auc_truth_ceiling'])} | {r['heldout_queries']} | {f(r.get('queries_auc'))} | "
            f"{f(r.get('queries_auc_reward_only'))} | {f(r.get('queries_ece'))} | "
            f"{f(r.get('queries_auc_truth_ceiling'))} | {f(r.get('queries_auc_relevant'))} | {r['calibration']} | "
            f"{f(r['platt_scale'])} ({f(r['unconstrained_scale'])}) | {r['calibration_queries']} |"
        )
    spread = report["summary"]["over_seeds"]
    lines += ["", "Mean ± sd over seeds: " + ", ".join(
        f"{k} {v['mean']:.4f} ± {v['sd']:.4f}" for k, v in spread.items() if k != "platt_scale"), ""]
    for seed, seed_report in report["seeds"].items():
        body = markdown(seed_report).split("\n", 1)[1]
        lines += [f"## Seed {seed}", body]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
