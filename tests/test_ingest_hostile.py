"""Hostile log input: every bad record goes to the quarantine with its reason, the rest is ingested.

Each test here once crashed the stage, lost records or accepted bad ones.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clickloop.ingest import IngestConfig
from tests.hostile_logs import GOOD, expected_counts, hostile_lines
from tests.test_ingest_stage import DAY1, DAY2, counts_by_file, event, good_day, query, run, write_lines, write_records


def reasons_by_line(tables: dict[str, pl.DataFrame]) -> dict[tuple[str, str, int], str]:
    """(file name, record kind, record number) -> reason, for every quarantined record."""
    quarantine = tables["quarantine"]
    return {(Path(r["source_file"]).name, r["record_kind"], r["record_no"]): r["reason"]
            for r in quarantine.iter_rows(named=True)}


def test_ranks_and_ordinals_beyond_32_bits_are_quarantined_not_a_crash(tmp_path: Path) -> None:
    queries, events = good_day()
    huge_rank = query("q9", ["d1", "d2", "d3"])
    huge_rank["query_attributes"]["logging_ranks"] = [3_000_000_000, 2, 3]
    # No object id: the position alone would have become the event's INTEGER position.
    huge_ordinal = event("add_to_cart", "q1", "d2", 3_000_000_000,
                         event_attributes={"position": {"ordinal": 3_000_000_000}})
    write_records(tmp_path / "logs" / DAY1 / "queries.jsonl", [*queries, huge_rank])
    write_records(tmp_path / "logs" / DAY1 / "events.jsonl", [*events, huge_ordinal])

    report, tables = run(tmp_path, [tmp_path / "logs"])

    assert reasons_by_line(tables) == {
        ("queries.jsonl", "query", 3): "bad_logging_ranks", ("events.jsonl", "event", 9): "bad_ordinal"}
    assert report.totals["accepted"] == len(queries) + len(events)
    assert tables["results"].height == 5


def test_timestamps_outside_the_plausible_window_are_quarantined(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    soon, later = (f"{(now + dt.timedelta(hours=h)):%Y-%m-%dT%H:%M:%S}Z" for h in (1, 72))
    queries, events = good_day()
    odd_times = ["0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                 "1999-12-31T23:59:59Z", later]
    odd_queries = [query(f"odd{i}", ["d1"], timestamp=ts) for i, ts in enumerate(odd_times)]
    write_records(tmp_path / "logs" / DAY1 / "queries.jsonl",
                  [*queries, *odd_queries, query("q-soon", ["d1"], timestamp=soon)])
    write_records(tmp_path / "logs" / DAY1 / "events.jsonl",
                  [*events, event("click", "q1", "d2", 2, timestamp="9999-01-01T00:00:00+01:00")])

    report, tables = run(tmp_path, [tmp_path / "logs"])

    assert report.quarantine_reasons == {"timestamp_out_of_range": len(odd_times) + 1}
    assert "q-soon" in tables["queries"]["query_id"].to_list()  # a clock a little ahead is fine
    assert tables["queries"]["day"].max() <= (now + dt.timedelta(days=1)).date()  # no day in year 9999
    # The bounds are settings.
    _, early = run(tmp_path / "early", [tmp_path / "logs"], earliest_timestamp="1990-01-01", max_future_hours=100)
    assert early["quarantine"]["reason"].to_list() == ["timestamp_out_of_range"] * 4


@pytest.mark.parametrize(("setting", "value"), [("earliest_timestamp", "last year"), ("max_future_hours", -1),
                                                 ("earliest_timestamp", "2999-01-01")])
def test_timestamp_window_settings_are_checked(setting: str, value: object) -> None:
    with pytest.raises(ValueError, match=setting):
        IngestConfig(**{setting: value})


def test_file_names_are_paths_not_glob_patterns(tmp_path: Path) -> None:
    day = tmp_path / "logs" / DAY1
    queries, events = good_day()
    write_records(day / "queries_a*.parquet", queries[:1])
    write_records(day / "queries_ab.parquet", queries[1:])
    write_records(day / "events_[1].parquet", events)  # as a pattern, it would match only `events_1.parquet`
    write_records(day / "events_1.parquet", [event("click", "q1", "d3", 3, second=9)])

    report, _ = run(tmp_path, [tmp_path / "logs"])

    assert counts_by_file(report) == {
        "events_1.parquet": (1, 1, 0, 0), "events_[1].parquet": (len(events), len(events), 0, 0),
        "queries_a*.parquet": (1, 1, 0, 0), "queries_ab.parquet": (1, 1, 0, 0)}


def test_symbolic_links_are_not_followed_but_reported(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root:password\n")
    queries, events = good_day()
    logs = tmp_path / "logs"
    write_records(logs / DAY1 / "queries.jsonl", queries)
    write_records(logs / DAY1 / "events.jsonl", events)
    (logs / DAY1 / "queries_secret.jsonl").symlink_to(secret)
    write_records(tmp_path / "elsewhere" / "events.jsonl", events)
    (logs / DAY2).symlink_to(tmp_path / "elsewhere")

    report, tables = run(tmp_path, [logs])

    assert tables["quarantine"].height == 0
    assert report.totals == {"files": 2, "read": 10, "accepted": 10, "quarantined": 0, "duplicates": 0}
    links = [str(logs / DAY1 / "queries_secret.jsonl"), str(logs / DAY2)]
    assert sorted(report.skipped_links) == sorted(links)
    assert sorted(json.loads((tmp_path / "metrics" / "ingest.json").read_text())["skipped_links"]) == sorted(links)


def test_every_copy_of_a_bad_record_is_quarantined(tmp_path: Path) -> None:
    queries, events = good_day()
    truncated = b'{"query_id": "q9", "cli'
    blank = json.dumps(query("", ["d1"])).encode()
    second_version = json.dumps(query("q1", ["d9"])).encode()
    not_shown = json.dumps(event("click", "q1", "d9", 1)).encode()
    write_lines(tmp_path / "logs" / DAY1 / "queries.jsonl",
                [json.dumps(q).encode() for q in queries] + [truncated, truncated, blank, blank, second_version])
    write_lines(tmp_path / "logs" / DAY2 / "queries.jsonl", [truncated, second_version])
    write_lines(tmp_path / "logs" / DAY1 / "events.jsonl", [json.dumps(e).encode() for e in events] + [not_shown] * 2)

    report, tables = run(tmp_path, [tmp_path / "logs"])

    assert report.quarantine_reasons == {
        "malformed_json": 3, "blank:query_id": 2, "conflicting_query_id": 2, "object_not_shown": 2}
    assert report.totals["duplicates"] == 0 and tables["quarantine"].height == 9


def test_blank_ids_are_quarantined(tmp_path: Path) -> None:
    queries, events = good_day()
    bad_queries = [
        ("blank:query_id", query("", ["d1"])),
        ("blank:query_id", query("\u200b", ["d1"])),
        ("blank:client_id", query("q8", ["d1"], client_id="  ")),
        ("blank:session_id", query("q9", ["d1"], query_attributes={"session_id": "\t"})),
    ]
    bad_events = [
        ("blank:client_id", event("click", "q1", "d2", 2, client_id="")),
        ("blank:session_id", event("click", "q1", "d2", 2, session_id=" \u00a0")),
        ("blank:query_id", event("add_to_cart", "", "d2", 2)),
        ("blank:action_name", event("", "q1", "d2", 2)),
    ]
    write_records(tmp_path / "logs" / DAY1 / "queries.jsonl", [*queries, *(r for _, r in bad_queries)])
    write_records(tmp_path / "logs" / DAY1 / "events.jsonl", [*events, *(r for _, r in bad_events)])

    report, tables = run(tmp_path, [tmp_path / "logs"])

    expected = {("queries.jsonl", "query", len(queries) + i): reason for i, (reason, _) in enumerate(bad_queries, 1)}
    expected |= {("events.jsonl", "event", len(events) + i): reason for i, (reason, _) in enumerate(bad_events, 1)}
    assert reasons_by_line(tables) == expected
    assert report.totals["accepted"] == len(queries) + len(events)


def test_parquet_columns_named_like_internal_ones_are_ordinary_columns(tmp_path: Path) -> None:
    queries, events = good_day()
    write_records(tmp_path / "logs" / DAY1 / "queries.jsonl", queries)
    rows = [{**e, "file_row_number": 7, "record_no": "x", "parquet_row": None} for e in events]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "logs" / DAY1 / "events.parquet")

    report, tables = run(tmp_path, [tmp_path / "logs"])

    assert counts_by_file(report)["events.parquet"] == (len(events), len(events), 0, 0)
    assert tables["events"].height == len(events)


# --------------------------------------------------------------------------- a generated hostile day


def test_a_generated_hostile_day_is_ingested_without_loss_or_bad_records(tmp_path: Path) -> None:
    rng = random.Random(20260301)
    files = hostile_lines(rng, n_queries=400)
    day = tmp_path / "logs" / DAY1
    for name, lines in files.items():
        text = b"".join(line + b"\n" for line, _ in lines)
        day.mkdir(parents=True, exist_ok=True)
        (day / name).write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    good = {line for lines in files.values() for line, kind in lines if kind == GOOD}

    report, tables = run(tmp_path, [tmp_path / "logs"], max_query_chars=200, max_record_bytes=4000)

    assert report.totals["read"] == sum(len(lines) for lines in files.values()) > 5000
    assert all(f.read == f.accepted + f.quarantined + f.duplicates for f in report.files)
    assert counts_by_file(report) == expected_counts(files)
    good_queries = {json.loads(line)["query_id"] for line in good if b'"user_query"' in line}
    assert set(tables["queries"]["query_id"]) == good_queries
    assert tables["events"].height == sum(1 for line in good if b'"action_name"' in line)
    assert tables["quarantine"]["reason"].null_count() == 0
    assert len(report.quarantine_reasons) > 40
