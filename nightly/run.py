"""One night: land the new day of logs, keep the training window, `dvc repro`, gate, promote or keep.

Every step leaves the serving root consistent when the process dies in it: the logs are copied in
atomically, the champion serves until the pointer swap (nightly/versions.py), and the next run sweeps
what a killed one left. The report (JSON in `serving/reports/`, `serving/last_report.json`, and one
summary line on stdout) says what was decided and why.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clickloop.atomic import atomic_path, write_json
from clickloop.fingerprint import content_sha256
from clickloop.params import PARAMS_FILE, load_params, section
from nightly.gate import GateConfig
from nightly.versions import Challenger, Fault, VersionStore, folder_bytes, local_encoders

log = logging.getLogger(__name__)

DAY_NAME = re.compile(r"\d{4}-\d{2}-\d{2}")
LOG_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")  # what ingest reads (docs/contracts.md, UBI logs)
REPORTS_DIR = "reports"
LAST_REPORT = "last_report.json"

# Exit status of `python -m nightly run`, for cron and systemd to tell the outcomes apart.
EXIT_SERVING_NEW_OR_SAME = 0  # promoted, or nothing changed
EXIT_FAILED = 2               # the night could not run (bad day folder, dvc repro failed): the champion serves
EXIT_REJECTED = 3             # the gate kept the champion


@dataclass
class NightlyConfig:
    """params.yaml section `nightly`."""

    landing_dir: str = "feedback_logs"        # ingest's log root for real traffic (ingest.log_roots)
    archive_dir: str = "feedback_archive"     # days that left the training window move here, kept whole
    window_days: int = 28                     # train on the most recent this many days of feedback_logs/
    serving_dir: str = "serving"
    keep_versions: int = 5                    # the newest this many versions stay (plus the served one)
    recommender_dir: str = "data/feedback/recommender"
    metrics_dir: str = "metrics"
    repro_targets: list[str] = field(default_factory=list)  # [] = the whole pipeline
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        if self.window_days < 1:
            raise ValueError(f"params nightly.window_days must be at least 1, got {self.window_days}")


class NightError(RuntimeError):
    """A night that cannot run, with what to fix."""


# -- the day's logs ------------------------------------------------------------------------------


def check_day(folder: Path) -> dt.date:
    """The date of a day folder of UBI logs, after checking it is one ingest can read whole."""
    if folder.is_symlink() or not folder.is_dir():
        raise NightError(f"{folder}: not a folder (a day of logs is a folder YYYY-MM-DD of queries*/events* files)")
    if not DAY_NAME.fullmatch(folder.name):
        raise NightError(f"{folder}: the folder must be named after its day, YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(folder.name)
    except ValueError:
        raise NightError(f"{folder}: {folder.name!r} is not a date") from None
    kinds: set[str] = set()
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("README"):
            continue
        if entry.is_symlink() or not entry.is_file():
            raise NightError(f"{entry}: not a plain file (ingest skips links and folders; copy the file itself)")
        kind = next((k for k in ("queries", "events") if entry.name.startswith(k)), None)
        if kind is None or not entry.name.endswith(LOG_SUFFIXES):
            raise NightError(f"{entry}: not a log file: expected queries* or events* ending in "
                             f"{', '.join(LOG_SUFFIXES)}")
        if entry.stat().st_size == 0:
            raise NightError(f"{entry}: empty (an export that failed?)")
        kinds.add(kind)
    missing = {"queries", "events"} - kinds
    if missing:
        raise NightError(f"{folder}: no {' or '.join(sorted(missing))} file; a day needs both its queries and events")
    return day


def land_day(source: Path, landing: Path) -> dict[str, Any]:
    """Put the day folder into the landing folder (atomically), unless it lies there already."""
    day = check_day(source)
    target = landing / source.name
    if source.resolve() == target.resolve():
        return {"day": day.isoformat(), "action": "in place"}
    action = "landed"
    if target.exists():
        if content_sha256(target) == content_sha256(source):
            return {"day": day.isoformat(), "action": "already landed"}  # a rerun of the same night
        action = "replaced"  # a corrected redelivery of the day
    with atomic_path(target) as staged:
        shutil.copytree(source, staged, symlinks=False)
    return {"day": day.isoformat(), "action": action}


def apply_window(landing: Path, archive: Path, window_days: int, new_day: dt.date) -> dict[str, Any]:
    """Move day folders older than the window (counted back from the newest day) to the archive."""
    days = {dt.date.fromisoformat(p.name): p for p in landing.iterdir()
            if p.is_dir() and not p.is_symlink() and DAY_NAME.fullmatch(p.name)}
    newest = max(days, default=new_day)
    first = newest - dt.timedelta(days=window_days - 1)
    if new_day < first:
        raise NightError(f"day {new_day} is older than the training window ({window_days} days back from {newest}): "
                         f"it would be archived unread; raise nightly.window_days to train on it")
    archived = []
    for day, folder in sorted(days.items()):
        if day < first:
            archive.mkdir(parents=True, exist_ok=True)
            destination = archive / folder.name
            if destination.exists():  # archived before and landed again: the landing copy is the newer one
                shutil.rmtree(destination)
            os.replace(folder, destination)  # one rename: the day is in one place or the other
            archived.append(folder.name)
    kept = sorted(d.isoformat() for d in days if d >= first)
    return {"window_days": window_days, "first": first.isoformat(), "last": newest.isoformat(), "days": kept,
            "archived": archived}


STAGE_START = re.compile(r"^Running stage '([^']+)'")


def dvc_repro(targets: list[str], log_file: Path, cwd: Path | None = None) -> dict[str, float]:
    """Run `dvc repro` with this interpreter's environment first on PATH (the stages run `python -m ...`);
    the wall seconds of each stage that ran, timed from DVC's "Running stage" lines as they stream."""
    # Unbuffered: the stage lines must reach the pipe when they are printed, or the timing is wrong.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    stages: dict[str, float] = {}
    running, since = None, time.perf_counter()
    with open(log_file, "w") as out, subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", *targets], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=env, text=True, errors="replace", cwd=cwd,
    ) as done:
        assert done.stdout is not None
        for line in done.stdout:
            out.write(line)
            out.flush()  # a night's progress can be followed with tail -f
            started = STAGE_START.match(line)
            if started:
                now = time.perf_counter()
                if running is not None:
                    stages[running] = round(now - since, 3)
                running, since = started.group(1), now
    if running is not None:
        stages[running] = round(time.perf_counter() - since, 3)
    if done.returncode != 0:
        tail = log_file.read_text(errors="replace").strip().splitlines()[-5:]
        raise NightError(f"dvc repro failed (exit {done.returncode}; log {log_file}): " + " | ".join(tail))
    return stages


# -- the night -----------------------------------------------------------------------------------


def run_night(
    day: Path, config: NightlyConfig, params_file: Path = PARAMS_FILE,
    repro: Callable[[], None] | None = None, fault: Fault | None = None,
) -> tuple[int, dict[str, Any]]:
    """Run one night for `day`; (exit status, report). `repro` replaces `dvc repro` (tests); `fault` is
    passed to the promotion (tests raise in it to simulate a kill)."""
    from indexing import SearchConfig
    from nightly.gate import run_gate, unchanged_modes
    from pipeline.evaluate import EvaluateConfig

    store = VersionStore(config.serving_dir, config.keep_versions)
    started = dt.datetime.now(dt.UTC)
    night = f"{started:%Y%m%dT%H%M%S%fZ}"
    report: dict[str, Any] = {"night": night, "started": started.isoformat(), "seconds": {}}
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        report["seconds"][step] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    with store.lock():
        report["swept"] = store.sweep()
        champion = store.current()
        report["champion"] = champion
        try:
            landing = land_day(day, Path(config.landing_dir))
            report["landing"] = landing
            report["window"] = apply_window(Path(config.landing_dir), Path(config.archive_dir), config.window_days,
                                            dt.date.fromisoformat(landing["day"]))
            lap("land")
            if repro is None:
                report["stages"] = dvc_repro(config.repro_targets, store.root / REPORTS_DIR / f"{night}.repro.log")
            else:
                repro()
            lap("repro")
        except NightError as e:
            return _finish(store, report, "failed", [str(e)], EXIT_FAILED)

        evaluate = section("evaluate", EvaluateConfig, params_file)
        # Absolute: Lucene opens paths in the JVM, which resolves a relative one against the directory the
        # process started in, not the one it runs in now.
        challenger = Challenger(Path(evaluate.index_root).absolute(), Path(config.recommender_dir).absolute(),
                                Path(config.metrics_dir).absolute())
        fingerprint = challenger.fingerprint()
        champion_manifest = store.manifest(champion) if champion in store.versions() else None
        if champion_manifest is not None and champion_manifest.get("components") == fingerprint:
            return _finish(store, report, "unchanged", [f"the retrained artifacts are those of {champion}, byte for "
                                                        "byte: nothing to promote"], EXIT_SERVING_NEW_OR_SAME)
        size = sum(folder_bytes(p) if p.is_dir() else p.stat().st_size for p in challenger.components().values())
        size += sum(folder_bytes(model) for model, _ in local_encoders(challenger.index_root).values())
        workdir = Path(tempfile.mkdtemp(prefix=f".gate.{os.getpid()}.", suffix=".tmp", dir=store.root))
        try:
            result = run_gate(
                config.gate, evaluate, section("search", SearchConfig, params_file), challenger, size,
                store.path(champion) if champion_manifest is not None else None,
                champion_manifest.get("bytes") if champion_manifest is not None else None, workdir,
                unchanged=lambda searcher, modes: unchanged_modes(searcher, modes, fingerprint,
                                                                  champion_manifest.get("components") or {}),
            )
        except Exception as e:  # a gate that cannot decide promotes nothing; cron gets a report, not a traceback
            log.exception("the gate failed")
            return _finish(store, report, "failed", [f"the gate failed: {type(e).__name__}: {e}"], EXIT_FAILED)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        report["gate"] = result.to_dict()
        lap("gate")
        if not result.promote:
            return _finish(store, report, "rejected", result.reasons, EXIT_REJECTED)
        facts = {"night": night, "day": landing["day"], "window": report["window"],
                 "params": load_params(params_file), "gate": {"champion": champion, "reasons": result.reasons}}
        version = store.promote(challenger, facts, fault=fault)
        report["version"] = version
        report["pruned"] = store.prune()
        lap("promote")
        return _finish(store, report, "promoted", result.reasons, EXIT_SERVING_NEW_OR_SAME)


def _finish(store: VersionStore, report: dict[str, Any], decision: str, reasons: list[str],
            status: int) -> tuple[int, dict[str, Any]]:
    report["decision"], report["reasons"] = decision, reasons
    report["serving"] = store.current()
    report["finished"] = dt.datetime.now(dt.UTC).isoformat()
    report["summary"] = summary(report)
    store.root.mkdir(parents=True, exist_ok=True)
    write_json(store.root / REPORTS_DIR / f"{report['night']}.json", report)
    write_json(store.root / LAST_REPORT, report)
    return status, report


def summary(report: dict[str, Any]) -> str:
    """The report in one line, for cron mail and logs."""
    day = report.get("landing", {}).get("day", "?")
    serving = report.get("serving") or "nothing"
    why = f": {report['reasons'][0]}" + (f" (+{len(report['reasons']) - 1} more)" if len(report["reasons"]) > 1
                                         else "") if report["reasons"] else ""
    if report["decision"] == "promoted":
        head = f"promoted {report['version']} (was {report['champion'] or 'nothing'})"
    elif report["decision"] == "rejected":
        head = f"rejected the challenger, {serving} keeps serving"
    elif report["decision"] == "unchanged":
        head = f"unchanged, {serving} keeps serving"
    else:
        head = f"failed, {serving} keeps serving"
    return f"nightly {day}: {head}{why}"
