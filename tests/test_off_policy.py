"""Direct-model and doubly robust clicks@k (clickloop/off_policy.py) against IPS and a known truth."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from clickloop.metrics import ips_clicks_at_k
from clickloop.off_policy import direct_and_doubly_robust

THETA = [1.0, 0.6, 0.4, 0.25, 0.15]
RELEVANCE = {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.05, "e": 0.3, "x": 0.8, "y": 0.6}  # x, y are never shown


def _logs(searches: int, seed: int) -> pl.DataFrame:
    """One query; every search shows a..e in a random order (PBM clicks with THETA and RELEVANCE)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(searches):
        for position, doc in enumerate(rng.permutation(list("abcde")), 1):
            clicked = rng.random() < THETA[position - 1] * RELEVANCE[doc]
            rows.append({"query_id": f"s{i}", "user_query": "q", "doc_id": str(doc), "position": position,
                         "clicked": bool(clicked)})
    return pl.DataFrame(rows)


def _truth(ranking: list[str]) -> float:
    return sum(THETA[r] * RELEVANCE[d] for r, d in enumerate(ranking))


def test_dr_equals_ips_when_the_direct_model_is_zero():
    logged = _logs(300, seed=0)
    target = {"q": ["c", "x", "a", "e"], "other": ["a"]}
    ips = ips_clicks_at_k(logged, target, THETA, k=4, clip=0.2)
    estimates = direct_and_doubly_robust(logged, target, THETA, {}, k=4, clip=0.2)
    assert estimates["dr"].value == pytest.approx(ips.value, rel=1e-12)
    assert estimates["dr"].stderr == pytest.approx(ips.stderr, rel=1e-9)
    assert estimates["dm"].value == 0.0


def test_dr_is_unbiased_where_ips_misses_unshown_documents_and_dm_is_wrong_on_shown_ones():
    """Target: x (never shown, the direct model right there), c, y (never shown), a (the direct
    model badly wrong on c and a). IPS cannot credit x and y; DM is off on c and a; DR is right."""
    target = {"q": ["x", "c", "y", "a"]}
    direct = {("q", "x"): RELEVANCE["x"], ("q", "y"): RELEVANCE["y"], ("q", "c"): 0.05, ("q", "a"): 0.2}
    truth = _truth(target["q"])
    dr, ips, dm = [], [], []
    for seed in range(20):
        logged = _logs(400, seed)
        estimates = direct_and_doubly_robust(logged, target, THETA, direct, k=4, clip=0.01)
        dr.append(estimates["dr"].value)
        dm.append(estimates["dm"].value)
        ips.append(ips_clicks_at_k(logged, target, THETA, k=4, clip=0.01).value)
    se = np.std(dr, ddof=1) / np.sqrt(len(dr))
    assert abs(np.mean(dr) - truth) < 4 * se + 1e-3
    assert np.mean(ips) < truth - 0.5  # x and y never credited
    assert abs(np.mean(dm) - truth) > 0.2
    assert estimates["dr"].coverage == pytest.approx(0.5)  # two of the four target slots were ever shown


def test_dr_with_the_right_direct_model_is_unbiased_without_any_support():
    logged = _logs(200, seed=3)
    target = {"q": ["x", "y"]}
    direct = {("q", d): RELEVANCE[d] for d in "xy"}
    estimates = direct_and_doubly_robust(logged, target, THETA, direct, k=2)
    assert estimates["dr"].value == pytest.approx(_truth(["x", "y"]))
    assert estimates["dr"].coverage == 0.0 and estimates["dm"].n_queries == 200


def test_rejects_empty_logs_and_bad_propensities():
    logged = _logs(5, seed=1)
    with pytest.raises(ValueError, match="propensities"):
        direct_and_doubly_robust(logged, {"q": ["a"]}, [0.0], {})
    with pytest.raises(ValueError, match="no logged"):
        direct_and_doubly_robust(logged.clear(), {"q": ["a"]}, THETA, {})


def test_direct_model_reads_the_debiased_labels_by_normalised_query(tmp_path):
    from models.click_direct_model import click_relevance

    assert click_relevance([("q", "a")], tmp_path, tmp_path) is None  # no feedback stage output: IPS only
    pl.DataFrame({"query": ["kettle for tea", "kettle for tea"], "doc_id": ["a", "b"],
                  "posterior_relevance": [0.4, 0.1]}).write_parquet(tmp_path / "labels.parquet")
    relevance = click_relevance([("Kettle  for tea ", "a"), ("kettle for tea", "b"), ("kettle for tea", "z")],
                                tmp_path, tmp_path)
    # No reward model in the folder: an unshown pair gets 0 (DR then reads as IPS there).
    assert relevance == {("Kettle  for tea ", "a"): 0.4, ("kettle for tea", "b"): 0.1, ("kettle for tea", "z"): 0.0}
