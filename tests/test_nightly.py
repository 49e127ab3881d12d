"""Nightly retraining under real DVC on a tiny embedded catalog: the first night promotes, a broken
challenger is rejected while the champion serves on, a new day that is no worse is promoted, rollback
restores the previous version, a ServingSearcher answers from 8 threads through promotions with no
failed request, old versions are pruned, and a promotion killed between its steps leaves the champion
serving and no temporary folder.

The project is a copy of the repo's code with a dvc.yaml without the two training stages (sparse,
dense_feedback): what the gate and the versions do does not depend on which retrievers there are,
and those stages would cost most of the run on 2 CPU cores.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clickloop.params import section
from clickloop.sandbox import new_project, run
from indexing.serving import CURRENT_FILE, INDICES_DIR, VERSION_MANIFEST, VERSIONS_DIR, ServingSearcher
from nightly.run import NightlyConfig, run_night
from nightly.versions import Challenger, VersionStore

pytestmark = [pytest.mark.jvm, pytest.mark.slow]  # the gate loads Lucene's JVM in this process

TRAINING_STAGES = ("sparse", "dense_feedback")
TINY = {
    "dataset": {"catalog": {"n_items": 300, "n_train_queries": 30, "n_test_queries": 15}},
    "simulate": {"days": 2, "sessions_per_day": 250, "n_users": 60},
    "feedback": {"gnolr": {"max_epochs": 1}, "recommender": {"epochs": 2}},
    "index": {"dense": {"batch_size": 32}},
    # Generous latency guard: this machine is shared with benchmarks, and the guard is not what is tested.
    "nightly": {"window_days": 2, "keep_versions": 2,
                "gate": {"latency": {"queries": 20, "max_ratio": 4.0, "slack_ms": 200.0}}},
}
DAYS = ("2026-11-01", "2026-11-02", "2026-11-03")


def _run(args: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = run(args, cwd, timeout=1800, check=False)
    if ok:
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = new_project(tmp_path_factory.mktemp("nightly"), TINY, drop_stages=TRAINING_STAGES)
    _run([sys.executable, "-m", "dvc", "repro", "simulate"], root)
    # The new days arrive from outside: copies of the simulated days under new dates (new ids, new timestamps).
    # Each window must hold other traffic than the one before, or the retrained artifacts are the same bytes
    # (`unchanged`): a day past the simulated ones loses every fifth event.
    simulated = sorted((root / "data" / "simulated_logs").iterdir())
    for i, day in enumerate(DAYS):
        folder = root.parent / f"incoming-{root.name}" / day
        folder.mkdir(parents=True)
        source_day = simulated[i % len(simulated)]
        for source in source_day.iterdir():
            lines = gzip.decompress(source.read_bytes()).decode().replace(source_day.name, day).splitlines()
            if i >= len(simulated) and source.name.startswith("events"):
                lines = [line for n, line in enumerate(lines) if n % 5]
            (folder / source.name).write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return root


def _incoming(project: Path, day: str) -> Path:
    return project.parent / f"incoming-{project.name}" / day


def _nightly(project: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "nightly", *args], project, ok=ok)


def _report(project: Path) -> dict:
    return json.loads((project / "serving" / "last_report.json").read_text())


def _current(project: Path) -> str:
    return (project / "serving" / CURRENT_FILE).read_text().strip()


def _temporary(project: Path) -> list[str]:
    return [str(p.relative_to(project)) for p in (project / "serving").rglob("*.tmp")]


def test_first_night_promotes_a_complete_version(project: Path) -> None:
    done = _nightly(project, "run", "--day", str(_incoming(project, DAYS[0])))
    report = _report(project)
    assert report["decision"] == "promoted" and done.stdout.strip() == report["summary"]
    assert report["summary"].startswith(f"nightly {DAYS[0]}: promoted {report['version']}")
    assert _current(project) == report["version"] and report["champion"] is None
    # Each stage `dvc repro` ran, timed from its output as it streamed (the dataset stage runs every night).
    assert {"dataset", "ingest", "feedback", "evaluate"} <= set(report["stages"])
    assert all(seconds > 0 for seconds in report["stages"].values())
    assert sum(report["stages"].values()) <= report["seconds"]["repro"]
    assert (project / "feedback_logs" / DAYS[0]).is_dir()
    manifest = json.loads((project / "serving" / VERSIONS_DIR / report["version"] / VERSION_MANIFEST).read_text())
    assert manifest["format_version"] == 1 and manifest["previous"] is None
    assert manifest["window"]["days"] == [DAYS[0]] and manifest["window"]["window_days"] == 2
    assert manifest["params"]["evaluate"]["retrievers"] == ["bm25", "bm25_rm3", "dense"]  # not the trainers' modes
    assert {"indices/bm25", "indices/dense", "indices/docs.parquet", "recommender"} <= set(manifest["components"])
    dense = manifest["encoders"]["dense"]
    assert dense["model"] == "all-MiniLM-L6-v2" and len(dense["model_sha256"]) == 64
    with ServingSearcher(project / "serving", modes=("bm25",), poll_seconds=None) as serving:
        assert serving.version == report["version"] and len(serving.search("bottle", k=3)) == 3
    assert not _temporary(project)


def test_a_broken_challenger_is_rejected_and_the_champion_serves_on(project: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    champion = _current(project)
    ids_file = project / "data" / "indices" / "dense" / "doc_ids.json"
    original = ids_file.read_text()

    def broken_retrain() -> None:
        # A dense index whose vectors answer for the wrong documents: it loads and searches, badly.
        ids = json.loads(original)
        ids_file.write_text(json.dumps(ids[1:] + ids[:1]))
        _run([sys.executable, "-m", "pipeline.evaluate"], project)

    monkeypatch.chdir(project)
    config = section("nightly", NightlyConfig, project / "params.yaml")
    try:
        code, report = run_night(_incoming(project, DAYS[0]), config, project / "params.yaml", repro=broken_retrain)
    finally:
        ids_file.write_text(original)
    assert code == 3 and report["decision"] == "rejected", report
    assert _current(project) == champion == report["serving"]
    assert any(r.startswith("worse beyond noise: dense nDCG@10") for r in report["reasons"]), report["reasons"]
    dense = next(c for c in report["gate"]["checks"]["comparisons"]
                 if c["retriever"] == "dense" and c["measure"] == "nDCG@10")
    assert dense["worse"] and dense["upper"] < 0 and dense["n"] == 15
    # The untouched retriever is not blamed, nor even compared: its index is the champion's, byte for byte.
    assert "bm25" in report["gate"]["checks"]["identical"]
    assert not [c for c in report["gate"]["checks"]["comparisons"] if c["retriever"] == "bm25"]
    assert "keeps serving" in report["summary"] and not _temporary(project)


def test_a_new_day_no_worse_is_promoted_and_the_window_moves(project: Path) -> None:
    first = _current(project)
    for day in DAYS[1:]:
        _nightly(project, "run", "--day", str(_incoming(project, day)))
        report = _report(project)
        assert report["decision"] == "promoted", report
        assert not any(c["worse"] for c in report["gate"]["checks"]["comparisons"])
    assert report["window"]["days"] == list(DAYS[1:]) and report["window"]["archived"] == [DAYS[0]]
    assert (project / "feedback_archive" / DAYS[0]).is_dir() and not (project / "feedback_logs" / DAYS[0]).exists()
    # keep_versions 2: the first version is pruned, the newest two stay.
    store = VersionStore(project / "serving", keep=2)
    assert first not in store.versions() and len(store.versions()) == 2
    assert store.versions()[-1] == _current(project)


def test_the_same_night_again_is_unchanged(project: Path) -> None:
    done = _nightly(project, "run", "--day", str(_incoming(project, DAYS[-1])))
    assert _report(project)["decision"] == "unchanged" and "unchanged" in done.stdout


def test_rollback_restores_the_previous_version(project: Path) -> None:
    store = VersionStore(project / "serving", keep=2)
    newest = _current(project)
    previous = store.manifest(newest)["previous"]
    done = _nightly(project, "rollback")
    assert _current(project) == previous and previous in done.stdout
    # Its own previous version was pruned (keep_versions 2): rolling back further fails and changes nothing.
    refused = _nightly(project, "rollback", ok=False)
    assert refused.returncode == 2 and "pruned" in refused.stderr and _current(project) == previous
    _nightly(project, "rollback", "--to", newest)
    assert _current(project) == newest
    status = json.loads(_nightly(project, "status", "--json").stdout)
    assert status["serving"] == newest and [v["version"] for v in status["versions"]] == store.versions()


def _challenger(project: Path) -> Challenger:
    return Challenger(project / "data" / "indices", project / "data" / "feedback" / "recommender",
                      project / "metrics")


def test_serving_from_8_threads_through_promotions_fails_no_request(project: Path) -> None:
    store = VersionStore(project / "serving", keep=2)
    failures: list[BaseException] = []
    served: set[str] = set()
    answered = [0]
    stop = threading.Event()
    serving = ServingSearcher(project / "serving", modes=("bm25",), poll_seconds=0.05)

    def client(worker: int) -> None:
        queries = ("insulated bottle", "running shoes", "coffee", "warm jacket")
        i = worker
        while not stop.is_set():
            try:
                searcher = serving.searcher
                hits = searcher.search(queries[i % len(queries)], k=5, mode="bm25")
                assert hits and [h.rank for h in hits] == list(range(1, len(hits) + 1))
                served.add(serving.version)
                answered[0] += 1
            except BaseException as e:
                failures.append(e)
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    try:
        for step in range(4):
            if step == 2:
                store.rollback()
            else:
                store.promote(_challenger(project), {"test": step})
                store.prune()
            deadline = time.monotonic() + 60
            while serving.version != store.current() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert serving.version == store.current()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        serving.close()
    assert not failures, failures[:3]
    assert answered[0] > 0 and len(served) >= 3
    assert len(store.versions()) <= 3  # keep 2, plus a rolled-back-to one while it serves


@pytest.mark.parametrize("step", ["staged", "renamed", "pointed"])
def test_a_promotion_killed_between_steps_leaves_a_complete_version_serving(project: Path, step: str) -> None:
    store = VersionStore(project / "serving", keep=2)
    champion, versions = store.current(), store.versions()

    def kill(at: str) -> None:
        if at == step:
            raise KeyboardInterrupt(f"killed after {at}")

    with pytest.raises(KeyboardInterrupt):
        store.promote(_challenger(project), {"test": "kill"}, fault=kill)
    assert not _temporary(project)
    if step == "pointed":  # the swap happened: the new version serves, whole
        assert store.current() not in versions and store.current() in store.versions()
    else:
        assert store.current() == champion and store.versions() == versions
    with ServingSearcher(project / "serving", modes=("bm25",), poll_seconds=None) as serving:
        assert (project / "serving" / VERSIONS_DIR / serving.version / INDICES_DIR / "bm25").is_dir()
        assert len(serving.search("bottle", k=3)) == 3


def test_leftovers_of_a_killed_run_are_swept(project: Path) -> None:
    # What kill -9 leaves: a staged version folder of a dead writer (pid 999999999 runs nowhere).
    store = VersionStore(project / "serving", keep=2)
    leftover = project / "serving" / VERSIONS_DIR / ".20991231T000000000000Z-deadbeef.999999999.abc.tmp"
    (leftover / "20991231T000000000000Z-deadbeef").mkdir(parents=True)
    gate_dir = project / "serving" / ".gate.999999999.xyz.tmp"
    gate_dir.mkdir()
    assert sorted(store.sweep()) == sorted([str(leftover.relative_to(project / "serving")),
                                            str(gate_dir.relative_to(project / "serving"))])
    assert not _temporary(project)
