"""Simulated days as UBI 1.3 logs (docs/contracts.md) and the ground truth kept apart from them."""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clickloop.atomic import atomic_path, write_json
from clickloop.simulation.config import SimulatorConfig
from clickloop.simulation.simulator import SimulatedDay, Simulator

ACTIONS = ("impression", "click", "love")
# Lines handed to the gzip stream at once: bounds memory while keeping the writes large.
WRITE_BATCH_LINES = 50_000
GZIP_LEVEL = 5


def _timestamps(date: Any, ms: np.ndarray) -> np.ndarray:
    instants = np.datetime64(date, "ms") + ms.astype("timedelta64[ms]")
    return np.char.add(np.datetime_as_string(instants, unit="ms"), "Z")


def query_records(day: SimulatedDay, config: SimulatorConfig) -> Iterator[dict[str, Any]]:
    """UBI query.request records, in time order."""
    timestamps = _timestamps(day.date, day.query_time_ms)
    n_explored = config.exploration.n
    for q in range(day.n_queries):
        shown = day.shown[q]
        scheme = day.exploration_schemes[q]
        attributes: dict[str, Any] = {
            "ranker": config.ranker,
            "session_id": day.session_ids[q],
            "device": day.devices[q],
            "exploration": {"scheme": scheme, "n": 0 if scheme == "none" else n_explored},
            "logging_ranks": day.logging_ranks[q][shown].tolist(),
            "display_propensities": day.display_propensities[q][shown].tolist(),
        }
        if day.user_ids[q] is not None:
            attributes["user_id"] = day.user_ids[q]
        yield {
            "query_id": day.query_ids[q],
            "client_id": day.client_ids[q],
            "user_query": day.user_queries[q],
            "timestamp": str(timestamps[q]),
            "query_response_hit_ids": day.doc_ids[q][shown].tolist(),
            "application": config.application,
            "query_attributes": attributes,
        }


def event_records(day: SimulatedDay, config: SimulatorConfig) -> Iterator[dict[str, Any]]:
    """UBI event records (an impression per shown result, clicks, loves), in time order."""
    cells = [np.nonzero(mask) for mask in (day.shown, day.clicked, day.loved)]
    times = [day.impression_time_ms, day.click_time_ms, day.love_time_ms]
    query = np.concatenate([c[0] for c in cells])
    position = np.concatenate([c[1] for c in cells])
    action = np.concatenate([np.full(len(c[0]), i) for i, c in enumerate(cells)])
    time_ms = np.concatenate([np.broadcast_to(t, day.shown.shape)[c] for t, c in zip(times, cells, strict=True)])
    order = np.lexsort((action, time_ms))  # by time; at one instant, impression before click before love
    timestamps = _timestamps(day.date, time_ms[order]).tolist()
    # Plain lists: indexing them per record is far faster than indexing numpy arrays.
    query_ids, session_ids, client_ids, user_ids = (
        a.tolist() for a in (day.query_ids, day.session_ids, day.client_ids, day.user_ids))
    doc_ids = day.doc_ids.tolist()
    for timestamp, q, p, a in zip(timestamps, query[order].tolist(), position[order].tolist(), action[order].tolist(),
                                  strict=True):
        record: dict[str, Any] = {
            "action_name": ACTIONS[a],
            "query_id": query_ids[q],
            "session_id": session_ids[q],
            "client_id": client_ids[q],
            "timestamp": timestamp,
            "application": config.application,
            "event_attributes": {
                "object": {"object_id": doc_ids[q][p], "object_id_field": "_id"},
                "position": {"ordinal": p + 1},
            },
        }
        if user_ids[q] is not None:
            record["user_id"] = user_ids[q]
        yield record


def truth_table(day: SimulatedDay) -> pa.Table:
    """One row per shown result with the hidden state behind it (docs/contracts.md), plus the
    BEIR query id that was issued (`beir_query_id`) and the day."""
    q, p = np.nonzero(day.shown)
    return pa.table({
        "query_id": day.query_ids[q].astype(str),
        "doc_id": day.doc_ids[q, p].astype(str),
        "position": (p + 1).astype(np.int32),
        "grade": day.grades[q, p].astype(np.int8),
        "examination_prob": day.examination_prob[q, p],
        "examined": day.examined[q, p],
        "click_prob": day.click_prob[q, p],
        "clicked": day.clicked[q, p],
        "loved": day.loved[q, p],
        "user_kind": day.user_kinds[q].astype(str),
        "beir_query_id": day.source_query_ids[q].astype(str),
        "day": pa.array(np.full(len(q), np.datetime64(day.date, "D"))),
    })


def write_jsonl_gz(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records as gzipped JSON lines; return how many."""
    n = 0
    with gzip.open(path, "wt", encoding="utf-8", compresslevel=GZIP_LEVEL) as f:
        batch: list[str] = []
        for record in records:
            batch.append(json.dumps(record, separators=(",", ":")) + "\n")
            if len(batch) == WRITE_BATCH_LINES:
                f.writelines(batch)
                n += len(batch)
                batch.clear()
        f.writelines(batch)
        n += len(batch)
    return n


def truth_config(simulator: Simulator) -> dict[str, Any]:
    """What `config.json` in the truth folder holds: the click model and its parameters."""
    config = simulator.config
    return {
        "seed": simulator.seed,
        "click_model": config.click_model,
        "examination_by_device": {
            str(d): curve.tolist() for d, curve in zip(simulator.devices, simulator.examination_by_device, strict=True)
        },
        "click_prob_by_grade": list(config.click_prob_by_grade),
        "love_prob_by_grade": list(config.love_prob_by_grade),
        "noisy_user_share": config.noisy_user_share,
        "noisy_click_prob": config.noisy_click_prob,
        "adversarial_user_share": config.adversarial_user_share,
        "adversarial_click_prob_by_grade": list(config.adversarial_click_prob_by_grade),
        "adversarial_love_prob_by_grade": list(config.adversarial_love_prob_by_grade),
        "exploration": dataclasses.asdict(config.exploration),
        "config": dataclasses.asdict(config),
    }


def write_simulation(simulator: Simulator, log_dir: str | Path, truth_dir: str | Path) -> dict[str, Any]:
    """Simulate every day and write the UBI logs (a `YYYY-MM-DD/` folder per day) and the truth,
    each folder atomically. Returns the counts per day and in total."""
    per_day: dict[str, dict[str, int]] = {}
    truths: list[pa.Table] = []
    with atomic_path(log_dir) as staged_logs:
        staged_logs.mkdir()
        for day in simulator.days():
            folder = staged_logs / day.date.isoformat()
            folder.mkdir()
            write_jsonl_gz(folder / "queries.jsonl.gz", query_records(day, simulator.config))
            write_jsonl_gz(folder / "events.jsonl.gz", event_records(day, simulator.config))
            per_day[day.date.isoformat()] = day.counts()
            truths.append(truth_table(day))
        with atomic_path(truth_dir) as staged_truth:
            staged_truth.mkdir()
            pq.write_table(pa.concat_tables(truths), staged_truth / "results.parquet")
            write_json(staged_truth / "config.json", truth_config(simulator))
    totals = {name: sum(c[name] for c in per_day.values()) for name in next(iter(per_day.values()))}
    return {"totals": totals, "days": per_day}
