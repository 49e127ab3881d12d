"""Ingest: UBI 1.3 logs (one folder a day) into validated, deduplicated Parquet tables.

Every record read ends in exactly one of three places, so `read = accepted + quarantined +
duplicates` holds per file:

- quarantined: it breaks a rule of `clickloop.ubi` (malformed, wrong type, missing or blank
  id, too long, bad or implausible timestamp), or it contradicts the accepted data (a second
  version of a query id, an event on an unknown query, on an object the query did not show, at
  another position); every copy of a bad record is quarantined;
- duplicate: an exact re-delivery (same content, in the same or another file or day) of an
  accepted record seen earlier in reading order (roots as configured, then days, then file names);
- accepted: everything else.

Files are found without following symbolic links (a link in a log folder could point anywhere
on the machine); links are skipped and reported, like the entries that are not log files.

The work happens in DuckDB under a memory limit with a spill directory, so logs larger than
RAM pass. JSON lines are split into records by a streaming byte splitter (DuckDB's CSV reader
rejects or re-splits hostile lines, e.g. with stray control characters or CR, which would
lose them or their line numbers); Parquet rows, read batch by batch with pyarrow, are turned
into the same JSON text by DuckDB, so one rule set in SQL judges both formats.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clickloop import ubi
from clickloop.atomic import atomic_path, write_json

log = logging.getLogger(__name__)

JSONL_FORMATS = (".jsonl.gz", ".jsonl")
LOG_FORMATS = (*JSONL_FORMATS, ".parquet")
KIND_BY_PREFIX = {"queries": ubi.QUERY_KIND, "events": ubi.EVENT_KIND}
KINDS = (ubi.QUERY_KIND, ubi.EVENT_KIND)
TABLES = ("queries", "results", "events", "sessions", "quarantine")
DAY_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
STATUSES = ("accepted", "quarantined", "duplicates")
# Parquet rows per batch handed to DuckDB (DuckDB's own reader works in vectors of 2048 rows).
PARQUET_BATCH_ROWS = 4096


@dataclass
class IngestConfig:
    """params.yaml section `ingest`."""

    log_roots: list[str] = field(default_factory=lambda: ["data/simulated_logs", "feedback_logs"])
    out_dir: str = "data/ingested"
    metrics_file: str = "metrics/ingest.json"
    # DuckDB spills to temp_directory beyond memory_limit; both bound the stage's footprint.
    memory_limit: str = "4GB"
    temp_directory: str = "data/tmp/ingest_spill"
    threads: int = 2
    # The UBI schema leaves user_query unbounded; a cap keeps hostile payloads out of the tables.
    max_query_chars: int = 10_000
    # A JSON line longer than this is quarantined unread (bounds the memory one record can take).
    max_record_bytes: int = 1_000_000
    # Quarantined records keep at most this many characters of their text (docs/contracts.md).
    max_raw_chars: int = 10_000
    # Bytes of a JSON-lines file read (after decompression) per batch handed to DuckDB.
    read_chunk_bytes: int = 16 * 2**20
    # Timestamps before this instant (ISO 8601; UTC when no zone) or more than `max_future_hours`
    # after the start of the run are quarantined: clock errors such as year 0 or 9999 would
    # otherwise break date arithmetic downstream or become the newest ("held-out") day.
    earliest_timestamp: str = "2000-01-01T00:00:00Z"
    max_future_hours: float = 24.0

    def __post_init__(self) -> None:
        for name in ("threads", "max_query_chars", "max_record_bytes", "max_raw_chars", "read_chunk_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ingest.{name} must be >= 1, got {getattr(self, name)}")
        if self.max_future_hours < 0:
            raise ValueError(f"ingest.max_future_hours must be >= 0, got {self.max_future_hours}")
        self.timestamp_window(dt.datetime.now(dt.UTC))  # a bad earliest_timestamp fails here, early

    def timestamp_window(self, now: dt.datetime) -> ubi.TimeWindow:
        """The plausible timestamps for a run started at `now`."""
        try:
            earliest = dt.datetime.fromisoformat(self.earliest_timestamp)
        except ValueError as error:
            raise ValueError(f"ingest.earliest_timestamp: {error}") from None
        if earliest.tzinfo is None:
            earliest = earliest.replace(tzinfo=dt.UTC)
        latest = now + dt.timedelta(hours=self.max_future_hours)
        if earliest >= latest:
            raise ValueError(f"ingest.earliest_timestamp {self.earliest_timestamp} is not before {latest.isoformat()}")
        return ubi.TimeWindow(earliest, latest)


@dataclass(frozen=True)
class LogFile:
    """A log file found in a day folder: its path, record kind and format (a LOG_FORMATS suffix)."""

    path: Path
    kind: str
    format: str


@dataclass(frozen=True)
class RootSummary:
    root: str
    exists: bool
    days: int
    files: int


@dataclass(frozen=True)
class FileCounts:
    file: str
    kind: str
    read: int
    accepted: int
    quarantined: int
    duplicates: int


@dataclass
class IngestReport:
    """What one ingest read and wrote (the content of metrics/ingest.json)."""

    files: list[FileCounts]
    quarantine_reasons: dict[str, int]
    table_rows: dict[str, int]
    roots: list[RootSummary]
    unknown_files: list[str]
    skipped_links: list[str]

    @property
    def totals(self) -> dict[str, int]:
        totals = {"files": len(self.files)}
        for name in ("read", *STATUSES):
            totals[name] = sum(getattr(f, name) for f in self.files)
        return totals

    def to_json(self) -> dict[str, Any]:
        return {
            "totals": self.totals,
            "files": [dataclasses.asdict(f) for f in self.files],
            "quarantine_reasons": self.quarantine_reasons,
            "tables": self.table_rows,
            "roots": [dataclasses.asdict(r) for r in self.roots],
            "unknown_files": self.unknown_files,
            "skipped_links": self.skipped_links,
        }


@dataclass
class Discovery:
    """What the log roots hold: log files in reading order, a summary per root, the entries
    that are not log files, and the symbolic links (never followed)."""

    files: list[LogFile] = field(default_factory=list)
    roots: list[RootSummary] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


def discover(log_roots: list[str]) -> Discovery:
    """The log files of every root, in reading order. The roots themselves may be links (they are
    configured); the entries inside them are not followed."""
    found = Discovery()
    for root in log_roots:
        root_path = Path(root)
        if not root_path.is_dir():
            found.roots.append(RootSummary(root, exists=False, days=0, files=0))
            continue
        n_days, n_files = 0, len(found.files)
        for entry in _entries(root_path, found):
            if _is_readme(entry):
                continue
            if not (entry.is_dir() and _is_day(entry.name)):
                found.unknown.append(str(entry))
                continue
            n_days += 1
            for path in _entries(entry, found):
                log_file = _classify(path)
                if log_file is None:
                    found.unknown.append(str(path))
                else:
                    found.files.append(log_file)
        found.roots.append(RootSummary(root, exists=True, days=n_days, files=len(found.files) - n_files))
    return found


def _entries(folder: Path, found: Discovery) -> list[Path]:
    """The entries of `folder` in name order, less its symbolic links, which go to `found.links`."""
    entries = []
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            found.links.append(str(entry))
        else:
            entries.append(entry)
    return entries


def _is_readme(entry: Path) -> bool:
    """A README file beside the day folders documents the log root (feedback_logs/ ships one): it is
    expected there, so it is skipped without being reported as an unknown file."""
    return entry.is_file() and entry.name.lower().startswith("readme")


def _is_day(name: str) -> bool:
    if not DAY_FOLDER.match(name):
        return False
    try:
        dt.date.fromisoformat(name)
    except ValueError:
        return False
    return True


def _classify(path: Path) -> LogFile | None:
    if not path.is_file():
        return None
    fmt = next((suffix for suffix in LOG_FORMATS if path.name.endswith(suffix)), None)
    kind = next((k for prefix, k in KIND_BY_PREFIX.items() if path.name.startswith(prefix)), None)
    if fmt is None or kind is None:
        return None
    return LogFile(path, kind, fmt)


# --------------------------------------------------------------------------- reading

_BATCH_SCHEMA = pa.schema([("record_no", pa.int64()), ("line", pa.large_binary()), ("load_error", pa.string())])


class LineSplitter:
    """Splits a byte stream into numbered lines, in Arrow batches, with bounded memory.

    A line longer than `max_record_bytes` is not kept whole: its first bytes are emitted with
    the load error `record_too_large`. Lines keep their line terminator (stripped in SQL),
    because Arrow's binary layout cannot skip bytes between values.
    """

    def __init__(self, max_record_bytes: int, first_record_no: int = 1) -> None:
        self.max_record_bytes = max_record_bytes
        self.next_record_no = first_record_no
        self._partial = b""  # the unfinished last line of the data fed so far
        self._oversized_head: bytes | None = None  # set while skipping the rest of a too-long line

    def feed(self, chunk: bytes) -> list[pa.Table]:
        batches = []
        if self._oversized_head is not None:
            newline = chunk.find(b"\n")
            if newline < 0:
                return batches
            batches.append(self._single(self._oversized_head, "record_too_large"))
            self._oversized_head = None
            chunk = chunk[newline + 1 :]
        data = self._partial + chunk
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A)
        if len(ends):
            batches.append(self._lines(data, ends))
            self._partial = data[ends[-1] + 1 :]
        else:
            self._partial = data
        if len(self._partial) > self.max_record_bytes:
            self._oversized_head, self._partial = self._partial[: self.max_record_bytes], b""
        return batches

    def finish(self) -> list[pa.Table]:
        """The last line when the data does not end with a newline (e.g. a truncated file)."""
        if self._oversized_head is not None:
            head, self._oversized_head = self._oversized_head, None
            return [self._single(head, "record_too_large")]
        if self._partial:
            partial, self._partial = self._partial, b""
            return [self._single(partial, None)]
        return []

    def failure(self, message: str) -> pa.Table:
        """A record standing for the rest of a file that could not be read."""
        self._partial, self._oversized_head = b"", None
        return self._single(message.encode(), "unreadable_file")

    def _lines(self, data: bytes, ends: np.ndarray) -> pa.Table:
        offsets = np.concatenate([[0], ends + 1]).astype(np.int64)
        lines = pa.Array.from_buffers(pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
        too_long = (np.diff(offsets) - 1) > self.max_record_bytes
        load_error = pa.array(np.where(too_long, "record_too_large", None), pa.string())
        return self._table(lines, load_error)

    def _single(self, line: bytes, load_error: str | None) -> pa.Table:
        return self._table(pa.array([line], pa.large_binary()), pa.array([load_error], pa.string()))

    def _table(self, lines: pa.Array, load_error: pa.Array) -> pa.Table:
        record_no = pa.array(np.arange(self.next_record_no, self.next_record_no + len(lines), dtype=np.int64))
        self.next_record_no += len(lines)
        return pa.Table.from_arrays([record_no, lines, load_error], schema=_BATCH_SCHEMA)


def iter_gzip_chunks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    """The decompressed bytes of a (multi-member) gzip file, at most `chunk_bytes` at a time.

    Unlike `gzip.open(...).read(n)`, which drops what it decompressed when the stream breaks
    off, this hands out every byte before the break, then raises.
    """
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    with open(path, "rb") as stream:
        pending = b""
        while True:
            if not pending and not (pending := stream.read(chunk_bytes)):
                break
            if decompressor.eof:  # a new gzip member follows the finished one
                decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            if chunk := decompressor.decompress(pending, chunk_bytes):
                yield chunk
            pending = decompressor.unconsumed_tail or decompressor.unused_data
    if not decompressor.eof:
        raise EOFError("compressed file ended before the end-of-stream marker was reached")


def _iter_plain_chunks(path: Path, chunk_bytes: int) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_bytes):
            yield chunk


def iter_jsonl_batches(path: Path, chunk_bytes: int, max_record_bytes: int) -> Iterator[pa.Table]:
    """Numbered lines of a JSON-lines file (gzipped when it ends in .gz), batch by batch.

    A file that breaks off (corrupt or truncated gzip, I/O error) yields the lines before the
    break and then one `unreadable_file` record with the error.
    """
    splitter = LineSplitter(max_record_bytes)
    chunks = iter_gzip_chunks if path.name.endswith(".gz") else _iter_plain_chunks
    try:
        for chunk in chunks(path, chunk_bytes):
            yield from splitter.feed(chunk)
        yield from splitter.finish()
    except (OSError, EOFError, zlib.error) as error:
        yield splitter.failure(f"{type(error).__name__}: {error}")


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _parquet_member(name: str, column_type: str) -> str:
    """SQL for one column of a Parquet row (the struct `parquet_row`) as it joins the JSON record."""
    column = f"struct_extract(parquet_row, {_sql_string(name)})"
    if name in ubi.JSON_TEXT_COLUMNS and column_type == "VARCHAR":
        # Free-form fields stored as JSON text rejoin the record as JSON, not as a string.
        # (Nested CASE: DuckDB may evaluate both sides of an AND, and json_type fails on non-JSON.)
        text_type = f"CASE WHEN json_valid({column}) THEN json_type({column}) END"
        return f"CASE WHEN ({text_type}) IN ('OBJECT', 'ARRAY') THEN json({column}) ELSE to_json({column}) END"
    return column


# A record's status from its quarantine reason (NULL when valid) and copy number (1 for the first).
_STATUS_SQL = "CASE WHEN reason IS NOT NULL THEN 'quarantined' WHEN copy_no > 1 THEN 'duplicates' ELSE 'accepted' END"


class _Ingestion:
    """One ingest run on its own DuckDB connection (tables are named after record kinds)."""

    def __init__(self, config: IngestConfig, con: duckdb.DuckDBPyConnection) -> None:
        self.config = config
        self.con = con
        window = config.timestamp_window(dt.datetime.now(dt.UTC))
        self.rules = {
            ubi.QUERY_KIND: ubi.query_rules(config.max_query_chars, window),
            ubi.EVENT_KIND: ubi.event_rules(window),
        }

    # ---- loading: every record of every file lands in raw_<kind> as text

    def load(self, files: list[LogFile]) -> None:
        self.con.execute("CREATE TABLE files (file_id INTEGER, source_file VARCHAR, kind VARCHAR)")
        for kind in KINDS:
            self.con.execute(
                f"CREATE TABLE raw_{kind} (file_id INTEGER, record_no BIGINT, raw VARCHAR, load_error VARCHAR)"
            )
        for file_id, log_file in enumerate(files):
            self.con.execute("INSERT INTO files VALUES (?, ?, ?)", [file_id, str(log_file.path), log_file.kind])
            log.info("reading %s", log_file.path)
            if log_file.format == ".parquet":
                self._load_parquet(file_id, log_file)
            else:
                batches = iter_jsonl_batches(log_file.path, self.config.read_chunk_bytes, self.config.max_record_bytes)
                for batch in batches:
                    self._insert_lines(file_id, log_file.kind, batch)

    def _insert_lines(self, file_id: int, kind: str, batch: pa.Table) -> None:
        cap = self.config.max_raw_chars + 1  # one more than kept, so the quarantine can tell it was cut
        self.con.register("line_batch", batch)
        self.con.execute(
            f"""
            INSERT INTO raw_{kind}
            SELECT {file_id}, record_no,
                   CASE WHEN error IS NULL THEN text ELSE left(coalesce(text, line::VARCHAR), {cap}) END,
                   error
            FROM (
                SELECT record_no, line, rtrim(text, chr(13) || chr(10)) AS text,
                       coalesce(load_error, CASE WHEN text IS NULL THEN 'invalid_utf8' END) AS error
                FROM (SELECT *, try(decode(line)) AS text FROM line_batch)
            )
            """
        )
        self.con.unregister("line_batch")

    def _load_parquet(self, file_id: int, log_file: LogFile) -> None:
        # pyarrow opens the exact path: DuckDB's read_parquet would take glob characters in a file
        # name (`queries_a*.parquet`) as a pattern and read its neighbours too.
        rows_read = 0
        try:
            with pq.ParquetFile(log_file.path) as parquet:
                for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                    self._insert_rows(file_id, log_file.kind, rows_read + 1, batch)
                    rows_read += batch.num_rows
        except (OSError, ValueError, pa.ArrowException, duckdb.Error) as error:
            # The rows before the break stay; one record stands for the rest of the file.
            splitter = LineSplitter(self.config.max_record_bytes, first_record_no=rows_read + 1)
            self._insert_lines(file_id, log_file.kind, splitter.failure(f"{type(error).__name__}: {error}"))

    def _insert_rows(self, file_id: int, kind: str, first_record_no: int, batch: pa.RecordBatch) -> None:
        """Parquet rows as JSON text, numbered from `first_record_no`.

        Each row travels as one struct column, so no column name in the file (say `record_no`)
        can collide with the names this query adds.
        """
        rows = pa.StructArray.from_arrays(batch.columns, fields=list(batch.schema))
        record_no = pa.array(np.arange(first_record_no, first_record_no + batch.num_rows, dtype=np.int64))
        self.con.register("row_batch", pa.Table.from_arrays([record_no, rows], names=["record_no", "parquet_row"]))
        try:
            columns = self.con.execute("DESCRIBE SELECT unnest(parquet_row) FROM row_batch").fetchall()
            members = ", ".join(
                f"{_sql_identifier(name)} := {_parquet_member(name, column_type)}" for name, column_type, *_ in columns
            )
            self.con.execute(
                f"INSERT INTO raw_{kind} SELECT {file_id}, record_no, to_json(struct_pack({members}))::VARCHAR, NULL"
                " FROM row_batch"
            )
        finally:
            self.con.unregister("row_batch")

    # ---- checking: per-record rules, then deduplication, then rules across records

    def check(self) -> None:
        for kind in KINDS:
            rules = self.rules[kind]
            kept = ", ".join(rule.column for rule in rules.fields)
            self.con.execute(
                f"""
                CREATE TABLE checked_{kind} AS
                SELECT file_id, record_no, {kept}, reason,
                       -- Only valid records can be re-deliveries: every copy of a bad one is quarantined.
                       CASE WHEN reason IS NULL THEN {ubi.content_key_sql(rules)} END AS content_key,
                       CASE WHEN reason IS NULL
                            THEN row_number() OVER (PARTITION BY content_key ORDER BY file_id, record_no) END AS copy_no
                FROM (
                    SELECT *, {ubi.reason_sql(rules)} AS reason
                    FROM (
                        SELECT *, {ubi.extract_sql(rules)}
                        FROM (SELECT file_id, record_no, raw, load_error, {ubi.parse_sql(rules)} FROM raw_{kind})
                    )
                )
                """
            )
        self._settle_queries()
        self._settle_events()

    def _settle_queries(self) -> None:
        # The first version of a query id (in reading order) stands; a different one conflicts,
        # however often it comes.
        self.con.execute(
            f"""
            CREATE TABLE status_query AS
            SELECT file_id, record_no, query_id, reason, {_STATUS_SQL} AS status
            FROM (
                SELECT file_id, record_no, query_id, copy_no,
                       CASE WHEN reason IS NULL AND content_key <> first_version
                            THEN 'conflicting_query_id' ELSE reason END AS reason
                FROM (
                    SELECT *, first_value(content_key) OVER (
                        PARTITION BY query_id, reason IS NULL ORDER BY file_id, record_no
                    ) AS first_version
                    FROM checked_query
                )
            )
            """
        )
        self.con.execute(
            """
            CREATE TABLE accepted_query AS
            SELECT c.query_id, c.client_id, coalesce(c.session_id, c.client_id) AS session_id, c.user_id,
                   c.user_query, try_cast(c.timestamp AS TIMESTAMPTZ) AS ts, c.ranker, c.device,
                   coalesce(c.exploration_scheme, 'none') AS exploration,
                   coalesce(c.query_response_hit_ids::VARCHAR[], []::VARCHAR[]) AS hit_ids,
                   c.logging_ranks::BIGINT[] AS logging_ranks,
                   c.display_propensities::DOUBLE[] AS display_propensities,
                   coalesce(c.query_attributes, '{}')::VARCHAR AS query_attributes
            FROM checked_query c JOIN status_query s USING (file_id, record_no)
            WHERE s.status = 'accepted'
            """
        )

    def _settle_events(self) -> None:
        # An event that names a query must agree with what that query showed. Copies of one event
        # agree or disagree alike, so a copy is a duplicate only of an accepted event.
        self.con.execute(
            f"""
            CREATE TABLE status_event AS
            SELECT *, {_STATUS_SQL} AS status
            FROM (
                SELECT e.file_id, e.record_no, e.copy_no, e.action_name, e.query_id,
                       coalesce(e.session_id, q.session_id, e.client_id) AS session_id,
                       coalesce(e.client_id, q.client_id) AS client_id, coalesce(e.user_id, q.user_id) AS user_id,
                       coalesce(e.object_id, q.hit_ids[e.ordinal]) AS doc_id,
                       coalesce(e.ordinal, list_position(q.hit_ids, e.object_id)) AS position,
                       try_cast(e.timestamp AS TIMESTAMPTZ) AS ts,
                       CASE
                           WHEN e.reason IS NOT NULL THEN e.reason
                           WHEN e.query_id IS NOT NULL AND q.query_id IS NULL THEN 'unknown_query_id'
                           WHEN e.object_id IS NOT NULL AND q.query_id IS NOT NULL
                                AND list_position(q.hit_ids, e.object_id) IS NULL THEN 'object_not_shown'
                           WHEN e.object_id IS NOT NULL AND e.ordinal IS NOT NULL AND q.query_id IS NOT NULL
                                AND q.hit_ids[e.ordinal] IS DISTINCT FROM e.object_id THEN 'position_mismatch'
                       END AS reason
                FROM checked_event e
                LEFT JOIN accepted_query q ON e.query_id = q.query_id AND e.reason IS NULL
            )
            """
        )

    # ---- writing

    def write_tables(self, out_dir: Path) -> dict[str, int]:
        out_dir.mkdir(parents=True)
        rows = {}
        for table, select in self._table_queries().items():
            target = out_dir / f"{table}.parquet"
            # COPY answers with the number of rows it wrote.
            copy = f"COPY ({select}) TO {_sql_string(str(target))} (FORMAT parquet)"
            rows[table] = self.con.execute(copy).fetchone()[0]
        return rows

    def _table_queries(self) -> dict[str, str]:
        max_raw = self.config.max_raw_chars
        actions = {name: f"'{name}'" for name in ubi.RESULT_ACTIONS}
        accepted_events = "SELECT * FROM status_event WHERE status = 'accepted'"
        quarantined = " UNION ALL ".join(
            f"SELECT s.file_id, s.record_no, '{kind}' AS record_kind, s.reason, r.raw"
            f" FROM status_{kind} s JOIN raw_{kind} r USING (file_id, record_no) WHERE s.status = 'quarantined'"
            for kind in KINDS
        )
        return {
            "queries": """
                SELECT query_id, client_id, session_id, user_id, user_query, ts AS timestamp, ts::DATE AS day,
                       ranker, device, exploration, len(hit_ids)::INTEGER AS n_shown, query_attributes
                FROM accepted_query ORDER BY query_id
            """,
            "results": f"""
                WITH shown AS (
                    SELECT *, unnest(hit_ids) AS doc_id, unnest(range(1, len(hit_ids) + 1)) AS position
                    FROM accepted_query
                ), feedback AS (
                    SELECT query_id, position,
                           bool_or(action_name = {actions["impression"]}) AS impressed,
                           bool_or(action_name = {actions["click"]}) AS clicked,
                           bool_or(action_name = {actions["love"]}) AS loved,
                           count(*) FILTER (WHERE action_name = {actions["click"]}) AS n_clicks,
                           list_sort(list(DISTINCT action_name)) AS actions
                    FROM ({accepted_events}) WHERE query_id IS NOT NULL AND position IS NOT NULL
                    GROUP BY query_id, position
                )
                SELECT s.query_id, s.session_id, s.client_id, s.user_id, s.ts::DATE AS day, s.user_query, s.doc_id,
                       s.position::INTEGER AS position,
                       coalesce(s.logging_ranks[s.position], s.position)::INTEGER AS logging_rank,
                       coalesce(s.display_propensities[s.position], 1.0)::DOUBLE AS display_propensity,
                       s.device, s.exploration,
                       coalesce(f.impressed, false) AS impressed, coalesce(f.clicked, false) AS clicked,
                       coalesce(f.loved, false) AS loved, coalesce(f.n_clicks, 0)::INTEGER AS n_clicks,
                       coalesce(f.actions, []::VARCHAR[]) AS actions
                FROM shown s LEFT JOIN feedback f USING (query_id, position)
                ORDER BY s.query_id, s.position
            """,
            "events": f"""
                SELECT query_id, session_id, client_id, user_id, action_name, doc_id, position::INTEGER AS position,
                       ts AS timestamp, ts::DATE AS day
                FROM ({accepted_events})
                ORDER BY query_id, ts, position, action_name, session_id, client_id, user_id, doc_id
            """,
            "sessions": f"""
                WITH activity AS (
                    SELECT session_id, client_id, user_id, ts, query_id, NULL AS action_name FROM accepted_query
                    UNION ALL
                    SELECT session_id, client_id, user_id, ts, NULL, action_name FROM ({accepted_events})
                )
                SELECT session_id, min(client_id) AS client_id, min(user_id) AS user_id,
                       count(query_id)::INTEGER AS n_queries, min(ts) AS first_timestamp, max(ts) AS last_timestamp,
                       count(*) FILTER (WHERE action_name = {actions["click"]})::INTEGER AS n_clicks,
                       count(*) FILTER (WHERE action_name = {actions["love"]})::INTEGER AS n_loves,
                       coalesce(list(query_id ORDER BY ts, query_id) FILTER (WHERE query_id IS NOT NULL),
                                []::VARCHAR[]) AS query_ids
                FROM activity WHERE session_id IS NOT NULL
                GROUP BY session_id ORDER BY session_id
            """,
            "quarantine": f"""
                SELECT f.source_file, q.record_no, q.record_kind, q.reason, left(q.raw, {max_raw}) AS raw,
                       length(q.raw) > {max_raw} AS raw_truncated
                FROM ({quarantined}) q JOIN files f USING (file_id)
                ORDER BY q.file_id, q.record_no
            """,
        }

    def file_counts(self) -> list[FileCounts]:
        statuses = " UNION ALL ".join(f"SELECT file_id, status FROM status_{kind}" for kind in KINDS)
        counts = ", ".join(f"count(s.status) FILTER (WHERE s.status = '{status}')" for status in STATUSES)
        rows = self.con.execute(
            f"""
            SELECT f.source_file, f.kind, count(s.status), {counts}
            FROM files f LEFT JOIN ({statuses}) s USING (file_id)
            GROUP BY f.file_id, f.source_file, f.kind ORDER BY f.file_id
            """
        ).fetchall()
        return [FileCounts(*row) for row in rows]

    def quarantine_reasons(self) -> dict[str, int]:
        reasons = " UNION ALL ".join(f"SELECT reason FROM status_{kind} WHERE status = 'quarantined'" for kind in KINDS)
        rows = self.con.execute(f"SELECT reason, count(*) FROM ({reasons}) GROUP BY reason ORDER BY reason").fetchall()
        return dict(rows)


def connect(config: IngestConfig) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB bounded by the config's memory limit, spilling to its temp directory."""
    Path(config.temp_directory).mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        config={
            "memory_limit": config.memory_limit,
            "temp_directory": config.temp_directory,
            "threads": config.threads,
            # Outputs are sorted explicitly; unordered intermediate steps need less memory.
            "preserve_insertion_order": False,
        }
    )
    # Days are UTC days, and timestamps without a zone are read as UTC.
    con.execute("SET TimeZone = 'UTC'")
    return con


def ingest(config: IngestConfig) -> IngestReport:
    """Read every log root, write the ingested tables and metrics/ingest.json; return the report."""
    found = discover(config.log_roots)
    for root in found.roots:
        if not root.exists:
            log.warning("log root %s: missing", root.root)
        elif root.files == 0:
            # One empty root among others is the normal case (simulation off, or no real logs yet in a
            # laboratory run); no logs anywhere is worth a warning.
            log.log(logging.INFO if found.files else logging.WARNING, "log root %s: no log files", root.root)
    if not found.files:
        log.warning("no log files in any root (%s): the feedback models have nothing to learn from",
                    ", ".join(config.log_roots))
    for path in found.unknown:
        log.warning("not a UBI log file (skipped): %s", path)
    for path in found.links:
        log.warning("symbolic link, not followed (skipped): %s", path)
    con = connect(config)
    try:
        run = _Ingestion(config, con)
        run.load(found.files)
        run.check()
        with atomic_path(config.out_dir) as staged:
            table_rows = run.write_tables(staged)
        report = IngestReport(
            run.file_counts(), run.quarantine_reasons(), table_rows, found.roots, found.unknown, found.links
        )
    finally:
        con.close()
    write_json(config.metrics_file, report.to_json())
    return report
