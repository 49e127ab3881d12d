"""The traffic guard on synthetic traffic: an adversarial client is excluded, a heavy but plausible one kept,
a small one never flagged on noise, a click bot capped, and every row accounted for."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from models.traffic_guard import TrafficGuardConfig, client_statistics, guard

N_QUERIES, PAGE = 30, 10


def _traffic(kind: str, client: str, n_queries: int, rng: np.random.Generator, love: float = 0.3) -> list[dict]:
    """Pages of 10 results; documents 0-2 of each query are relevant. Normal users click relevant results
    (and love some), adversarial users click the irrelevant ones."""
    rows = []
    for i in range(n_queries):
        q = int(rng.integers(N_QUERIES))
        order = rng.permutation(PAGE)
        for position, doc in enumerate(order, start=1):
            relevant = doc < 3
            examined = rng.random() < 0.9 / position**0.5
            wants = relevant if kind == "normal" else not relevant
            clicked = bool(examined and rng.random() < (0.7 if wants else 0.05))
            rows.append({
                "client_id": client, "query_id": f"{client}-q{i}", "user_query": f"query {q}",
                "doc_id": f"d{q}-{doc}", "position": position, "clicked": clicked,
                "loved": bool(clicked and rng.random() < love), "day": dt.date(2025, 1, 6 + i % 7),
            })
    return rows


@pytest.fixture(scope="module")
def results() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    rows = []
    for c in range(150):
        rows += _traffic("normal", f"normal-{c:03d}", int(rng.integers(10, 25)), rng)
    rows += _traffic("normal", "heavy", 90, rng)  # 5x the median client, same behaviour
    rows += _traffic("adversarial", "adversary", 20, rng)
    rows += _traffic("adversarial", "small-adversary", 1, rng)  # too little support to judge
    rows += _traffic("normal", "bot", 2000, rng)  # plausible clicks, implausible volume
    rows += _traffic("normal", "small-lover", 6, rng, love=1.0)  # loves all its ~10 clicks: chance at that size
    return pl.DataFrame(rows)


def test_flags_the_adversary_and_caps_the_bot_with_reasons(results: pl.DataFrame) -> None:
    config = TrafficGuardConfig(min_volume_queries=100)
    out = guard(results, config)
    actions = dict(out.clients.select("client_id", "action").iter_rows())
    reasons = dict(out.clients.select("client_id", "reasons").iter_rows())

    assert actions["adversary"] == "exclude" and "crowd_disagreement" in reasons["adversary"]
    assert actions["heavy"] is None
    assert actions["small-adversary"] is None  # one query: never flagged on noise
    assert actions["small-lover"] is None
    assert actions["bot"] == "cap" and reasons["bot"] == ["volume"]
    assert sum(a is not None for k, a in actions.items() if k.startswith("normal-")) == 0

    kept = out.kept
    assert "adversary" not in set(kept["client_id"])
    cap = out.report["query_cap"]
    assert kept.filter(pl.col("client_id") == "bot")["query_id"].n_unique() == cap
    assert kept.filter(pl.col("client_id") == "heavy").height == results.filter(pl.col("client_id") == "heavy").height


def test_every_row_is_accounted_for_by_reason(results: pl.DataFrame) -> None:
    out = guard(results, TrafficGuardConfig(min_volume_queries=100))
    report = out.report
    assert report["rows_in"] == results.height == report["rows_kept"] + report["rows_set_aside"]
    assert report["rows_kept"] == out.kept.height
    assert report["rows_set_aside"] == sum(a["rows_set_aside"] for a in report["by_action"].values())
    assert report["clicks_set_aside"] == results["clicked"].sum() - out.kept["clicked"].sum()
    assert report["by_action"]["exclude"]["rows_set_aside"] == results.filter(pl.col("client_id") == "adversary").height
    assert report["by_reason"]["crowd_disagreement"]["clients"] >= 1
    assert report["by_reason"]["volume"] == {"clients": 1, "rows_set_aside": (2000 - report["query_cap"]) * PAGE,
                                             "clicks_set_aside": report["by_action"]["cap"]["clicks_set_aside"]}
    assert report["clients_flagged"] == len(report["flagged"]) == 2
    assert sum(report["clients_flagged_by_pass"].values()) == 2
    assert out.kept.columns == results.columns


def test_statistics_and_switches(results: pl.DataFrame) -> None:
    stats = client_statistics(results)
    lift = dict(stats.select("client_id", "crowd_lift").iter_rows())
    assert lift["adversary"] < 0 < lift["heavy"]
    disabled = guard(results, TrafficGuardConfig(enabled=False))
    assert disabled.kept.height == results.height and disabled.report["skipped"] == "disabled"
    empty = guard(results.head(0), TrafficGuardConfig())
    assert empty.kept.is_empty() and empty.report["rows_set_aside"] == 0
    one_pass = guard(results, TrafficGuardConfig(passes=1, min_volume_queries=100))
    assert set(one_pass.report["clients_flagged_by_pass"]) == {"1"}
    with pytest.raises(ValueError, match="unknown"):
        TrafficGuardConfig(checks=["nonsense"])
