"""A generated hostile day of UBI logs: good records, every kind of bad one (each a few times), copies of
good and bad lines, and second versions of good queries, each line labelled with its kind. Shared by the
ingest tests and bench.hostile_day."""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
from typing import Any

from tests.test_ingest_stage import event, query

GOOD = "good"  # the kind of a valid record; every other kind is one the ingest must quarantine


class _Delete:
    def __repr__(self) -> str:
        return "<deleted>"


DELETE = _Delete()  # as a field's value: the field is left out of the record


def label(value: Any) -> str:
    """A bad value as a kind's name: its repr, long strings shortened."""
    if isinstance(value, str) and len(value) > 24:
        return f"{value[:4]!r}... ({len(value)} chars)"
    return repr(value)


def changed(record: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `record` with the field at the dotted `path` set to `value` (removed for DELETE)."""
    record = copy.deepcopy(record)
    *parents, key = path.split(".")
    node = record
    for parent in parents:
        node = node.setdefault(parent, {})
    if value is DELETE:
        node.pop(key, None)
    else:
        node[key] = value
    return record


def spliced(record: dict[str, Any], path: str, raw_json: str) -> bytes:
    """`record` as JSON with the text `raw_json` (which Python's json would not write) at `path`."""
    return json.dumps(changed(record, path, "@@")).replace('"@@"', raw_json).encode()


def _broken_lines(record: dict[str, Any]) -> dict[str, bytes]:
    text = json.dumps(record).encode()
    return {
        "truncated": text[: len(text) // 2],
        "array": json.dumps(list(record.values())).encode(),
        "number": b"42",
        "string": b'"a record"',
        "null": b"null",
        "empty": b"",
        "blank": b" \t ",
        "invalid_utf8": text.replace(b'"timestamp"', b'"time\xffstamp"'),
        "nul_byte": text.replace(b'"timestamp"', b'"time\x00stamp"'),
        "record_too_large": json.dumps({**record, "padding": "p" * 5000}).encode(),
    }


def _bad_timestamps(record: dict[str, Any]) -> dict[str, Any]:
    values = ["2026-02-30T10:00:00Z", "yesterday", "infinity", "epoch", 1_700_000_000, "2026-03-01", None,
              "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1999-12-31T23:59:59Z",
              "2100-01-01T00:00:00Z", DELETE]
    return {f"timestamp={label(value)}": changed(record, "timestamp", value) for value in values}


def bad_queries(base: dict[str, Any]) -> dict[str, dict[str, Any] | bytes]:
    """Every kind of bad query, made from the good query `base` (three hits, explored)."""
    fields: list[tuple[str, Any]] = [
        ("query_id", DELETE), ("query_id", None), ("query_id", 7), ("query_id", "q" * 101), ("query_id", ""),
        ("query_id", " "), ("query_id", "\u200b"), ("client_id", DELETE), ("client_id", "\t\n"),
        ("client_id", ["c"]), ("user_query", DELETE), ("user_query", ["a", "b"]), ("user_query", "x" * 300),
        ("query_response_hit_ids", "d1"), ("query_response_hit_ids", [1, 2, 3]),
        ("query_response_hit_ids", ["d1", None, "d3"]), ("query_response_hit_ids", ["x" * 257, "d2", "d3"]),
        ("query_attributes", "mobile"), ("query_attributes", ["a"]), ("query_attributes.session_id", 5),
        ("query_attributes.session_id", ""), ("query_attributes.user_id", "u" * 101),
        ("query_attributes.user_id", "\u00a0"), ("query_attributes.device", ["x"]), ("query_attributes.ranker", {}),
        ("query_attributes.exploration", "swap"), ("query_attributes.exploration.scheme", 3),
        ("query_attributes.logging_ranks", [1, 2]), ("query_attributes.logging_ranks", [0, 1, 2]),
        ("query_attributes.logging_ranks", [-1, 2, 3]), ("query_attributes.logging_ranks", [3_000_000_000, 2, 3]),
        ("query_attributes.logging_ranks", [2**64, 2, 3]), ("query_attributes.logging_ranks", [1.5, 2, 3]),
        ("query_attributes.logging_ranks", ["1", 2, 3]), ("query_attributes.logging_ranks", "123"),
        ("query_attributes.display_propensities", [0, 0.5, 1]),
        ("query_attributes.display_propensities", [1.5, 0.5, 1]),
        ("query_attributes.display_propensities", [-0.1, 0.5, 1]),
        ("query_attributes.display_propensities", ["x", 0.5, 1]),
        ("query_attributes.display_propensities", [0.5, 0.5]),
    ]
    kinds: dict[str, dict[str, Any] | bytes] = {f"{p}={label(v)}": changed(base, p, v) for p, v in fields}
    kinds |= _bad_timestamps(base) | _broken_lines(base)
    kinds["propensity=NaN"] = spliced(base, "query_attributes.display_propensities", "[NaN, 0.5, 1]")
    kinds["propensity=1e400"] = spliced(base, "query_attributes.display_propensities", "[1e400, 0.5, 1]")
    kinds["deep_exploration"] = spliced(base, "query_attributes.exploration", "[" * 1500 + "]" * 1500)
    return kinds


def bad_events(base: dict[str, Any], other_ordinal: int) -> dict[str, dict[str, Any] | bytes]:
    """Every kind of bad event, made from the good click `base` (on a query with several hits)."""
    fields: list[tuple[str, Any]] = [
        ("action_name", DELETE), ("action_name", None), ("action_name", 3), ("action_name", ""),
        ("action_name", "a" * 101), ("query_id", DELETE), ("query_id", ""), ("query_id", "nope"),
        ("query_id", "bad-0"), ("event_attributes.object.object_id", "zz"),
        ("event_attributes.position.ordinal", other_ordinal), ("event_attributes.position.ordinal", 0),
        ("event_attributes.position.ordinal", -1), ("event_attributes.position.ordinal", 3_000_000_000),
        ("event_attributes.position.ordinal", 2**63), ("event_attributes.position.ordinal", 2**64),
        ("event_attributes.position.ordinal", "2"), ("event_attributes.position.ordinal", 1.5),
        ("event_attributes.position.ordinal", None), ("event_attributes.object.object_id", "x" * 257),
        ("event_attributes.object.object_id", {"id": 1}), ("event_attributes.object", DELETE),
        ("event_attributes", "x"), ("session_id", ""), ("client_id", " "), ("user_id", 5),
        ("message", "m" * 1025), ("message_type", 5),
    ]
    kinds: dict[str, dict[str, Any] | bytes] = {f"{p}={label(v)}": changed(base, p, v) for p, v in fields}
    kinds["no_session_or_client"] = changed(changed(base, "session_id", DELETE), "client_id", DELETE)
    return kinds | _bad_timestamps(base) | _broken_lines(base)


def good_records(rng: random.Random, n_queries: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Valid queries (some explored) and their events: impressions, clicks, loves, carts, page views."""
    queries, events = [], []
    for i in range(n_queries):
        hits = [f"d{rng.randrange(10_000)}-{j}" for j in range(rng.randint(2, 6))]
        at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randrange(80_000))
        record = query(f"good-{i}", hits, timestamp=f"{at:%Y-%m-%dT%H:%M:%S}Z")
        if rng.random() < 0.3:
            record["query_attributes"] |= {"exploration": {"scheme": "swap_pairs", "n": 2},
                                           "logging_ranks": rng.sample(range(1, len(hits) + 1), len(hits)),
                                           "display_propensities": [rng.uniform(0.1, 1.0) for _ in hits]}
        queries.append(record)
        clicked = rng.randrange(len(hits))
        actions = [("impression", p) for p in range(len(hits))] + [("click", clicked), ("love", clicked),
                                                                  ("add_to_cart", clicked)]
        for k, (action, position) in enumerate(actions[: rng.randint(len(hits), len(actions))]):
            stamp = f"{(at + dt.timedelta(seconds=k + 1)):%Y-%m-%dT%H:%M:%S}Z"
            events.append(event(action, record["query_id"], hits[position], position + 1, timestamp=stamp))
        if rng.random() < 0.1:
            events.append({"action_name": "page_view", "client_id": f"c{i}", "timestamp": f"{at:%Y-%m-%dT%H:%M:%S}Z"})
    return queries, events


def hostile_lines(rng: random.Random, n_queries: int) -> dict[str, list[tuple[bytes, str]]]:
    """Lines and their kind (GOOD, or the bad kind, e.g. "query:timestamp='yesterday'") by file name: good
    records, every kind of bad one (each a few times), copies of good and bad lines, and second versions
    of good queries."""
    queries, events = good_records(rng, n_queries)
    clicks = [e for e in events if e["action_name"] == "click"]
    lines: dict[str, list[tuple[bytes, str]]] = {"queries": [], "events": []}  # by file name prefix
    for prefix, good in (("queries", queries), ("events", events)):
        lines[prefix] += [(json.dumps(r).encode(), GOOD) for r in good]
    for i in range(n_queries):
        base = query(f"bad-{i}", ["d1", "d2", "d3"])  # an id no good query has
        base["query_attributes"] |= {"exploration": {"scheme": "swap_pairs", "n": 2}, "logging_ranks": [2, 1, 3],
                                     "display_propensities": [0.5, 0.5, 1.0]}
        lines["queries"] += [(_encoded(r), f"query:{kind}")
                             for kind, r in rng.sample(list(bad_queries(base).items()), 4)]
        click = clicks[i % len(clicks)]
        other = click["event_attributes"]["position"]["ordinal"] % 2 + 1
        lines["events"] += [(_encoded(r), f"event:{kind}")
                            for kind, r in rng.sample(list(bad_events(click, other).items()), 4)]
    for prefix in lines:  # copies, in the same file or a later one
        lines[prefix] += rng.sample(lines[prefix], len(lines[prefix]) // 10)
    files = {"queries_1.jsonl": [], "queries_2.jsonl.gz": [], "events_1.jsonl": [], "events_2.jsonl.gz": []}
    for prefix, kind_lines in lines.items():
        names = [name for name in files if name.startswith(prefix)]
        for line in kind_lines:
            files[rng.choice(names)].append(line)
    for name in files:
        rng.shuffle(files[name])
    # Second versions come after the first ones.
    files["queries_zz.jsonl"] = [(json.dumps(changed(q, "user_query", "changed")).encode(), "query:second_version")
                                 for q in rng.sample(queries, 20)] * 2
    return files


def _encoded(record: dict[str, Any] | bytes) -> bytes:
    return record if isinstance(record, bytes) else json.dumps(record).encode()


def expected_counts(files: dict[str, list[tuple[bytes, str]]]) -> dict[str, tuple[int, int, int, int]]:
    """(read, accepted, quarantined, duplicates) by file: the first copy of a good line is accepted."""
    seen: set[bytes] = set()
    counts = {}
    for name in sorted(files):
        accepted = quarantined = duplicates = 0
        for line, kind in files[name]:
            if kind != GOOD:
                quarantined += 1
            elif line in seen:
                duplicates += 1
            else:
                accepted += 1
                seen.add(line)
        counts[name] = (len(files[name]), accepted, quarantined, duplicates)
    return counts


