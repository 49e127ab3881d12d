"""The Yahoo! R3 benchmark's data handling: validation of rating files, the protocol's levels
and propensities, and (when ../shared is present) the real files' shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bench.yahoo_r3 import BenchConfig, load_yahoo_r3, rating_matrix, read_ratings

SHARED_YAHOO = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "yahoo-r3"


def test_rating_matrix_levels_seen_and_propensities() -> None:
    ratings = pl.DataFrame({"user": [0, 0, 1, 1, 2], "item": [0, 1, 0, 2, 0], "rating": [5, 3, 4, 5, 1]})
    data = rating_matrix(ratings, n_users=3, n_items=3, config=BenchConfig())
    np.testing.assert_array_equal(data.levels, [[2, 0, 0], [1, 0, 2], [0, 0, 0]])
    np.testing.assert_array_equal(data.seen, [[True, True, False], [True, False, True], [True, False, False]])
    # Positives per item: 2, 0, 1 -> (count / 2) ** 0.5.
    np.testing.assert_allclose(data.propensity, [1.0, 0.0, 0.5**0.5], rtol=1e-6)
    assert data.user_ids == ["1", "2", "3"] and data.level_names == ["positive", "loved"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("1\t2\t6\n", "ratings 1-5"), ("0\t2\t3\n", "ids must be >= 1"), ("1\t2\t3\n1\t2\t4\n", "rated twice")],
)
def test_bad_rating_files_are_rejected(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "ratings.txt"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_ratings(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Yahoo! R3 file not found"):
        read_ratings(tmp_path / "absent.txt")


def test_real_files_match_the_published_sizes() -> None:
    if not SHARED_YAHOO.is_dir():
        pytest.skip(f"Yahoo! R3 is not at {SHARED_YAHOO}")
    data = load_yahoo_r3(SHARED_YAHOO)
    assert (data.n_users, data.n_items) == (15400, 1000)
    assert (len(data.train), len(data.test)) == (311704, 54000)
    assert data.test.group_by("user").len()["len"].unique().to_list() == [10]  # 10 random songs per test user
