"""Simulator fidelity on SciFact: do the logged clicks follow the configured click model?

The 809 SciFact train queries (qrels/train.tsv) are ranked once by BM25 (an index built with
`indexing.bm25` under reports/tmp/), then 100,000 one-query sessions are simulated under the
position-based model with `shuffle_top_n` exploration on a share of the traffic, and written as
UBI logs. Reported:

- observed CTR at positions 1-10 against the CTR the model predicts, sum(theta_k * click_prob)
  over the results shown at k (from the ground truth), with the sampling standard error and z;
- on the shuffled traffic, CTR_k / CTR_1 against theta_k / theta_1 (randomization makes the
  ratio identify position bias); the baseline, measured in the same run, is that same ratio on
  the unrandomized traffic, where relevance and position are confounded;
- loves without a click on the same result in the written logs (must be 0);
- the logs ingested by `clickloop.ingest`: read = accepted + quarantined + duplicates, and the
  accepted impressions, clicks and loves equal what the simulator generated.

Run: `nice -n 10 .venv/bin/python -m bench.simulator_ctr [--sessions N]` (writes reports/simulator_ctr.{json,md}).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.scifact_logs import SCIFACT, bm25_rankings, ingest_logs, portable, scifact
from clickloop.atomic import write_json, write_text
from clickloop.simulation import ExplorationConfig, Simulator, SimulatorConfig, examination_curve, write_simulation
from clickloop.simulation.config import ULTRA_EXAMINATION

WORK_DIR = Path("reports/tmp/simulator_ctr")
REPORT = Path("reports/simulator_ctr")
DAYS = 4
TOP_K = 10
EXPLORED_SHARE = 0.2


def ctr_by_position(truth: pl.DataFrame) -> pl.DataFrame:
    """Observed clicks and the model's expectation and sampling variance per position."""
    return (
        truth.with_columns(p=pl.col("examination_prob") * pl.col("click_prob"))
        .group_by("position")
        .agg(n=pl.len(), clicks=pl.col("clicked").sum(), expected=pl.col("p").sum(),
             variance=(pl.col("p") * (1 - pl.col("p"))).sum())
        .sort("position")
        .with_columns(ctr=pl.col("clicks") / pl.col("n"), expected_ctr=pl.col("expected") / pl.col("n"),
                      se=pl.col("variance").sqrt() / pl.col("n"))
        .with_columns(z=(pl.col("ctr") - pl.col("expected_ctr")) / pl.col("se"))
    )


def ratio_to_top(table: pl.DataFrame) -> list[dict[str, float]]:
    """CTR_k / CTR_1 with its delta-method standard error (the binomial error of each CTR)."""
    ctr = table["ctr"].to_numpy()
    se = np.sqrt(ctr * (1 - ctr) / table["n"].to_numpy())
    ratio = ctr / ctr[0]
    ratio_se = ratio * np.sqrt((se / ctr) ** 2 + (se[0] / ctr[0]) ** 2)
    ratio_se[0] = 0.0  # CTR_1 / CTR_1 is 1 by definition
    return [{"ratio": float(r), "se": float(s)} for r, s in zip(ratio, ratio_se, strict=True)]


def loves_without_click(log_dir: Path) -> int:
    """Love events whose query and object have no click event, over all written log files."""
    clicks, loves = set(), []
    for path in sorted(log_dir.glob("*/events.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                event = json.loads(line)
                key = (event["query_id"], event["event_attributes"]["object"]["object_id"])
                if event["action_name"] == "click":
                    clicks.add(key)
                elif event["action_name"] == "love":
                    loves.append(key)
    return sum(key not in clicks for key in loves)


def ingest_check(log_dir: Path, work: Path, simulated: dict[str, int]) -> dict[str, Any]:
    report = ingest_logs(log_dir, work)
    totals = report.totals
    events = pl.read_parquet(work / "ingested" / "events.parquet")
    accepted = {row["action_name"]: row["len"] for row in events.group_by("action_name").len().to_dicts()}
    generated = {"impression": simulated["impressions"], "click": simulated["clicks"], "love": simulated["loves"]}
    return {
        "totals": totals,
        "reconciles": totals["read"] == totals["accepted"] + totals["quarantined"] + totals["duplicates"],
        "quarantine_reasons": report.quarantine_reasons,
        "accepted_events_by_action": accepted,
        "generated_events_by_action": generated,
        "accepted_equal_generated": all(accepted.get(a, 0) == n for a, n in generated.items()),
        "accepted_queries_equal_generated": report.table_rows.get("queries") == simulated["queries"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000, help="one-query sessions in all (over 4 days)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    dataset = scifact()
    queries, qrels = dataset.queries("train"), dataset.qrels("train")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rankings = {qid: [doc for doc, _ in hits] for qid, hits in bm25_rankings(dataset, WORK_DIR / "bm25", queries,
                                                                             TOP_K).items()}
    ranking_s = time.perf_counter() - started

    config = SimulatorConfig(
        days=DAYS, sessions_per_day=args.sessions // DAYS, extra_queries_per_session=0.0, top_k=TOP_K,
        exploration=ExplorationConfig(scheme="shuffle_top_n", share=EXPLORED_SHARE, n=TOP_K),
    )
    log_dir, truth_dir = WORK_DIR / "logs", WORK_DIR / "truth"
    started = time.perf_counter()
    simulator = Simulator(config, queries, rankings, qrels, args.seed)
    summary = write_simulation(simulator, log_dir, truth_dir)
    simulate_s = time.perf_counter() - started

    truth = pl.read_parquet(truth_dir / "results.parquet").join(_exploration_of_queries(log_dir), on="query_id")
    overall = ctr_by_position(truth)
    shuffled = ctr_by_position(truth.filter(pl.col("exploration") == "shuffle_top_n"))
    unshuffled = ctr_by_position(truth.filter(pl.col("exploration") == "none"))
    theta = examination_curve(ULTRA_EXAMINATION, config.eta, TOP_K)
    report = {
        "dataset": portable(SCIFACT), "queries": len(queries), "sessions": summary["totals"]["sessions"],
        "config": {"click_model": config.click_model, "eta": config.eta, "exploration": vars(config.exploration),
                   "noisy_user_share": config.noisy_user_share,
                   "adversarial_user_share": config.adversarial_user_share},
        "simulated": summary["totals"],
        "seconds": {"bm25_ranking": round(ranking_s, 2), "simulate_and_write": round(simulate_s, 2)},
        "ctr_by_position": overall.select("position", "n", "ctr", "expected_ctr", "se", "z").to_dicts(),
        "max_abs_z": float(overall["z"].abs().max()),
        "position_bias_on_shuffled_traffic": [
            {"position": k + 1, "theta_ratio": float(theta[k] / theta[0]), "ctr_ratio": s["ratio"], "se": s["se"],
             "baseline_ctr_ratio_unshuffled": b["ratio"]}
            for k, (s, b) in enumerate(zip(ratio_to_top(shuffled), ratio_to_top(unshuffled), strict=True))
        ],
        "loves_without_click": loves_without_click(log_dir),
        "ingest": ingest_check(log_dir, WORK_DIR, summary["totals"]),
    }
    write_json(REPORT.with_suffix(".json"), report)
    write_text(REPORT.with_suffix(".md"), markdown(report))
    print(markdown(report))
    for scratch in ("ingested", "spill"):
        shutil.rmtree(WORK_DIR / scratch, ignore_errors=True)


def _exploration_of_queries(log_dir: Path) -> pl.DataFrame:
    """query_id -> exploration scheme, read back from the written query logs."""
    rows = []
    for path in sorted(log_dir.glob("*/queries.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows += [(q["query_id"], q["query_attributes"]["exploration"]["scheme"]) for q in map(json.loads, f)]
    return pl.DataFrame(rows, schema=["query_id", "exploration"], orient="row")


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Simulator fidelity on SciFact ({report['sessions']:,} sessions, {report['queries']} train queries, BM25)",
        "",
        f"Simulated {report['simulated']}; simulate + write {report['seconds']['simulate_and_write']} s.",
        "",
        "| position | impressions | observed CTR | expected CTR | SE | z |",
        "|---|---|---|---|---|---|",
        *(f"| {r['position']} | {r['n']} | {r['ctr']:.5f} | {r['expected_ctr']:.5f} | {r['se']:.5f} | {r['z']:+.2f} |"
          for r in report["ctr_by_position"]),
        "",
        "Position bias on shuffle_top_n traffic (baseline: the same ratio without shuffling):",
        "",
        "| position | theta_k/theta_1 | CTR_k/CTR_1 shuffled | SE | CTR_k/CTR_1 unshuffled |",
        "|---|---|---|---|---|",
        *(f"| {r['position']} | {r['theta_ratio']:.4f} | {r['ctr_ratio']:.4f} | {r['se']:.4f} | "
          f"{r['baseline_ctr_ratio_unshuffled']:.4f} |" for r in report["position_bias_on_shuffled_traffic"]),
        "",
        f"Loves without a click on the same result: {report['loves_without_click']}.",
        "",
        f"Ingest: {report['ingest']['totals']}; read = accepted + quarantined + duplicates: "
        f"{report['ingest']['reconciles']}; accepted events by action {report['ingest']['accepted_events_by_action']} "
        f"equal generated: {report['ingest']['accepted_equal_generated']}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
