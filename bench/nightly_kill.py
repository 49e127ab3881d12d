"""kill -9 at random points of a nightly run: the served version stays complete, the rerun converges to the
same metrics, and no temporary folder survives.

In a fresh DVC project holding a copy of the pipeline (clickloop.sandbox) on a small embedded catalog (every
stage but the two retriever trainers, see DROPPED_STAGES; `--overrides` replaces the size), night 1 is run and
promoted, and the project is snapshotted. The reference: night 2 run to the end from the snapshot, its wall
time T and its metrics. Each trial restores the snapshot, starts night 2 in its own process group, kills the
whole group with SIGKILL after a uniform random delay in [0, T) (T: the latest uninterrupted night's wall
time; so every step can be hit: landing, any stage of `dvc repro`, the gate, the promotion), then checks:

- the served version: `serving/current` names a version whose manifest lists components that all exist
  (and hash as recorded, where promotion did not rewrite an encoder's path), and a Searcher on it answers
  every mode it serves;
- the rerun: `python -m nightly run` of the same day finishes (promoted or unchanged), and every retriever's
  nDCG@10 and R@100 in metrics/evaluate.json equals the reference's;
- no temporary folder (`*.tmp`) is left anywhere in the project after the rerun.

Run from the repo root: `nice -n 10 .venv/bin/python -m bench.nightly_kill --trials 20` (writes
reports/nightly_kill.{json,md}). Needs no ../shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.nightly_week import simulate_day
from clickloop.atomic import write_json, write_text
from clickloop.fingerprint import content_sha256
from clickloop.params import section
from clickloop.sandbox import REPO, export_commit, new_project, run
from clickloop.simulation import SimulatorConfig

WORK = REPO / "reports" / "tmp" / "nightly_kill"
REPORT = REPO / "reports" / "nightly_kill"
SMALL = {
    "dataset": {"catalog": {"n_items": 300, "n_train_queries": 30, "n_test_queries": 15}},
    "simulate": {"days": 2, "sessions_per_day": 250, "n_users": 60},
    "feedback": {"gnolr": {"max_epochs": 1}, "recommender": {"epochs": 2}},
    "index": {"dense": {"batch_size": 32}},
    # The guard is not what is tried here, and this machine is shared.
    "nightly": {"gate": {"latency": {"queries": 20, "max_ratio": 4.0, "slack_ms": 200.0}}},
}
# The two training stages cost most of a night on 2 CPU cores, and 20 trials need 20 nights and more;
# they write their folders with the same atomic helper as the stages kept (clickloop.atomic).
DROPPED_STAGES = ("sparse", "dense_feedback")
MEASURES = ("nDCG@10", "R@100")

log = logging.getLogger("bench.nightly_kill")


def nightly(project: Path, day: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.Popen([sys.executable, "-m", "nightly", "run", "--day", str(day)], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def judged(project: Path) -> dict[str, dict[str, float]]:
    evaluate = json.loads((project / "metrics" / "evaluate.json").read_text())
    return {mode: {m: row[m] for m in MEASURES} for mode, row in evaluate.items()
            if isinstance(row, dict) and all(m in row for m in MEASURES)}


def served_version_problems(project: Path) -> tuple[str | None, list[str]]:
    """The served version and what is wrong with it (nothing, when it is complete and answers)."""
    from indexing import Searcher
    from indexing.serving import INDICES_DIR, served_dir
    from nightly.versions import VersionStore, local_encoders

    store = VersionStore(project / "serving")
    version = store.current()
    if version is None:
        return None, ["nothing serves"]
    problems = []
    manifest = store.manifest(version)
    folder = store.path(version)
    rewritten = {f"{INDICES_DIR}/{kind}" for kind in local_encoders(folder / INDICES_DIR)}
    for name, digest in manifest["components"].items():
        path = folder / name
        if name.startswith("models/"):
            continue  # encoders are checked through the index that loads them
        if not path.exists():
            problems.append(f"{name} missing")
        elif name not in rewritten and content_sha256(path) != digest:
            problems.append(f"{name} differs from its recorded hash")
    try:
        searcher = Searcher(served_dir(project / "serving") / INDICES_DIR)
        for mode in searcher.modes:
            if not searcher.search("warm jacket", k=5, mode=mode):
                problems.append(f"{mode} answered nothing")
    except Exception as e:  # what a serving process would meet
        problems.append(f"loading failed: {type(e).__name__}: {e}")
    return version, problems


def temporaries(project: Path) -> list[str]:
    return sorted(str(p.relative_to(project)) for p in project.rglob("*.tmp"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--commit", default="HEAD", help="the committed code to run (default HEAD)")
    parser.add_argument("--overrides", type=Path, help="a YAML of params laid over the repo's instead of SMALL")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json (trials so far)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.markdown_only:
        write_text(REPORT.with_suffix(".md"), markdown(json.loads(REPORT.with_suffix(".json").read_text())))
        return
    shutil.rmtree(WORK, ignore_errors=True)
    project, snapshot = WORK / "project", WORK / "snapshot"
    commit = export_commit(args.commit, WORK / "code")
    new_project(project, yaml.safe_load(args.overrides.read_text()) if args.overrides else SMALL,
                drop_stages=DROPPED_STAGES, source_root=WORK / "code")
    run([sys.executable, "-m", "dvc", "repro"], project)
    simulate = section("simulate", SimulatorConfig, project / "params.yaml")
    first = dt.date.fromisoformat(simulate.start_date) + dt.timedelta(days=simulate.days)
    day1 = simulate_day(project, first, seed=1000, out=WORK / "incoming")
    day2 = simulate_day(project, first + dt.timedelta(days=1), seed=1001, out=WORK / "incoming")
    run([sys.executable, "-m", "nightly", "run", "--day", str(day1)], project)
    shutil.copytree(project, snapshot, symlinks=True)

    started = time.perf_counter()
    run([sys.executable, "-m", "nightly", "run", "--day", str(day2)], project)
    reference_seconds = time.perf_counter() - started
    reference = judged(project)
    log.info("reference night: %.0f s, %s", reference_seconds, reference)

    params = ("params.yaml of the commit with bench.nightly_kill.SMALL" if not args.overrides else
              "params.yaml of the commit with --overrides") + f", without the stages {', '.join(DROPPED_STAGES)}"
    rng = random.Random(args.seed)
    night_seconds = reference_seconds
    trials = []
    for trial in range(args.trials):
        shutil.rmtree(project)
        shutil.copytree(snapshot, project, symlinks=True)
        delay = rng.uniform(0, night_seconds)
        process = nightly(project, day2)
        started = time.perf_counter()
        try:
            process.wait(timeout=delay)
            killed = False  # it finished first: the machine got faster, so later delays are drawn from this night
            night_seconds = time.perf_counter() - started
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            killed = True
        report = project / "serving" / "last_report.json"
        last = json.loads(report.read_text())
        reached = last["decision"] if last.get("landing", {}).get("day") == day2.name else None
        version, problems = served_version_problems(project)
        left_by_kill = temporaries(project)
        rerun = run([sys.executable, "-m", "nightly", "run", "--day", str(day2)], project, check=False)
        decision = json.loads(report.read_text())["decision"]
        metrics = judged(project)
        differences = {mode: {m: metrics.get(mode, {}).get(m, float("nan")) - value for m, value in row.items()}
                       for mode, row in reference.items()}
        converged = all(abs(d) < 1e-9 for row in differences.values() for d in row.values())
        row = {"trial": trial, "delay_seconds": round(delay, 1), "share_of_night": round(delay / reference_seconds, 3),
               "killed": killed, "last_decision_before_rerun": reached, "served": version,
               "served_problems": problems, "temporaries_after_kill": left_by_kill,
               "rerun_exit": rerun.returncode, "rerun_decision": decision, "converged": converged,
               "differences": {m: d for m, d in differences.items() if any(abs(x) >= 1e-9 for x in d.values())},
               "temporaries_after_rerun": temporaries(project)}
        trials.append(row)
        log.info("trial %d: killed at %.0f s, served %s %s, rerun %s %s, converged %s, tmp %d/%d", trial, delay,
                 version, problems or "complete", rerun.returncode, decision, converged, len(left_by_kill),
                 len(row["temporaries_after_rerun"]))
        write_json(REPORT.with_suffix(".json"), {"commit": commit, "reference_seconds": round(reference_seconds, 1),
                                                 "reference": reference, "trials": trials, "params": params})
    results = {"commit": commit, "reference_seconds": round(reference_seconds, 1), "reference": reference,
               "trials": trials, "params": params}
    write_json(REPORT.with_suffix(".json"), results)
    write_text(REPORT.with_suffix(".md"), markdown(results))
    print(REPORT.with_suffix(".md").read_text())


def markdown(results: dict[str, Any]) -> str:
    trials = results["trials"]
    killed = [t for t in trials if t["killed"]]
    complete = sum(not t["served_problems"] for t in trials)
    converged = sum(t["converged"] and t["rerun_exit"] in (0,) for t in trials)
    clean = sum(not t["temporaries_after_rerun"] for t in trials)
    lines = ["# kill -9 at random points of a nightly run", "",
             "`python -m bench.nightly_kill` (bench/nightly_kill.py): a small embedded catalog, every stage; each "
             f"trial kills night 2 (reference wall time {results['reference_seconds']:.0f} s) with SIGKILL on its "
             "whole process group after a uniform random delay, checks what serves, reruns the night and compares.",
             "",
             f"Commit {str(results.get('commit', '?'))[:10]}; {results.get('params', '')}.", "",
             *([results["note"], ""] if results.get("note") else []),
             f"- trials: {len(trials)}, killed before the night finished: {len(killed)}",
             f"- served version complete and answering after the kill: **{complete} / {len(trials)}**",
             f"- rerun finished and converged to the reference metrics: **{converged} / {len(trials)}**",
             f"- no temporary folder after the rerun: **{clean} / {len(trials)}**", "",
             "| trial | killed at s | share of the night | report before rerun | served after kill | problems | "
             "tmp after kill | rerun | converged | tmp after rerun |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for t in trials:
        lines.append(f"| {t['trial']} | {t['delay_seconds']} | {t['share_of_night']:.2f} | "
                     f"{t['last_decision_before_rerun'] or '-'} | {t['served'] or '-'} | "
                     f"{'; '.join(t['served_problems']) or 'none'} | {len(t['temporaries_after_kill'])} | "
                     f"{t['rerun_decision']} (exit {t['rerun_exit']}) | {t['converged']} | "
                     f"{len(t['temporaries_after_rerun'])} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
