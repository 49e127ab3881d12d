"""Ingest stage end to end on small UBI logs in tmp dirs, with real DuckDB and Parquet."""

from __future__ import annotations

import copy
import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from clickloop.ingest import TABLES, IngestConfig, IngestReport, ingest

REPO = Path(__file__).resolve().parents[1]
DAY1, DAY2 = "2026-03-01", "2026-03-02"


def query(query_id: str, hits: list[str], day: str = DAY1, **fields: Any) -> dict[str, Any]:
    record = {
        "query_id": query_id,
        "client_id": "client-1",
        "user_query": f"text of {query_id}",
        "timestamp": f"{day}T10:00:00Z",
        "query_response_hit_ids": hits,
        "application": "shop",
        "query_attributes": {"session_id": f"session-{query_id}", "ranker": "bm25", "device": "mobile"},
    }
    record.update(fields)
    return record


def event(action: str, query_id: str, doc_id: str, ordinal: Any, second: int = 1, day: str = DAY1,
          **fields: Any) -> dict[str, Any]:
    record = {
        "action_name": action,
        "query_id": query_id,
        "session_id": f"session-{query_id}",
        "client_id": "client-1",
        "timestamp": f"{day}T10:00:{second:02d}Z",
        "event_attributes": {"object": {"object_id": doc_id}, "position": {"ordinal": ordinal}},
    }
    record.update(fields)
    return record


def good_day(day: str = DAY1, prefix: str = "q") -> tuple[list[dict], list[dict]]:
    """Two queries; one explored with logging ranks and propensities; clicks, a love, an add_to_cart."""
    explored = query(f"{prefix}1", ["d1", "d2", "d3"], day)
    explored["query_attributes"] |= {
        "exploration": {"scheme": "swap_pairs", "n": 2},
        "logging_ranks": [2, 1, 3],
        "display_propensities": [0.5, 0.5, 1.0],
    }
    queries = [explored, query(f"{prefix}2", ["d4", "d5"], day, query_attributes={"user_id": "u9"})]
    events = [
        *(event("impression", f"{prefix}1", doc, pos, day=day) for pos, doc in enumerate(["d1", "d2", "d3"], 1)),
        event("click", f"{prefix}1", "d2", 2, second=2, day=day),
        event("click", f"{prefix}1", "d2", 2, second=5, day=day),
        event("love", f"{prefix}1", "d2", 2, second=6, day=day),
        event("add_to_cart", f"{prefix}1", "d2", 2, second=7, day=day),
        event("click", f"{prefix}2", "d5", 2, second=3, day=day, session_id=None),
    ]
    return queries, events


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Records as JSON lines (gzipped for .gz) or as Parquet (free-form attributes as JSON text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        rows = [{k: json.dumps(v) if k == "query_attributes" else v for k, v in r.items()} for r in records]
        pq.write_table(pa.Table.from_pylist(rows), path)
        return
    text = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)


def write_lines(path: Path, lines: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def run(tmp_path: Path, roots: list[Path], **overrides: Any) -> tuple[IngestReport, dict[str, pl.DataFrame]]:
    config = IngestConfig(
        log_roots=[str(r) for r in roots],
        out_dir=str(tmp_path / "ingested"),
        metrics_file=str(tmp_path / "metrics" / "ingest.json"),
        temp_directory=str(tmp_path / "spill"),
        memory_limit="512MB",
        **overrides,
    )
    report = ingest(config)
    tables = {name: pl.read_parquet(tmp_path / "ingested" / f"{name}.parquet") for name in TABLES}
    return report, tables


def counts_by_file(report: IngestReport) -> dict[str, tuple[int, int, int, int]]:
    return {Path(f.file).name: (f.read, f.accepted, f.quarantined, f.duplicates) for f in report.files}


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".parquet"])
def test_jsonl_gzip_and_parquet_give_the_tables_of_plain_jsonl(tmp_path: Path, suffix: str) -> None:
    queries, events = good_day()
    write_records(tmp_path / "plain" / DAY1 / "queries.jsonl", queries)
    write_records(tmp_path / "plain" / DAY1 / "events.jsonl", events)
    write_records(tmp_path / "other" / DAY1 / f"queries{suffix}", queries)
    write_records(tmp_path / "other" / DAY1 / f"events{suffix}", events)

    _, expected = run(tmp_path / "a", [tmp_path / "plain"])
    report, tables = run(tmp_path / "b", [tmp_path / "other"])

    assert report.totals == {"files": 2, "read": 10, "accepted": 10, "quarantined": 0, "duplicates": 0}
    for name in TABLES:
        assert_frame_equal(tables[name], expected[name])


def test_results_carry_position_feedback_and_logging_context(tmp_path: Path) -> None:
    queries, events = good_day()
    write_records(tmp_path / "logs" / DAY1 / "queries.jsonl", queries)
    write_records(tmp_path / "logs" / DAY1 / "events.jsonl", events)
    _, tables = run(tmp_path, [tmp_path / "logs"])

    results = tables["results"]
    assert results.select("query_id", "doc_id", "position").rows() == [
        ("q1", "d1", 1), ("q1", "d2", 2), ("q1", "d3", 3), ("q2", "d4", 1), ("q2", "d5", 2)]
    d2 = results.row(1, named=True)
    assert (d2["impressed"], d2["clicked"], d2["loved"], d2["n_clicks"]) == (True, True, True, 2)
    assert d2["actions"] == ["add_to_cart", "click", "impression", "love"]
    assert (d2["logging_rank"], d2["display_propensity"], d2["exploration"]) == (1, 0.5, "swap_pairs")
    d4 = results.row(3, named=True)
    assert (d4["logging_rank"], d4["display_propensity"], d4["exploration"], d4["actions"]) == (1, 1.0, "none", [])
    assert (d4["user_id"], d4["session_id"]) == ("u9", "client-1")  # no session id: the client's session

    q1 = tables["queries"].row(0, named=True)
    assert (q1["n_shown"], q1["ranker"], q1["device"], str(q1["day"])) == (3, "bm25", "mobile", DAY1)
    assert json.loads(q1["query_attributes"])["logging_ranks"] == [2, 1, 3]
    # The session-less click on q2 joins its query's session.
    assert tables["events"].filter(pl.col("query_id") == "q2")["session_id"].to_list() == ["client-1"]
    sessions = {r["session_id"]: r for r in tables["sessions"].iter_rows(named=True)}
    assert (sessions["session-q1"]["n_queries"], sessions["session-q1"]["n_clicks"]) == (1, 2)
    assert sessions["session-q1"]["n_loves"] == 1 and sessions["session-q1"]["query_ids"] == ["q1"]


def test_every_kind_of_bad_record_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    day = tmp_path / "logs" / DAY1
    queries, events = good_day()
    bad_queries = [
        ("malformed_json", b'{"query_id": "q9", "client_id": "c", "user_qu'),
        ("not_an_object", b'["q9", "c"]'),
        ("empty_record", b""),
        ("invalid_utf8", b'{"query_id": "q9\xff\xfe"}'),
        ("missing:query_id", {**query("q9", []), "query_id": None}),
        ("missing:client_id", {k: v for k, v in query("q9", []).items() if k != "client_id"}),
        ("missing:user_query", query("q9", [], user_query=None)),
        ("missing:timestamp", query("q9", [], timestamp=None)),
        ("bad_timestamp", query("q9", [], timestamp="2026-02-30T10:00:00Z")),
        ("too_long:query_id", query("q" * 101, [])),
        ("too_long:user_query", query("q9", [], user_query="x" * 61)),
        ("wrong_type:query_response_hit_ids", query("q9", [1, 2])),
        ("wrong_type:query_attributes", query("q9", [], query_attributes="mobile")),
        ("bad_logging_ranks", query("q9", ["d1", "d2"], query_attributes={"logging_ranks": [1]})),
        ("conflicting_query_id", query("q1", ["d1", "d2", "d3"], user_query="another text")),
        ("record_too_large", query("q9", ["d" * 300] * 5)),
    ]
    bad_events = [
        ("wrong_type:ordinal", event("click", "q1", "d2", "three")),
        ("missing:object_id", event("click", "q1", "d2", 2, event_attributes={"position": {"ordinal": 2}})),
        ("missing:ordinal", event("love", "q1", "d2", None)),
        ("missing:query_id", event("click", None, "d2", 2)),
        ("missing:action_name", event(None, "q1", "d2", 2)),
        ("missing:session_id_or_client_id", event("click", "q1", "d2", 2, session_id=None, client_id=None)),
        ("bad_timestamp", event("click", "q1", "d2", 2, timestamp="yesterday")),
        ("bad_ordinal", event("click", "q1", "d2", 0)),
        ("bad_ordinal", event("click", "q1", "d2", 2**63)),  # an integer, but beyond BIGINT
        ("too_long:session_id", event("click", "q1", "d2", 2, session_id="s" * 101)),
        ("unknown_query_id", event("click", "nope", "d2", 2)),
        ("object_not_shown", event("click", "q1", "d9", 2)),
        ("position_mismatch", event("click", "q1", "d2", 3)),
    ]

    def encode(record: Any) -> bytes:
        return record if isinstance(record, bytes) else json.dumps(record).encode()

    write_lines(day / "queries.jsonl", [encode(r) for r in queries] + [encode(r) for _, r in bad_queries])
    write_lines(day / "events.jsonl", [encode(r) for r in events] + [encode(r) for _, r in bad_events])
    report, tables = run(tmp_path, [tmp_path / "logs"], max_query_chars=60, max_record_bytes=1000, max_raw_chars=500)

    quarantine = tables["quarantine"]
    found = {(r["record_kind"], r["record_no"]): r["reason"] for r in quarantine.iter_rows(named=True)}
    expected = {("query", len(queries) + i): reason for i, (reason, _) in enumerate(bad_queries, 1)}
    expected |= {("event", len(events) + i): reason for i, (reason, _) in enumerate(bad_events, 1)}
    assert found == expected
    assert (report.quarantine_reasons["bad_timestamp"], report.quarantine_reasons["bad_ordinal"]) == (2, 2)
    assert counts_by_file(report) == {
        "queries.jsonl": (len(queries) + len(bad_queries), len(queries), len(bad_queries), 0),
        "events.jsonl": (len(events) + len(bad_events), len(events), len(bad_events), 0),
    }
    # The good records are untouched by their bad neighbours.
    assert tables["queries"]["user_query"].to_list() == ["text of q1", "text of q2"]
    assert tables["results"]["n_clicks"].sum() == 3

    oversized = quarantine.filter(pl.col("reason") == "record_too_large").row(0, named=True)
    assert oversized["raw_truncated"] and len(oversized["raw"]) == 500
    assert oversized["raw"].startswith('{"query_id": "q9"')
    longer_than_kept = {reason for reason, r in bad_queries + bad_events if len(encode(r)) > 500}
    assert set(quarantine.filter(pl.col("raw_truncated"))["reason"]) == longer_than_kept
    assert "\\xFF" in quarantine.filter(pl.col("reason") == "invalid_utf8")["raw"].item()


def test_redelivered_records_count_as_duplicates_not_quarantine(tmp_path: Path) -> None:
    queries, events = good_day()
    same_query_respelled = {**copy.deepcopy(queries[1]), "timestamp": f"{DAY1}T11:00:00+01:00"}
    truncated = b'{"action_name": "cli'
    write_lines(tmp_path / "logs" / DAY1 / "queries.jsonl",
                [json.dumps(q).encode() for q in [*queries, queries[0], same_query_respelled]])
    write_lines(tmp_path / "logs" / DAY1 / "events.jsonl",
                [json.dumps(e).encode() for e in [*events, events[3]]] + [truncated])
    write_lines(tmp_path / "logs" / DAY2 / "events_late.jsonl",
                [json.dumps(e).encode() for e in events[:2]] + [truncated])

    report, tables = run(tmp_path, [tmp_path / "logs"])

    assert counts_by_file(report) == {
        "queries.jsonl": (4, 2, 0, 2),
        "events.jsonl": (10, 8, 1, 1),
        "events_late.jsonl": (3, 0, 1, 2),  # the truncated line again: bad records are never duplicates
    }
    assert all(f.read == f.accepted + f.quarantined + f.duplicates for f in report.files)
    assert tables["quarantine"].height == 2 and tables["events"].height == len(events)
    metrics = json.loads((tmp_path / "metrics" / "ingest.json").read_text())
    assert metrics["totals"] == {"files": 3, "read": 17, "accepted": 10, "quarantined": 2, "duplicates": 5}
    assert metrics["files"][0] == {"file": str(tmp_path / "logs" / DAY1 / "events.jsonl"), "kind": "event",
                                   "read": 10, "accepted": 8, "quarantined": 1, "duplicates": 1}


def _write_good_day(root: Path, day: str, suffix: str = ".jsonl.gz") -> None:
    queries, events = good_day(day, prefix=f"{day}-q")
    write_records(root / day / f"queries{suffix}", queries)
    write_records(root / day / f"events{suffix}", [*events, event("click", f"{day}-q1", "d7", 1, day=day)])


def test_reingesting_is_idempotent_even_with_a_day_delivered_twice(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    _write_good_day(logs, DAY1)
    _, first = run(tmp_path / "first", [logs])
    _, again = run(tmp_path / "first", [logs])
    copy_root = tmp_path / "copy"
    shutil.copytree(logs / DAY1, copy_root / DAY1)
    report, twice = run(tmp_path / "twice", [logs, copy_root])

    assert first["quarantine"]["reason"].to_list() == ["object_not_shown"]
    for name in TABLES:
        assert_frame_equal(again[name], first[name])
        if name != "quarantine":
            assert_frame_equal(twice[name], first[name])
    # Every copy of a bad record is quarantined; only the good ones are duplicates.
    assert twice["quarantine"]["reason"].to_list() == ["object_not_shown"] * 2
    assert twice["quarantine"]["source_file"].str.starts_with(str(copy_root)).to_list() == [False, True]
    copies = [f for f in report.files if f.file.startswith(str(copy_root))]
    assert [(f.read, f.quarantined, f.duplicates) for f in copies] == [(9, 1, 8), (2, 0, 2)]


def test_a_new_day_only_adds_rows(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    _write_good_day(logs, DAY1)
    _, before = run(tmp_path / "before", [logs])
    _write_good_day(logs, DAY2, suffix=".parquet")
    _, after = run(tmp_path / "after", [logs])

    for name in ("queries", "results", "events", "quarantine"):
        assert after[name].height > before[name].height
        assert after[name].join(before[name], on=before[name].columns, how="inner", nulls_equal=True).height == (
            before[name].height), name
    # Sessions may continue into the new day (q2's session is its client's), but none disappears.
    assert set(before["sessions"]["session_id"]) < set(after["sessions"]["session_id"])
    assert sorted(after["queries"]["day"].cast(pl.String).unique().to_list()) == [DAY1, DAY2]


def test_missing_and_empty_roots_and_unknown_files_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    logs = tmp_path / "logs"
    (logs / DAY1).mkdir(parents=True)
    (logs / DAY1 / "queries.jsonl").write_text("")
    (logs / DAY1 / "events.csv").write_text("a,b\n")
    (logs / "2026-02-30").mkdir()
    (logs / "README.md").write_text("notes")

    with caplog.at_level(logging.WARNING):
        report, tables = run(tmp_path, [tmp_path / "missing", empty, logs])

    assert [(r.exists, r.days, r.files) for r in report.roots] == [(False, 0, 0), (True, 0, 0), (True, 1, 1)]
    # A README documents a log root (feedback_logs/ ships one): expected there, so skipped without a word.
    assert sorted(Path(p).name for p in report.unknown_files) == ["2026-02-30", "events.csv"]
    assert "events.csv" in caplog.text and "README" not in caplog.text
    assert report.totals == {"files": 1, "read": 0, "accepted": 0, "quarantined": 0, "duplicates": 0}
    assert all(t.height == 0 for t in tables.values())
    assert tables["results"].schema["actions"] == pl.List(pl.String)
    assert tables["queries"].schema["timestamp"] == pl.Datetime("us", "UTC")


def test_stage_entry_point_reads_its_params_section(tmp_path: Path) -> None:
    _write_good_day(tmp_path / "feedback_logs", DAY1)
    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  log_roots: [feedback_logs]\n  memory_limit: 256MB\n  temp_directory: spill\n")
    env = {**os.environ, "CLICKLOOP_PARAMS": str(params), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "pipeline.ingest"], cwd=tmp_path, env=env, check=True, capture_output=True)

    metrics = json.loads((tmp_path / "metrics" / "ingest.json").read_text())
    assert metrics["totals"]["read"] == 11 and metrics["quarantine_reasons"] == {"object_not_shown": 1}
    assert pl.read_parquet(tmp_path / "data" / "ingested" / "queries.parquet").height == 2
