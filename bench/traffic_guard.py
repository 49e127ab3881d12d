"""The traffic guard on the simulator's adversarial users: who it flags, what it sets aside, what the labels gain.

The embedded default catalog (params.yaml `dataset`, generated under reports/tmp/traffic_guard/) is ranked by
BM25 and a week of traffic is simulated in-process with params.yaml's `simulate` settings, but for the share
of adversarial users (the simulator's reversed click and love tables: they click and love what is least
relevant), at several shares and seeds. The logs go through the real ingest, then through
`models.traffic_guard.guard` with params.yaml's `feedback.traffic_guard`. The simulator's truth names each
client's kind (normal, noisy, adversarial). Reported per setting:

- flagged clients against the truth: precision and recall for the adversarial clients, and how many noisy
  and normal clients were flagged;
- the share of the adversarial clients' clicks set aside, against the share of the normal clients' clicks;
- label quality, with the guard, without it, and with the adversarial clients removed by the truth (the
  oracle): propensities and debiased labels (`models.propensity`, `models.relevance_labels`, params.yaml's
  `feedback` settings) against the true grades of the (query, document) pairs: Spearman correlation and
  AUC (grade >= 2 against below) of `posterior_relevance` and of `ips_label`, the mean posterior of the
  grade-0 pairs, and label precision@1 (the share of queries, with a relevant document shown, whose
  top-labelled document has grade >= 2).

Run: `nice -n 15 .venv/bin/python -m bench.traffic_guard [--shares 0.01 0.05 0.10] [--seeds 13 14]`
(writes reports/traffic_guard.{json,md}; a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import rankdata, spearmanr

from clickloop.atomic import write_json, write_text
from clickloop.beir import BeirDataset
from clickloop.ingest import IngestConfig, ingest
from clickloop.params import from_dict, load_params, section
from clickloop.simulation import Simulator, SimulatorConfig, write_simulation
from models.propensity import QUERY, PropensityConfig, estimate_propensities, normalized_query
from models.relevance_labels import LabelConfig, relevance_labels
from models.traffic_guard import TrafficGuardConfig, guard
from pipeline.dataset import DatasetConfig, build_dataset

WORK_DIR = Path("reports/tmp/traffic_guard")
REPORT = Path("reports/traffic_guard")
RELEVANT_GRADE = 2
VARIANTS = ("without_guard", "with_guard", "oracle")


def prepare(work: Path, seed: int) -> tuple[BeirDataset, dict[str, list[str]]]:
    """The embedded catalog and the BM25 top-k of its train queries."""
    from indexing.bm25 import BM25BuildConfig, BM25Index
    from pipeline.simulate import bm25_rankings

    config = section("dataset", DatasetConfig)
    config.source, config.out_dir = "embedded", str(work / "dataset")
    build_dataset(config, seed, simulate=True)
    dataset = BeirDataset(work / "dataset")
    BM25Index.build(dataset, work / "bm25", BM25BuildConfig())
    k = section("simulate", SimulatorConfig).top_k
    return dataset, {q: list(r) for q, r in bm25_rankings(work / "bm25", dataset.queries("train"), k).items()}


def simulate(work: Path, dataset: BeirDataset, rankings: dict[str, list[str]], share: float,
             seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A simulated week at this adversarial share, ingested: (results, truth)."""
    config = section("simulate", SimulatorConfig)
    config.adversarial_user_share = share
    run_dir = work / f"share{share:g}_seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    config.out_dir, config.truth_dir = str(run_dir / "logs"), str(run_dir / "truth")
    simulator = Simulator(config, dataset.queries("train"), rankings, dataset.qrels("train"), seed)
    write_simulation(simulator, config.out_dir, config.truth_dir)
    ingest(IngestConfig(log_roots=[config.out_dir], out_dir=str(run_dir / "ingested"),
                        metrics_file=str(run_dir / "ingest.json"), temp_directory=str(run_dir / "spill")))
    results = pl.read_parquet(run_dir / "ingested" / "results.parquet")
    return results, pl.read_parquet(run_dir / "truth" / "results.parquet")


def client_kinds(results: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    queries = truth.select("query_id", "user_kind").unique()
    return results.select("query_id", "client_id").unique().join(queries, on="query_id").select(
        "client_id", "user_kind").unique()


def pair_grades(results: pl.DataFrame, truth: pl.DataFrame) -> pl.DataFrame:
    """The true grade of each (normalised query, document) pair shown."""
    shown = results.select("query_id", "doc_id", normalized_query().alias(QUERY)).unique()
    return (shown.join(truth.select("query_id", "doc_id", "grade").unique(), on=["query_id", "doc_id"])
            .group_by(QUERY, "doc_id").agg(pl.col("grade").max()))


def label_quality(results: pl.DataFrame, grades: pl.DataFrame, propensity: PropensityConfig,
                  labels_config: LabelConfig) -> dict[str, float]:
    curve = estimate_propensities(results, propensity)
    labels = relevance_labels(results, curve, labels_config).join(grades, on=[QUERY, "doc_id"])
    relevant = (labels["grade"] >= RELEVANT_GRADE).to_numpy()
    out: dict[str, float] = {"pairs": labels.height}
    for column in ("posterior_relevance", "ips_label"):
        values = labels[column].to_numpy()
        out[f"{column}_spearman"] = float(spearmanr(values, labels["grade"].to_numpy()).statistic)
        out[f"{column}_auc"] = auc(values, relevant)
    out["grade0_mean_posterior"] = float(labels.filter(pl.col("grade") == 0)["posterior_relevance"].mean())
    top = (labels.filter(pl.col("grade").max().over(QUERY) >= RELEVANT_GRADE)
           .sort(["posterior_relevance", "doc_id"], descending=[True, False]).group_by(QUERY, maintain_order=True)
           .first())
    out["label_precision_at_1"] = float((top["grade"] >= RELEVANT_GRADE).mean())
    out["theta_5"] = float(curve.relative[4])
    return out


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), by the rank-sum formula."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def evaluate_setting(results: pl.DataFrame, truth: pl.DataFrame, config: TrafficGuardConfig,
                     propensity: PropensityConfig, labels_config: LabelConfig) -> dict[str, Any]:
    kinds = client_kinds(results, truth)
    start = time.perf_counter()
    guarded = guard(results, config)
    guard_seconds = time.perf_counter() - start
    flags = guarded.clients.select("client_id", "action", "reasons").join(kinds, on="client_id")
    flagged = flags.filter(pl.col("action").is_not_null())
    adversarial = kinds.filter(pl.col("user_kind") == "adversarial")["client_id"]
    hit = flagged.filter(pl.col("user_kind") == "adversarial").height
    with_kind = results.join(kinds, on="client_id")
    kept_ids = guarded.kept.select("query_id", "doc_id", "position").with_columns(pl.lit(True).alias("_kept"))
    marked = with_kind.join(kept_ids, on=["query_id", "doc_id", "position"], how="left")
    clicks_removed = {}
    for kind in ("normal", "noisy", "adversarial"):
        mine = marked.filter(pl.col("user_kind") == kind)
        clicks = int(mine["clicked"].sum())
        removed = int(mine.filter(pl.col("_kept").is_null())["clicked"].sum())
        clicks_removed[kind] = {"clicks": clicks, "removed": removed, "share": removed / clicks if clicks else 0.0}
    grades = pair_grades(results, truth)
    oracle = results.filter(~pl.col("client_id").is_in(adversarial.implode()))
    quality = {name: label_quality(rows, grades, propensity, labels_config)
               for name, rows in zip(VARIANTS, (results, guarded.kept, oracle), strict=True)}
    one_pass = guard(results, dataclasses.replace(config, passes=1)).clients.filter(pl.col("action").is_not_null())
    one_pass = one_pass.join(kinds, on="client_id")
    one_pass_hits = int((one_pass["user_kind"] == "adversarial").sum())
    return {
        "clients": {kind: int((kinds["user_kind"] == kind).sum()) for kind in ("normal", "noisy", "adversarial")},
        "one_pass": {"flagged": one_pass.height,
                     "adversarial_precision": _share(one_pass_hits, one_pass.height),
                     "adversarial_recall": _share(one_pass_hits, adversarial.len()),
                     "flagged_normal": int((one_pass["user_kind"] == "normal").sum())},
        "flagged": {"total": flagged.height,
                    **{kind: int((flagged["user_kind"] == kind).sum()) for kind in ("normal", "noisy", "adversarial")}},
        "adversarial_precision": hit / flagged.height if flagged.height else float("nan"),
        "adversarial_recall": hit / adversarial.len() if adversarial.len() else float("nan"),
        "non_normal_precision": (flagged.height - int((flagged["user_kind"] == "normal").sum())) / flagged.height
        if flagged.height else float("nan"),
        "clicks_removed": clicks_removed,
        "report": {k: v for k, v in guarded.report.items() if k not in ("flagged", "population")},
        "guard_seconds": round(guard_seconds, 2),
        "label_quality": quality,
    }


def _share(part: int, whole: int) -> float:
    return part / whole if whole else float("nan")


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds per share of the headline figures."""
    by_share: dict[str, Any] = {}
    for share in sorted({r["share"] for r in runs}):
        mine = [r["result"] for r in runs if r["share"] == share]

        def mean(get: Any, rows: list[dict[str, Any]] = mine) -> float:
            return float(np.mean([get(r) for r in rows]))

        by_share[f"{share:g}"] = {
            "seeds": len(mine),
            "adversarial_precision": mean(lambda r: r["adversarial_precision"]),
            "adversarial_recall": mean(lambda r: r["adversarial_recall"]),
            "non_normal_precision": mean(lambda r: r["non_normal_precision"]),
            "flagged_normal": mean(lambda r: r["flagged"]["normal"]),
            "flagged_noisy": mean(lambda r: r["flagged"]["noisy"]),
            "one_pass_precision": mean(lambda r: r["one_pass"]["adversarial_precision"]),
            "one_pass_recall": mean(lambda r: r["one_pass"]["adversarial_recall"]),
            "one_pass_flagged_normal": mean(lambda r: r["one_pass"]["flagged_normal"]),
            "adversarial_clicks_removed": mean(lambda r: r["clicks_removed"]["adversarial"]["share"]),
            "normal_clicks_removed": mean(lambda r: r["clicks_removed"]["normal"]["share"]),
            **{f"{metric}_{variant}": mean(lambda r, m=metric, v=variant: r["label_quality"][v][m])
               for variant in VARIANTS
               for metric in ("posterior_relevance_spearman", "posterior_relevance_auc", "ips_label_auc",
                              "label_precision_at_1", "grade0_mean_posterior")},
        }
    return by_share


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Traffic guard on the simulator's adversarial users (`python -m bench.traffic_guard`)",
        "",
        f"Embedded default catalog, a simulated week (params.yaml `simulate`, {report['sessions_per_day']} sessions "
        f"a day, {report['n_users']} users, {report['noisy_share']:.0%} noisy), seeds {report['seeds']}; guard: "
        f"params.yaml `feedback.traffic_guard` ({report['guard_config']}). Means over the seeds.",
        "",
        "## Who is flagged",
        "",
        "| adversarial share | precision (adversarial) | recall | precision (adversarial or noisy) | normal flagged "
        "| noisy flagged | adversarial clicks set aside | normal clicks set aside |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for share, s in report["summary"].items():
        lines.append(
            f"| {float(share):.0%} | {s['adversarial_precision']:.3f} | {s['adversarial_recall']:.3f} | "
            f"{s['non_normal_precision']:.3f} | {s['flagged_normal']:.1f} | {s['flagged_noisy']:.1f} | "
            f"{s['adversarial_clicks_removed']:.1%} | {s['normal_clicks_removed']:.2%} |")
    lines += [
        "",
        "The same with one pass of the checks (`passes: 1`) on the same traffic:",
        "",
        "| adversarial share | precision (adversarial) | recall | normal flagged |",
        "|---|---|---|---|",
    ]
    for share, s in report["summary"].items():
        lines.append(f"| {float(share):.0%} | {s['one_pass_precision']:.3f} | {s['one_pass_recall']:.3f} | "
                     f"{s['one_pass_flagged_normal']:.1f} |")
    lines += [
        "",
        "## Label quality against the true grades",
        "",
        "Debiased labels (propensities + beta-binomial posterior) of every shown (query, document) pair. "
        "Oracle: the adversarial clients removed by the truth.",
        "",
        "| adversarial share | labels from | Spearman (posterior) | AUC grade>=2 (posterior) | AUC (IPS) "
        "| label precision@1 | mean posterior, grade 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for share, s in report["summary"].items():
        for variant in VARIANTS:
            lines.append(
                f"| {float(share):.0%} | {variant.replace('_', ' ')} "
                f"| {s[f'posterior_relevance_spearman_{variant}']:.4f} "
                f"| {s[f'posterior_relevance_auc_{variant}']:.4f} | {s[f'ips_label_auc_{variant}']:.4f} | "
                f"{s[f'label_precision_at_1_{variant}']:.4f} | {s[f'grade0_mean_posterior_{variant}']:.4f} |")
    lines += ["", f"Wall time {report['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.01, 0.05, 0.10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14])
    args = parser.parse_args()
    start = time.perf_counter()
    params = load_params()
    feedback = params["feedback"]
    config = from_dict(TrafficGuardConfig, feedback.get("traffic_guard", {}), "feedback.traffic_guard")
    propensity = from_dict(PropensityConfig, feedback["propensity"], "feedback.propensity")
    labels_config = from_dict(LabelConfig, feedback["labels"], "feedback.labels")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    dataset, rankings = prepare(WORK_DIR, int(params["seed"]))
    runs = []
    for share in args.shares:
        for seed in args.seeds:
            results, truth = simulate(WORK_DIR, dataset, rankings, share, seed)
            result = evaluate_setting(results, truth, config, propensity, labels_config)
            runs.append({"share": share, "seed": seed, "result": result})
            print(f"share {share:g} seed {seed}: flagged {result['flagged']}, precision "
                  f"{result['adversarial_precision']:.3f}, recall {result['adversarial_recall']:.3f}, labels AUC "
                  + ", ".join(f"{v} {result['label_quality'][v]['posterior_relevance_auc']:.4f}" for v in VARIANTS),
                  flush=True)
    simulate_config = section("simulate", SimulatorConfig)
    report = {
        "seeds": args.seeds,
        "shares": args.shares,
        "sessions_per_day": simulate_config.sessions_per_day,
        "n_users": simulate_config.n_users,
        "noisy_share": simulate_config.noisy_user_share,
        "guard_config": {k: v for k, v in vars(config).items() if k != "report_clients"},
        "summary": summarise(runs),
        "runs": runs,
        "seconds": time.perf_counter() - start,
    }
    write_json(REPORT.with_suffix(".json"), report)
    write_text(REPORT.with_suffix(".md"), markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
