"""Seven nights of the production loop on the embedded default, with a Searcher serving throughout.

In a fresh DVC project holding a copy of the pipeline (clickloop.sandbox; the working tree's data/ and
serving/ are never touched), with the repo's params.yaml:

1. the full run: `dvc repro` from nothing, timed per stage (the cost a night is compared with);
2. seven nights, one new day each: the simulator writes the day after the last one (its users on BM25, a
   seed of their own), `python -m nightly run --day` lands it, reruns what it changed, gates and promotes;
   the report's wall seconds per step and per stage are collected;
3. two deliberately broken challengers, gated by `run_night` with the night's retraining replaced:
   the feedback labels shuffled across (query, document) pairs and both retrievers retrained on them; and
   the dense_feedback index answering for the wrong documents (its id list rotated by one);
4. `python -m nightly rollback`, then `rollback --to` the newest again.

From the first promotion to the end, a `ServingSearcher` answers from 8 threads (each a request every
`--pause` seconds, cycling over the served modes and the dataset's test queries); every failed request is
counted with its error.

Run from the repo root: `.venv/bin/python -m bench.nightly_week` (writes reports/nightly_week.{json,md});
`--overrides bench/presets/small_catalog.yaml` shrinks the catalog and traffic to a fifth (what fits a
session on 2 shared CPU cores). Needs no ../shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from clickloop.atomic import write_json, write_text
from clickloop.params import section
from clickloop.sandbox import REPO, export_commit, new_project, run
from clickloop.simulation import SimulatorConfig

WORK = REPO / "reports" / "tmp" / "nightly_week"
REPORT = REPO / "reports" / "nightly_week"
NIGHTS = 7
THREADS = 8

log = logging.getLogger("bench.nightly_week")


# -- the new days ----------------------------------------------------------------------------------


def simulate_day(project: Path, day: dt.date, seed: int, out: Path) -> Path:
    """One day of the simulator's users on the project's BM25, written as `out/<day>/` (a UBI day folder)."""
    from pipeline.simulate import run_simulation

    config = section("simulate", SimulatorConfig, project / "params.yaml")
    config = replace(config, days=1, start_date=day.isoformat(), dataset_dir=str(project / config.dataset_dir),
                     bm25_dir=str(project / config.bm25_dir), out_dir=str(out / "logs"),
                     truth_dir=str(out / "truth"))
    run_simulation(config, seed)
    folder = out / day.isoformat()
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(out / "logs" / day.isoformat(), folder)
    return folder


# -- the serving side ------------------------------------------------------------------------------


class ServingLoad:
    """`THREADS` clients of one ServingSearcher, each sending a request every `pause` seconds."""

    def __init__(self, serving_dir: Path, queries: list[str], pause: float) -> None:
        from indexing import SearchConfig
        from indexing.serving import ServingSearcher

        self.serving = ServingSearcher(serving_dir, settings=section("search", SearchConfig, serving_dir.parent /
                                                                     "params.yaml"), poll_seconds=1.0)
        self.queries, self.pause = queries, pause
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.empty: Counter[str] = Counter()
        self.failures: list[str] = []
        self.versions: dict[str, int] = defaultdict(int)
        self.latency_ms: dict[str, list[float]] = defaultdict(list)
        self.threads = [threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(THREADS)]
        for thread in self.threads:
            thread.start()

    def _client(self, worker: int) -> None:
        for i in itertools.count(worker):
            if self.stop.wait(self.pause):
                return
            searcher, version = self.serving.searcher, self.serving.version
            mode = searcher.modes[i % len(searcher.modes)]
            query = self.queries[i % len(self.queries)]
            started = time.perf_counter()
            try:
                hits = searcher.search(query, k=10, mode=mode)
                if [h.rank for h in hits] != list(range(1, len(hits) + 1)):
                    raise AssertionError(f"bad page: ranks {[h.rank for h in hits]}")
            except Exception as e:  # a failed request is the measurement, not a reason to stop
                with self.lock:
                    self.failures.append(f"{mode} {version}: {type(e).__name__}: {e}")
                continue
            with self.lock:
                self.requests[mode] += 1
                # An answer, not a failure: e.g. BM25 for a query sharing no word with the catalog.
                self.empty[mode] += not hits
                self.versions[version] += 1
                self.latency_ms[mode].append(1000 * (time.perf_counter() - started))

    def close(self) -> dict[str, Any]:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        self.serving.close()
        return {
            "threads": THREADS, "pause_seconds": self.pause, "requests": sum(self.requests.values()),
            "failed": len(self.failures), "failures": self.failures[:20], "empty_pages": dict(self.empty),
            "versions_served": dict(self.versions),
            "by_mode": {mode: {"requests": self.requests[mode],
                               "p50_ms": round(float(np.percentile(ms, 50)), 1),
                               "p99_ms": round(float(np.percentile(ms, 99)), 1)}
                        for mode, ms in sorted(self.latency_ms.items())},
        }


# -- the nights ------------------------------------------------------------------------------------


def night_row(report: dict[str, Any], exit_code: int, wall: float, label: str) -> dict[str, Any]:
    return {"night": label, "day": report.get("landing", {}).get("day"), "decision": report["decision"],
            "exit": exit_code, "wall_seconds": round(wall, 1), "steps": report.get("seconds", {}),
            "stages": report.get("stages", {}), "reasons": report.get("reasons", [])[:3],
            "serving": report.get("serving"), "summary": report.get("summary")}


def nightly_cli(project: Path, *args: str) -> tuple[int, float]:
    started = time.perf_counter()
    done = run([sys.executable, "-m", "nightly", *args], project, check=False)
    log.info("nightly %s -> exit %d: %s", " ".join(args), done.returncode, done.stdout.strip()[-400:])
    if done.returncode == 2:
        log.warning("stderr: %s", done.stderr[-2000:])
    return done.returncode, time.perf_counter() - started


@contextmanager
def inside(folder: Path):
    here = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def shuffle_labels(project: Path, seed: int) -> None:
    """Every label column permuted across the (query, document) pairs: the retrainers learn from noise."""
    path = project / "data" / "feedback" / "labels.parquet"
    labels = pl.read_parquet(path)
    keys = {"query_id", "doc_id", "query", "normalized_query"}
    order = np.random.default_rng(seed).permutation(labels.height)
    shuffled = labels.with_columns(labels.select([c for c in labels.columns if c not in keys])[order])
    shuffled.write_parquet(path)


def rotate_dense_feedback(project: Path) -> None:
    """The dense_feedback index answers for the wrong documents: each vector's id is its neighbour's."""
    ids_file = project / "data" / "indices" / "dense_feedback" / "doc_ids.json"
    ids = json.loads(ids_file.read_text())
    ids_file.write_text(json.dumps(ids[1:] + ids[:1]))


def broken_night(project: Path, day: Path, label: str, sabotage: list[str]) -> dict[str, Any]:
    """A night whose retraining is replaced by `sabotage`, gated as any night; DVC's outputs are then restored."""
    from nightly.run import NightlyConfig, run_night

    def retrain() -> None:
        for step in sabotage:
            if step == "shuffle_labels":
                shuffle_labels(project, seed=7)
            elif step == "rotate_dense_feedback":
                rotate_dense_feedback(project)
            else:
                run([sys.executable, "-m", f"pipeline.{step}"], project)

    started = time.perf_counter()
    with inside(project):
        config = section("nightly", NightlyConfig, project / "params.yaml")
        code, report = run_night(day, config, project / "params.yaml", repro=retrain)
    wall = time.perf_counter() - started
    run([sys.executable, "-m", "dvc", "checkout", "--force"], project)  # back to what dvc.lock records
    log.info("%s: %s", label, report["summary"])
    row = night_row(report, code, wall, label)
    row["sabotage"] = sabotage
    row["checks"] = [c for c in report.get("gate", {}).get("checks", {}).get("comparisons", []) if c.get("worse")]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=NIGHTS)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between a serving thread's requests")
    parser.add_argument("--commit", default="HEAD", help="the committed code to run (default HEAD)")
    parser.add_argument("--overrides", type=Path, help="a YAML of params laid over the repo's (a smaller trial run)")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json")
    args = parser.parse_args()
    if args.markdown_only:
        write_text(REPORT.with_suffix(".md"), markdown(json.loads(REPORT.with_suffix(".json").read_text())))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from nightly.run import dvc_repro

    project = WORK / "project"
    shutil.rmtree(WORK, ignore_errors=True)
    overrides = yaml.safe_load(args.overrides.read_text()) if args.overrides else {}
    results: dict[str, Any] = {"commit": export_commit(args.commit, WORK / "code"), "nights": [],
                               "params": "params.yaml of the commit (the embedded default) with `overrides`",
                               "overrides": overrides}
    new_project(project, overrides, source_root=WORK / "code")
    started = time.perf_counter()
    results["full_run"] = {"stages": dvc_repro([], WORK / "full_run.log", cwd=project)}
    results["full_run"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    log.info("full run: %s", results["full_run"])

    simulate = section("simulate", SimulatorConfig, project / "params.yaml")
    first_day = dt.date.fromisoformat(simulate.start_date) + dt.timedelta(days=simulate.days)
    queries = [json.loads(line)["text"] for line in (project / "data" / "dataset" / "queries.jsonl").open()]
    load: ServingLoad | None = None
    day_folder = None
    for n in range(args.nights):
        day = first_day + dt.timedelta(days=n)
        day_folder = simulate_day(project, day, seed=1000 + n, out=WORK / "incoming")
        code, wall = nightly_cli(project, "run", "--day", str(day_folder))
        report = json.loads((project / "serving" / "last_report.json").read_text())
        results["nights"].append(night_row(report, code, wall, f"night {n + 1}"))
        if load is None and (project / "serving" / "current").exists():
            load = ServingLoad(project / "serving", queries, args.pause)
        write_json(REPORT.with_suffix(".json"), results)

    assert day_folder is not None
    results["broken"] = [
        broken_night(project, day_folder, "labels shuffled",
                     ["shuffle_labels", "sparse", "dense_feedback", "evaluate"]),
        broken_night(project, day_folder, "dense_feedback index on the wrong documents",
                     ["rotate_dense_feedback", "evaluate"]),
    ]
    before = (project / "serving" / "current").read_text().strip()
    code, _ = nightly_cli(project, "rollback")
    after = (project / "serving" / "current").read_text().strip()
    time.sleep(5)  # the serving threads pick the rolled-back version up
    code_back, _ = nightly_cli(project, "rollback", "--to", before)
    results["rollback"] = {"from": before, "to": after, "exit": code, "restored": before, "exit_restore": code_back,
                           "serving_after": (project / "serving" / "current").read_text().strip()}
    time.sleep(5)
    results["serving"] = load.close() if load is not None else None
    results["leftover_temporaries"] = [str(p.relative_to(project)) for p in project.rglob("*.tmp")]
    write_json(REPORT.with_suffix(".json"), results)
    write_text(REPORT.with_suffix(".md"), markdown(results))
    print(REPORT.with_suffix(".md").read_text())


def markdown(results: dict[str, Any]) -> str:
    full = results["full_run"]
    stage_names = list(full["stages"]) or sorted({s for n in results["nights"] for s in n["stages"]})
    lines = ["# Seven nights of the production loop on the embedded default", "",
             f"Commit {results['commit'][:10]}; params overrides: `{json.dumps(results['overrides'])}`.", "",
             "`python -m bench.nightly_week` (bench/nightly_week.py): a copy of the pipeline in a fresh DVC project, "
             "the repo's params.yaml; each night the simulator adds one day after the last, `python -m nightly run "
             "--day` lands it, reruns what changed, gates and promotes. 2 shared CPU cores, no GPU.", "",
             f"Full run (`dvc repro` from nothing): **{full['wall_seconds']:.0f} s**.", "",
             "| night | day | decision | wall s | share of the full run | "
             + " | ".join(f"{s} s" for s in stage_names) + " | gate s |",
             "|---|---|---|---|---|" + "---|" * len(stage_names) + "---|",
             "| full run | | | {:.0f} | 1.00 | ".format(full["wall_seconds"])
             + " | ".join(f"{full['stages'].get(s, 0):.0f}" for s in stage_names) + " | |"]
    for row in results["nights"]:
        lines.append(f"| {row['night']} | {row['day']} | {row['decision']} | {row['wall_seconds']:.0f} | "
                     f"{row['wall_seconds'] / full['wall_seconds']:.2f} | "
                     + " | ".join(f"{row['stages'][s]:.0f}" if s in row["stages"] else "-" for s in stage_names)
                     + f" | {row['steps'].get('gate', 0):.0f} |")
    lines += ["", "## Broken challengers", ""]
    for row in results.get("broken", []):
        lines.append(f"- **{row['night']}** ({', '.join(row['sabotage'])}): {row['decision']} (exit {row['exit']}). "
                     f"{row['summary']}")
        for check in row["checks"]:
            lines.append(f"  - {check['retriever']} {check['measure']}: {check['champion']:.4f} -> "
                         f"{check['challenger']:.4f}, upper bound {check['upper']:.4f}")
    rollback = results.get("rollback", {})
    lines += ["", "## Rollback", "",
              f"`nightly rollback`: {rollback.get('from')} -> {rollback.get('to')} (exit {rollback.get('exit')}); "
              f"`rollback --to` back: serving {rollback.get('serving_after')} (exit {rollback.get('exit_restore')}).",
              "", "## Serving through every promotion", ""]
    serving = results.get("serving") or {}
    if serving:
        lines.append(f"{serving['threads']} threads, a request every {serving['pause_seconds']} s each: "
                     f"**{serving['requests']} requests, {serving['failed']} failed**, "
                     f"{len(serving['versions_served'])} versions answered; empty pages (answers, not failures): "
                     f"{serving.get('empty_pages') or 0}.")
        if serving.get("note"):
            lines += ["", serving["note"]]
        lines += ["", "| mode | requests | p50 ms | p99 ms |", "|---|---|---|---|"]
        lines += [f"| {m} | {s['requests']} | {s['p50_ms']} | {s['p99_ms']} |" for m, s in serving["by_mode"].items()]
        lines += ["", "(Latencies while the night retrains on the same 2 cores.)"]
    lines += ["", f"Temporary folders left in the project: {len(results.get('leftover_temporaries', []))}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
