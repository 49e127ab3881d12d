"""The promotion gate's statistics and the nightly's landing of a day, without a JVM: a drop beyond noise
rejects, noise and ties do not; day folders are checked before ingest sees them; the window archives."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from indexing.settings import PipelineSpec
from nightly.gate import (
    GateConfig,
    judge,
    judged_comparisons,
    offpolicy_comparisons,
    paired,
    per_query,
    unchanged_modes,
)
from nightly.run import NightError, apply_window, check_day, land_day


def _qrels(n: int) -> dict[str, dict[str, int]]:
    return {f"q{i}": {f"d{i}": 1} for i in range(n)}


def _run(n: int, hit: np.ndarray) -> dict[str, dict[str, float]]:
    """Query i ranks its relevant document first when hit[i], else a wrong one only."""
    return {f"q{i}": ({f"d{i}": 2.0, "x": 1.0} if hit[i] else {"x": 1.0}) for i in range(n)}


def test_paired_difference_and_its_standard_error() -> None:
    difference, stderr, n = paired({"a": 1.0, "b": 0.0, "c": 0.5}, {"a": 0.0, "b": 0.0, "c": 0.5, "z": 1.0})
    assert n == 3 and difference == pytest.approx(-1 / 3)
    assert stderr == pytest.approx(np.std([-1, 0, 0], ddof=1) / math.sqrt(3))


def test_a_drop_beyond_noise_is_worse_and_noise_is_not() -> None:
    rng = np.random.default_rng(0)
    n = 200
    qrels = _qrels(n)
    champion = rng.random(n) < 0.6
    broken = champion & (rng.random(n) < 0.3)  # loses most of its hits
    noisy = champion ^ (rng.random(n) < 0.04)  # a few flips either way
    assert per_query(qrels, _run(n, champion), "nDCG@10")["q0"] in (0.0, 1.0)
    comparisons = judged_comparisons(qrels, {"a": _run(n, champion), "b": _run(n, champion)},
                                     {"a": _run(n, broken), "b": _run(n, noisy)}, ["nDCG@10", "RR@10"], 0.0)
    z = judge(comparisons, alpha=0.05, correction="bonferroni")
    assert z == pytest.approx(2.2414, abs=1e-3)  # 0.05 shared by 4 comparisons, one-sided
    worse = {(c.retriever, c.measure) for c in comparisons if c.worse}
    assert worse == {("a", "nDCG@10"), ("a", "RR@10")}
    for c in comparisons:
        assert c.upper == pytest.approx(c.difference + z * c.stderr)
    assert "worse" not in comparisons[0].describe() and "paired over 200 queries" in comparisons[0].describe()


def test_an_identical_challenger_is_never_worse() -> None:
    qrels = _qrels(20)
    same = _run(20, np.arange(20) % 2 == 0)
    comparisons = judged_comparisons(qrels, {"a": same}, {"a": same}, ["nDCG@10"], 0.0)
    judge(comparisons, 0.05, "bonferroni")
    assert comparisons[0].difference == 0 and comparisons[0].stderr == 0 and not comparisons[0].worse


def test_a_tolerance_forgives_a_small_sure_drop() -> None:
    n = 200
    qrels = _qrels(n)
    champion = np.ones(n, dtype=bool)
    challenger = champion.copy()
    challenger[:10] = False  # 5% of the queries lose their hit: a drop of 0.05, sure at 95%
    strict = judged_comparisons(qrels, {"a": _run(n, champion)}, {"a": _run(n, challenger)}, ["RR@10"], 0.0)
    lenient = judged_comparisons(qrels, {"a": _run(n, champion)}, {"a": _run(n, challenger)}, ["RR@10"], 0.05)
    judge(strict, 0.05, "none")
    judge(lenient, 0.05, "none")
    assert strict[0].worse and not lenient[0].worse


def test_offpolicy_estimates_compare_with_their_standard_errors() -> None:
    champion = {"logging": {"clicks@10": 1.8, "clicks@10_stderr": 0.01},
                "bm25": {"ips_clicks@10": 1.50, "ips_clicks@10_stderr": 0.02, "ips_clicks@10_coverage": 0.9},
                "dense": {"ips_clicks@10": 0.60, "ips_clicks@10_stderr": 0.02}}
    challenger = {"bm25": {"ips_clicks@10": 1.48, "ips_clicks@10_stderr": 0.02},  # within noise
                  "dense": {"ips_clicks@10": 0.30, "ips_clicks@10_stderr": 0.02},  # 10 standard errors down
                  "sparse": {"ips_clicks@10": 0.1, "ips_clicks@10_stderr": 0.01}}  # new: nothing to compare
    comparisons = offpolicy_comparisons(champion, challenger, 0.0)
    judge(comparisons, 0.05, "bonferroni")
    assert [(c.retriever, c.worse) for c in comparisons] == [("bm25", False), ("dense", True)]
    assert comparisons[1].stderr == pytest.approx(math.hypot(0.02, 0.02))


def test_a_comparison_without_a_standard_error_never_rejects() -> None:
    comparisons = offpolicy_comparisons({"a": {"ips_clicks@10": 1.0}}, {"a": {"ips_clicks@10": 0.0}}, 0.0)
    judge(comparisons, 0.05, "bonferroni")
    assert not comparisons[0].worse and math.isnan(comparisons[0].upper)


def test_gate_params_are_checked() -> None:
    with pytest.raises(ValueError, match="correction"):
        GateConfig(correction="holm")
    with pytest.raises(ValueError, match="alpha"):
        GateConfig(alpha=1.5)


def _day(root: Path, name: str, files: dict[str, bytes] | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    record = json.dumps({"query_id": f"{name}-q"}).encode()
    for file, content in (files or {"queries.jsonl.gz": gzip.compress(record),
                                    "events.jsonl.gz": gzip.compress(record)}).items():
        (folder / file).write_bytes(content)
    return folder


def test_a_day_folder_is_checked_before_ingest_sees_it(tmp_path: Path) -> None:
    assert check_day(_day(tmp_path, "2026-11-01")) == dt.date(2026, 11, 1)
    with pytest.raises(NightError, match="named after its day"):
        check_day(_day(tmp_path, "yesterday"))
    with pytest.raises(NightError, match="not a date"):
        check_day(_day(tmp_path, "2026-13-01"))
    with pytest.raises(NightError, match="no events"):
        check_day(_day(tmp_path, "2026-11-02", {"queries.jsonl": b"{}\n"}))
    with pytest.raises(NightError, match="not a log file"):
        check_day(_day(tmp_path, "2026-11-03", {"queries.jsonl": b"{}\n", "events.jsonl": b"{}\n", "x.csv": b"1"}))
    with pytest.raises(NightError, match="empty"):
        check_day(_day(tmp_path, "2026-11-04", {"queries.jsonl": b"", "events.jsonl": b"{}\n"}))
    linked = _day(tmp_path, "2026-11-05", {"queries.jsonl": b"{}\n"})
    (linked / "events.jsonl").symlink_to(tmp_path / "2026-11-01" / "events.jsonl.gz")
    with pytest.raises(NightError, match="not a plain file"):
        check_day(linked)


def test_landing_is_idempotent_and_a_redelivery_replaces(tmp_path: Path) -> None:
    landing = tmp_path / "feedback_logs"
    day = _day(tmp_path / "in", "2026-11-01")
    assert land_day(day, landing)["action"] == "landed"
    assert land_day(day, landing)["action"] == "already landed"
    assert land_day(landing / "2026-11-01", landing)["action"] == "in place"
    (day / "events.jsonl.gz").write_bytes(gzip.compress(b'{"fixed": true}\n'))
    assert land_day(day, landing)["action"] == "replaced"
    assert (landing / "2026-11-01" / "events.jsonl.gz").read_bytes() == (day / "events.jsonl.gz").read_bytes()
    assert sorted(p.name for p in landing.iterdir()) == ["2026-11-01"]  # no temporary folder left


def test_the_window_archives_days_that_left_it(tmp_path: Path) -> None:
    landing, archive = tmp_path / "feedback_logs", tmp_path / "feedback_archive"
    for name in ("2026-11-01", "2026-11-02", "2026-11-05"):
        _day(landing, name)
    (landing / "README.md").write_text("not a day")
    window = apply_window(landing, archive, 3, dt.date(2026, 11, 5))
    assert window == {"window_days": 3, "first": "2026-11-03", "last": "2026-11-05", "days": ["2026-11-05"],
                      "archived": ["2026-11-01", "2026-11-02"]}
    assert sorted(p.name for p in archive.iterdir()) == ["2026-11-01", "2026-11-02"]
    assert (landing / "README.md").is_file()
    with pytest.raises(NightError, match="older than the training window"):
        apply_window(landing, archive, 3, dt.date(2026, 11, 1))


class _Pipelines:
    """A Searcher's pipeline lookup, all the gate asks of it to tell unchanged modes."""

    def __init__(self, **modes: list[str]) -> None:
        self.modes = modes

    def pipeline_spec(self, name: str) -> PipelineSpec:
        return PipelineSpec(self.modes[name])


def test_modes_identical_to_the_champions_are_not_compared() -> None:
    champion = {"indices/bm25": "b", "indices/dense": "d", "indices/dense_feedback": "f", "models/dense_feedback": "m",
                "indices/pipelines.json": "p", "indices/docs.parquet": "x"}
    searcher = _Pipelines(lexical=["bm25", "dense"], hybrid=["bm25", "dense_feedback"])
    modes = ["bm25", "bm25_rm3", "dense", "dense_feedback", "lexical", "hybrid"]
    # Only the fine-tuned encoder changed: its index folder is the same bytes, what it loads is not.
    retrained = {**champion, "models/dense_feedback": "m2"}
    assert unchanged_modes(searcher, modes, retrained, champion) == {"bm25", "bm25_rm3", "dense", "lexical"}
    # A new stored pipeline choice: every pipeline is compared again.
    rechosen = {**champion, "indices/pipelines.json": "p2"}
    assert unchanged_modes(searcher, modes, rechosen, champion) == {"bm25", "bm25_rm3", "dense", "dense_feedback"}
    # A retriever the champion did not have is new, not unchanged.
    assert "sparse" not in unchanged_modes(searcher, ["sparse"], {**champion, "indices/sparse": "s"}, champion)
