"""Ingest throughput: records/second and peak memory of `clickloop.ingest.ingest` on a large UBI log.

A load generator (DuckDB writing JSON lines straight to gzip, in a child process so its memory
does not count) writes `--days` day folders holding at least `--events` events in all, with a
share of truncated lines, events on unknown queries and re-delivered records. The baseline,
measured in the same run, is the floor any ingest pays: decompressing every file and counting
its lines. Writes reports/ingest_throughput.{json,md}.

    nice -n 10 python -m bench.ingest_throughput            # 5M events, memory_limit 1GB
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from clickloop.atomic import write_json, write_text
from clickloop.ingest import IngestConfig, ingest

HITS_PER_QUERY = 10
# Expected events per query: 10 impressions + clicks (0.7/p) + loves (0.15/p) over positions 1..10.
EVENTS_PER_QUERY = HITS_PER_QUERY + sum((0.7 + 0.15) / p for p in range(1, HITS_PER_QUERY + 1))
FIRST_DAY = dt.date(2026, 1, 1)
GZIP_LINES = "(FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '\\x01', COMPRESSION gzip)"


def generate_day(day_dir: Path, day: dt.date, first_query: int, n_queries: int, bad_share: float,
                 duplicate_share: float) -> None:
    """One day folder: queries.jsonl.gz and events.jsonl.gz, with bad lines and re-deliveries mixed in."""
    day_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    bad_per_mille = round(bad_share * 1000)
    redelivered_per_mille = round(duplicate_share * 1000)
    con.execute(
        f"""
        CREATE TABLE gen_query AS
        SELECT i, 'q' || i AS query_id, 's' || (i // 5) AS session_id, 'c' || (i // 20) AS client_id,
               strftime(TIMESTAMP '{day}' + to_seconds((i - {first_query}) * 86000 // {n_queries}),
                        '%Y-%m-%dT%H:%M:%SZ') AS ts,
               list_transform(range(1, {HITS_PER_QUERY + 1}),
                              lambda p: 'd' || ((i * 7919 + p * 104729) % 200000)) AS hits
        FROM range({first_query}, {first_query + n_queries}) t(i)
        """
    )
    queries = """
        SELECT i AS k, to_json({'query_id': query_id, 'client_id': client_id, 'user_query': 'query ' || (i % 20000),
            'timestamp': ts, 'query_response_hit_ids': hits, 'application': 'bench',
            'query_attributes': {'session_id': session_id, 'ranker': 'bm25',
                                 'device': CASE WHEN i % 3 = 0 THEN 'mobile' ELSE 'desktop' END,
                                 'exploration': {'scheme': 'none', 'n': 0}}})::VARCHAR AS line
        FROM gen_query
    """
    # A per-(query, position) uniform draw decides clicks (0.7/p) and loves (0.15/p, a subset of clicks).
    events = f"""
        SELECT hash(i, p, action) AS k,
               to_json({{'action_name': action,
                        'query_id': CASE WHEN hash(i, p, action, 'orphan') % 1000 < {bad_per_mille}
                                         THEN 'unknown-' || query_id ELSE query_id END,
                        'session_id': session_id, 'client_id': client_id, 'timestamp': ts,
                        'event_attributes': {{'object': {{'object_id': hits[p]}}, 'position': {{'ordinal': p}}}}}}
               )::VARCHAR AS line
        FROM gen_query, range(1, {HITS_PER_QUERY + 1}) r(p),
             (VALUES ('impression'), ('click'), ('love')) a(action),
             LATERAL (SELECT (hash(i, p) % 1000000) / 1e6 AS draw)
        WHERE action = 'impression' OR (action = 'click' AND draw < 0.7 / p) OR (action = 'love' AND draw < 0.15 / p)
    """
    for name, select in (("queries", queries), ("events", events)):
        con.execute(
            f"""
            COPY (
                WITH records AS ({select}),
                delivered AS (
                    SELECT k, line, 0 AS copy FROM records
                    UNION ALL
                    SELECT k, line, 1 FROM records WHERE hash(k, 'again') % 1000 < {redelivered_per_mille}
                )
                SELECT CASE WHEN copy = 0 AND hash(k, 'cut') % 1000 < {bad_per_mille}
                            THEN left(line, length(line) // 2) ELSE line END
                FROM delivered ORDER BY copy, k
            ) TO '{day_dir / f"{name}.jsonl.gz"}' {GZIP_LINES}
            """
        )
    con.close()


def generate(log_dir: Path, n_events: int, days: int, bad_share: float, duplicate_share: float) -> None:
    queries_per_day = int(n_events / EVENTS_PER_QUERY / days) + 1
    for d in range(days):
        day = FIRST_DAY + dt.timedelta(days=d)
        generate_day(log_dir / day.isoformat(), day, d * queries_per_day, queries_per_day, bad_share, duplicate_share)


def count_lines(log_dir: Path) -> int:
    """The baseline pass: decompress every log file and count its lines."""
    lines = 0
    for path in sorted(log_dir.glob("*/*.jsonl.gz")):
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(16 * 2**20):
                lines += chunk.count(b"\n")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000_000, help="events to generate (at least)")
    parser.add_argument("--days", type=int, default=5)
    parser.add_argument("--bad-share", type=float, default=0.002, help="share of truncated lines and of orphan events")
    parser.add_argument("--duplicate-share", type=float, default=0.005, help="share of records re-delivered")
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=Path("reports/tmp/ingest_throughput"))
    parser.add_argument("--report", type=Path, default=Path("reports/ingest_throughput.json"))
    parser.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    log_dir = args.work_dir / "logs"

    if args.generate_only:
        generate(log_dir, args.events, args.days, args.bad_share, args.duplicate_share)
        return

    shutil.rmtree(args.work_dir, ignore_errors=True)
    started = time.perf_counter()
    # The generator runs in a child process so that its memory is not in this process's peak RSS.
    subprocess.run([sys.executable, __file__, "--generate-only", *sys.argv[1:]], check=True)
    generate_s = time.perf_counter() - started
    log_bytes = sum(p.stat().st_size for p in log_dir.glob("*/*"))

    started = time.perf_counter()
    baseline_lines = count_lines(log_dir)
    baseline_s = time.perf_counter() - started

    config = IngestConfig(
        log_roots=[str(log_dir)],
        out_dir=str(args.work_dir / "ingested"),
        metrics_file=str(args.work_dir / "ingest.json"),
        memory_limit=args.memory_limit,
        temp_directory=str(args.work_dir / "spill"),
        threads=args.threads,
    )
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    report = ingest(config)
    ingest_s = time.perf_counter() - started
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    # On a shared machine wall time depends on the neighbours; CPU time is the cost of the work itself.
    ingest_cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB

    totals = report.totals
    events_read = sum(f.read for f in report.files if f.kind == "event")
    result = {
        "events_requested": args.events,
        "days": args.days,
        "log_bytes_gzip": log_bytes,
        "generate_s": round(generate_s, 3),
        "records_read": totals["read"],
        "events_read": events_read,
        "accepted": totals["accepted"],
        "quarantined": totals["quarantined"],
        "duplicates": totals["duplicates"],
        "quarantine_reasons": report.quarantine_reasons,
        "tables": report.table_rows,
        "ingest_wall_s": round(ingest_s, 3),
        "records_per_s": round(totals["read"] / ingest_s),
        "events_per_s": round(events_read / ingest_s),
        "ingest_cpu_s": round(ingest_cpu_s, 3),
        "records_per_cpu_s": round(totals["read"] / ingest_cpu_s),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "baseline": "gzip decompress + line count of the same files",
        "baseline_wall_s": round(baseline_s, 3),
        "baseline_lines": baseline_lines,
        "baseline_lines_per_s": round(baseline_lines / baseline_s),
        "ingest_vs_baseline_time": round(ingest_s / baseline_s, 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "memory_limit": args.memory_limit,
        "threads": args.threads,
        "reconciles": all(f.read == f.accepted + f.quarantined + f.duplicates for f in report.files),
    }
    write_json(args.report, result)
    write_text(
        args.report.with_suffix(".md"),
        "# Ingest throughput\n\n"
        f"{totals['read']:,} records ({events_read:,} events, {log_bytes / 2**20:.1f} MiB gzip) in "
        f"{ingest_s:.1f} s: **{result['records_per_s']:,} records/s**, {result['events_per_s']:,} events/s; "
        f"{result['records_per_cpu_s']:,} records per CPU second; "
        f"peak RSS {peak_rss_mb:.0f} MiB with DuckDB memory_limit {args.memory_limit}, {args.threads} threads.\n"
        f"Baseline (decompress + count lines): {baseline_s:.1f} s, {result['baseline_lines_per_s']:,} lines/s; "
        f"ingest takes {result['ingest_vs_baseline_time']}x the baseline.\n",
    )
    print(json.dumps(result, indent=2))
    shutil.rmtree(args.work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
