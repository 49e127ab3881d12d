"""The production path against the laboratory: do the same logs give the same retrievers?

Project A is the embedded default through the simulated path (`dvc repro`, simulation on). Project B is
what a search team without judgments would run: the same corpus written as a BEIR folder holding
`corpus.jsonl` only (no queries, no qrels), `simulate.enabled: false`, and A's simulated UBI logs copied
into its `feedback_logs/`. Both run `dvc repro` in a fresh DVC project built from a commit's code
(`clickloop.sandbox`, under reports/tmp/production_path/), never in the working tree.

B's evaluate stage has no judgments, so it reports only off-policy estimates; afterwards each project's
retrievers (every `evaluate.retrievers` entry and every `search.pipelines` pipeline) are scored on A's
hidden test judgments with the evaluate stage's own code (`pipeline.evaluate.judged_report`, run inside
the project so it uses that project's code and params). Reported: nDCG@10 and R@100 per retriever for A
and B and the difference, the wall time of each `dvc repro`, and what B's stages say they learned from.

Run: `nice -n 15 .venv/bin/python -m bench.production_path --overrides bench/presets/production_path.yaml`
(`--rev` the commit, HEAD by default; `--phase a|b|score` one step on the projects already there, e.g. B beside
A once A's logs exist). Writes reports/production_path.{json,md}; `--overrides` shrinks the catalog and traffic
in both projects, which the report states.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from bench.scifact_logs import portable
from clickloop.atomic import write_json, write_text
from clickloop.sandbox import export_commit, merge_params, new_project, run

WORK_DIR = Path("reports/tmp/production_path")
REPORT = Path("reports/production_path")
METRICS = ("nDCG@10", "R@100")
REPRO_TIMEOUT_S = 5400

# Runs inside a project (cwd): its code, its params; argv: hidden BEIR folder, runs folder.
SCORE_SNIPPET = """
import json, sys
from clickloop.params import section
from indexing import SearchConfig, Searcher
from pipeline.evaluate import EvaluateConfig, judged_report

config = section("evaluate", EvaluateConfig)
settings = section("search", SearchConfig)
wanted = list(dict.fromkeys([*config.retrievers, *settings.pipelines]))
searcher = Searcher(config.index_root, settings=settings)  # every retriever folder the index root holds
config.retrievers = [name for name in wanted if name in searcher.modes]
print("SKIPPED " + json.dumps([name for name in wanted if name not in searcher.modes]))
config.dataset_dir, config.runs_dir = sys.argv[1], sys.argv[2]
print("SCORES " + json.dumps(judged_report(config, searcher)))
"""


def repro(project: Path, targets: list[str]) -> float:
    """`dvc repro` (of `targets`, or every stage) in `project`; its wall time in seconds."""
    start = time.perf_counter()
    run([sys.executable, "-m", "dvc", "repro", *targets], project, timeout=REPRO_TIMEOUT_S)
    return time.perf_counter() - start


def score(project: Path, hidden: Path, runs_dir: Path) -> tuple[dict[str, dict[str, float]], list[str]]:
    """The project's retrievers on the hidden judgments, by the evaluate stage's code; and the ones not built
    (their stage has not run)."""
    done = run([sys.executable, "-c", SCORE_SNIPPET, str(hidden.resolve()), str(runs_dir.resolve())], project)
    lines = done.stdout.splitlines()
    skipped = json.loads(next(line for line in lines if line.startswith("SKIPPED ")).removeprefix("SKIPPED "))
    return json.loads(next(line for line in lines if line.startswith("SCORES ")).removeprefix("SCORES ")), skipped


def compare_ingested(lab: Path, production: Path) -> dict[str, Any]:
    """The ingest stage's tables in A (from the simulated logs) and B (from feedback_logs/): identical?"""
    out: dict[str, Any] = {}
    for table in ("queries", "events", "results"):
        a, b = (pl.read_parquet(project / "data" / "ingested" / f"{table}.parquet") for project in (lab, production))
        same_columns = a.columns == b.columns
        identical = same_columns and a.sort(a.columns[:3]).equals(b.sort(b.columns[:3]))
        out[table] = {"rows_A": a.height, "rows_B": b.height, "identical": identical}
    return out


def compare_labels(lab: Path, production: Path) -> dict[str, Any]:
    """The feedback stage's labels and examination curve in A and B: what each learned from the same logs."""
    paths = [project / "data" / "feedback" / "labels.parquet" for project in (lab, production)]
    if not all(path.is_file() for path in paths):
        return {"skipped": "a feedback stage has not finished"}
    a, b = (pl.read_parquet(path) for path in paths)
    joined = a.join(b, on=["query", "doc_id"], suffix="_b")
    curves = [read_json(project / "data" / "feedback" / "propensities.json").get("propensities", [])
              for project in (lab, production)]
    return {
        "pairs": {"A": a.height, "B": b.height, "both": joined.height},
        "max_abs_difference": {column: float((joined[column] - joined[f"{column}_b"]).abs().max())
                               for column in ("n_clicks", "ips_label", "posterior_relevance")},
        "propensities_max_abs_difference": max((abs(x - y) for x, y in zip(*curves, strict=True)), default=None)
        if len(curves[0]) == len(curves[1]) else "different lengths",
    }


def corpus_only_source(dataset_dir: Path, dest: Path) -> Path:
    """A BEIR folder holding only A's corpus: what a user without judgments has."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(dataset_dir / "corpus.jsonl", dest / "corpus.jsonl")
    return dest


def copy_logs(log_root: Path, feedback_logs: Path) -> list[str]:
    """A's simulated day folders into B's feedback_logs/ (as a user's UBI export lands); the days copied."""
    days = sorted(p.name for p in log_root.iterdir() if p.is_dir())
    for day in days:
        shutil.copytree(log_root / day, feedback_logs / day)
    return days


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", default="HEAD", help="the commit whose code both projects run")
    parser.add_argument("--overrides", type=Path, default=None,
                        help="a YAML of params laid over the commit's in both projects (a smaller catalog and traffic)")
    parser.add_argument("--phase", choices=("all", "a", "b", "score"), default="all",
                        help="run one step on the projects already under reports/tmp/production_path (B may run "
                             "beside A once A's logs exist); all: start afresh")
    parser.add_argument("--targets", nargs="*", default=[],
                        help="stages to reproduce with what they depend on (default: every stage), e.g. "
                             "dense_feedback when time is short")
    parser.add_argument("--no-score", action="store_true",
                        help="write the report from what the stages wrote, without scoring the retrievers")
    args = parser.parse_args()

    source, lab = WORK_DIR / "src", WORK_DIR / "a"
    shared: dict[str, Any] = yaml.safe_load(args.overrides.read_text()) if args.overrides else {}
    if args.phase == "all":
        if WORK_DIR.exists():
            shutil.rmtree(WORK_DIR)
        write_json(WORK_DIR / "setup.json", {"commit": export_commit(args.rev, source), "overrides": shared})
        new_project(lab, shared, source_root=source)
    setup = read_json(WORK_DIR / "setup.json")
    if args.phase in ("all", "a"):
        print(f"A (simulated path) at {lab}: dvc repro", flush=True)
        write_json(WORK_DIR / "a_seconds.json", {"seconds": repro(lab, args.targets), "targets": args.targets})
    production = WORK_DIR / "b"
    if args.phase in ("all", "b") and not production.exists():
        byo = corpus_only_source(lab / "data" / "dataset", WORK_DIR / "b_source")
        new_project(production, merge_params(setup["overrides"], {"dataset": {"source": str(byo.resolve())},
                                                                   "simulate": {"enabled": False}}),
                    source_root=source)
        copy_logs(lab / "data" / "simulated_logs", production / "feedback_logs")
    if args.phase in ("all", "b"):
        print(f"B (production path) at {production}: dvc repro {' '.join(args.targets)}", flush=True)
        write_json(WORK_DIR / "b_seconds.json", {"seconds": repro(production, args.targets), "targets": args.targets})
    if args.phase in ("all", "score"):
        write_report(lab, production, setup, scored=not args.no_score)


def write_report(lab: Path, production: Path, setup: dict[str, Any], scored: bool = True) -> None:
    """Score both projects on A's hidden judgments; write the report."""
    days = sorted(p.name for p in (production / "feedback_logs").iterdir() if p.is_dir())
    seconds = {name: read_json(WORK_DIR / f"{name.lower()}_seconds.json") for name in ("A", "B")}
    hidden = lab / "data" / "dataset"
    (scores_a, skipped_a), (scores_b, skipped_b) = (
        (score(lab, hidden, WORK_DIR / "runs_a"), score(production, hidden, WORK_DIR / "runs_b")) if scored
        else (({}, ["not scored (--no-score)"]), ({}, ["not scored (--no-score)"])))
    scores = {"A": scores_a, "B": scores_b}
    rows = {}
    for name in scores["A"]:
        a, b = scores["A"][name], scores["B"].get(name, {})
        rows[name] = {"A": {m: a[m] for m in METRICS}, "B": {m: b.get(m) for m in METRICS},
                      "difference": {m: (b[m] - a[m]) if m in b else None for m in METRICS}}
    metrics_b = {name: read_json(production / "metrics" / f"{name}.json")
                 for name in ("dataset", "ingest", "feedback", "evaluate")}
    metrics_a = {name: read_json(lab / "metrics" / f"{name}.json") for name in ("ingest", "evaluate")}
    report = {
        "commit": setup["commit"],
        "overrides": setup["overrides"],
        "days": days,
        "repro_seconds": {name: round(value["seconds"], 1) if value else None for name, value in seconds.items()},
        "repro_targets": {name: value.get("targets", []) if value else None for name, value in seconds.items()},
        "stages_finished": {name: sorted(p.stem for p in (project / "metrics").glob("*.json"))
                            for name, project in (("A", lab), ("B", production))},
        "not_built": {"A": skipped_a, "B": skipped_b},
        "ingested": compare_ingested(lab, production),
        "labels": compare_labels(lab, production),
        "hidden_judgments": "A's data/dataset qrels/test.tsv (B never sees them)",
        "retrievers": rows,
        "max_abs_difference": {m: max((abs(r["difference"][m]) for r in rows.values()
                                       if r["difference"][m] is not None), default=None) for m in METRICS},
        "B_learned_from": {
            "dataset": metrics_b["dataset"],
            "ingest_accepted": metrics_b["ingest"].get("accepted", metrics_b["ingest"].get("totals")),
            "feedback_logs": metrics_b["feedback"].get("logs"),
            "feedback_labels": metrics_b["feedback"].get("labels"),
            "traffic_guard": {k: v for k, v in metrics_b["feedback"].get("traffic_guard", {}).items()
                              if k in ("rows_in", "rows_set_aside", "clients", "clients_flagged", "by_action")},
            "sparse_signal": read_json(production / "metrics" / "sparse.json").get("signal"),
            "dense_feedback_signal": read_json(production / "metrics" / "dense_feedback.json").get("signal"),
            "evaluate_stage": metrics_b["evaluate"],
        },
        "A_ingest": metrics_a["ingest"].get("accepted", metrics_a["ingest"].get("totals")),
    }
    report = portable(report)  # the projects' folders named relative to the repo, as on any machine
    write_json(REPORT.with_suffix(".json"), report)
    write_text(REPORT.with_suffix(".md"), markdown(report))
    print(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Production path vs simulated path (`python -m bench.production_path`)",
        "",
        f"Code: commit `{report['commit'][:12]}`. Params: the commit's, with overrides "
        f"`{json.dumps(report['overrides'])}` in both projects. Logs: {len(report['days'])} days "
        f"({report['days'][0]} .. {report['days'][-1]}).",
        "",
        "A: the embedded catalog, simulation on. B: A's corpus as a BEIR folder with `corpus.jsonl` only, "
        "`simulate.enabled: false`, A's simulated logs in `feedback_logs/`. Both scored on A's hidden test "
        "judgments by `pipeline.evaluate.judged_report`.",
        "",
        f"`dvc repro` wall time of the last run (targets {report['repro_targets']}; 2 CPU cores shared with "
        "other jobs): "
        + ", ".join(f"{name} " + (f"{value:.0f} s" if value else "did not finish")
                    for name, value in report["repro_seconds"].items()) + ".",
        "",
        "Stages finished: " + "; ".join(f"{name}: {', '.join(stages)}"
                                        for name, stages in report["stages_finished"].items()) + ". Not built "
        "(their stage did not run), so not scored: "
        + "; ".join(f"{name}: {', '.join(modes) or 'none'}" for name, modes in report["not_built"].items()) + ".",
        "",
        f"Ingested tables, A (simulated logs) against B (feedback_logs/): {report['ingested']}.",
        "",
        f"Feedback stage, A against B (labels per (query, document) and the examination curve): {report['labels']}.",
        "",
        "| retriever | A nDCG@10 | B nDCG@10 | B - A | A R@100 | B R@100 | B - A |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in report["retrievers"].items():
        cells = []
        for metric in METRICS:
            a, b, d = row["A"][metric], row["B"][metric], row["difference"][metric]
            cells += [f"{a:.4f}", "—" if b is None else f"{b:.4f}", "—" if d is None else f"{d:+.4f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    learned = report["B_learned_from"]
    largest = report["max_abs_difference"]
    lines += [
        "",
        "Largest |B - A|: " + ", ".join(f"{m} " + ("—" if largest[m] is None else f"{largest[m]:.4f}")
                                        for m in METRICS) + ".",
        "",
        "What B learned from (its own metrics): feedback logs "
        f"{learned['feedback_logs']}; sparse signal `{learned['sparse_signal']}`, dense_feedback signal "
        f"`{learned['dense_feedback_signal']}`; ingest accepted {learned['ingest_accepted']} "
        f"(A: {report['A_ingest']}); traffic guard {learned.get('traffic_guard')}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
