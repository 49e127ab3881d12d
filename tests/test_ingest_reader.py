"""Reading log files: line splitting at any chunk size, oversized lines, broken files, Parquet quirks."""

from __future__ import annotations

import gzip
import json
import random
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clickloop.ingest import LineSplitter, iter_gzip_chunks
from tests.test_ingest_stage import DAY1, event, good_day, query, run, write_lines, write_records


def split_all(data: bytes, chunk_size: int, max_record_bytes: int) -> list[tuple[int, bytes, str | None]]:
    splitter = LineSplitter(max_record_bytes)
    batches = []
    for start in range(0, len(data), chunk_size):
        batches += splitter.feed(data[start : start + chunk_size])
    batches += splitter.finish()
    return [(r["record_no"], r["line"], r["load_error"]) for b in batches for r in b.to_pylist()]


@pytest.mark.parametrize("chunk_size", [1, 3, 17, 4096])
def test_splitter_numbers_lines_alike_at_any_chunk_size(chunk_size: int) -> None:
    rng = random.Random(chunk_size)
    lines = [bytes(rng.choice(b"ab{}\r\x01\"") for _ in range(rng.randrange(0, 40))) for _ in range(200)]
    data = b"\n".join(lines)  # no newline after the last line, as in a truncated file

    records = split_all(data, chunk_size, max_record_bytes=1000)

    assert [r[0] for r in records] == list(range(1, len(lines) + 1))
    assert [r[1].removesuffix(b"\n") for r in records] == lines
    assert {r[2] for r in records} == {None}


@pytest.mark.parametrize("chunk_size", [2, 5, 64])
def test_splitter_cuts_oversized_lines_and_keeps_counting(chunk_size: int) -> None:
    data = b"short\n" + b"x" * 50 + b"\nafter\n" + b"y" * 30

    records = split_all(data, chunk_size, max_record_bytes=20)

    assert [(no, error) for no, _, error in records] == [
        (1, None), (2, "record_too_large"), (3, None), (4, "record_too_large")]
    assert records[1][1].startswith(b"x") and len(records[1][1]) <= 20 + chunk_size
    assert records[2][1] == b"after\n"


def test_truncated_gzip_keeps_the_lines_before_the_break(tmp_path: Path) -> None:
    queries, events = good_day()
    path = tmp_path / "logs" / DAY1 / "events.jsonl.gz"
    write_records(path, events * 200)  # varied enough that the cut lands past some whole lines
    whole = gzip.decompress(path.read_bytes()).count(b"\n")
    path.write_bytes(path.read_bytes()[:-200])
    write_records(tmp_path / "logs" / DAY1 / "queries.jsonl", queries)

    lines_before = zlib.decompressobj(wbits=31).decompress(path.read_bytes()).count(b"\n")
    report, tables = run(tmp_path, [tmp_path / "logs"])

    counts = {Path(f.file).name: f for f in report.files}["events.jsonl.gz"]
    assert 0 < lines_before < whole
    assert (counts.read, counts.quarantined) == (lines_before + 1, 1)
    assert counts.read == counts.accepted + counts.quarantined + counts.duplicates
    broken = tables["quarantine"].row(0, named=True)
    assert (broken["reason"], broken["record_no"]) == ("unreadable_file", lines_before + 1)
    assert "EOFError" in broken["raw"]


def test_gzip_members_are_read_one_after_another(tmp_path: Path) -> None:
    path = tmp_path / "two_members.gz"
    path.write_bytes(gzip.compress(b"a\nb\n") + gzip.compress(b"c\n" * 1000))

    assert b"".join(iter_gzip_chunks(path, chunk_bytes=7)) == b"a\nb\n" + b"c\n" * 1000


def test_corrupt_parquet_is_one_quarantined_record(tmp_path: Path) -> None:
    queries, _ = good_day()
    write_records(tmp_path / "logs" / DAY1 / "queries.jsonl", queries)
    (tmp_path / "logs" / DAY1 / "events.parquet").write_bytes(b"PAR1 not really parquet")

    report, tables = run(tmp_path, [tmp_path / "logs"])

    assert report.quarantine_reasons == {"unreadable_file": 1}
    assert tables["quarantine"]["source_file"].item().endswith("events.parquet")
    assert tables["queries"].height == len(queries)


def test_parquet_rows_meet_the_same_rules_as_json_lines(tmp_path: Path) -> None:
    queries, _ = good_day()
    # Written as JSON text, like the attributes of the good queries, but not an object.
    not_attributes = query("q7", ["d1"], query_attributes="mobile")
    write_records(tmp_path / "logs" / DAY1 / "queries.parquet", [*queries, not_attributes])
    # Ordinals stored as text: a type error, whatever the file format.
    rows = [event("click", "q1", "d2", "2"), event("click", "q1", "d2", "three"), event("click", "q1", "d2", 2)]
    for row in rows:
        row["event_attributes"]["position"]["ordinal"] = str(row["event_attributes"]["position"]["ordinal"])
    rows[2] = event("click", "q1", "d2", 2, second=9)
    table = pa.Table.from_pylist(rows[:2])
    pq.write_table(table, tmp_path / "logs" / DAY1 / "events.parquet")
    write_records(tmp_path / "logs" / DAY1 / "events_ok.parquet", [rows[2]])

    report, tables = run(tmp_path, [tmp_path / "logs"])

    quarantine = tables["quarantine"].sort("record_kind", "record_no")
    assert quarantine.select("record_kind", "record_no", "reason").rows() == [
        ("event", 1, "wrong_type:ordinal"), ("event", 2, "wrong_type:ordinal"),
        ("query", 3, "wrong_type:query_attributes")]
    assert json.loads(quarantine["raw"][0])["event_attributes"]["position"]["ordinal"] == "2"
    assert tables["events"]["position"].to_list() == [2]
    assert report.totals["accepted"] == len(queries) + 1


def test_windows_line_endings_are_accepted(tmp_path: Path) -> None:
    lines = [json.dumps(query("q1", ["d1"])).encode() + b"\r", json.dumps(event("click", "q1", "d1", 1)).encode()]
    write_lines(tmp_path / "logs" / DAY1 / "queries.jsonl", lines[:1])
    write_lines(tmp_path / "logs" / DAY1 / "events.jsonl", [lines[1] + b"\r"])

    report, tables = run(tmp_path, [tmp_path / "logs"])

    assert report.totals["accepted"] == 2
    assert tables["results"]["clicked"].to_list() == [True]
