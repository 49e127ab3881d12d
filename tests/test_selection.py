"""models.selection: log grids, the one-standard-error pick, and grids that extend past an edge."""

from __future__ import annotations

import math

import pytest

from models.selection import Axis, Candidate, Score, log_grid, one_se_pick, select


def peaked(at: float, width: float = 1.0, se: float = 0.01):
    """A validation curve over log10(l2) peaking at l2 = `at`; records every point it is asked for."""
    calls: list[float] = []

    def evaluate(point: dict) -> Score:
        calls.append(point["l2"])
        return Score(1.0 - ((math.log10(point["l2"]) - math.log10(at)) / width) ** 2, se)

    return evaluate, calls


def test_log_grid_spans_decades() -> None:
    assert log_grid(1e-7, 1e-5) == (1e-7, 1e-6, 1e-5)
    assert log_grid(1, 100, per_decade=2, integer=True) == (1.0, 3.0, 10.0, 32.0, 100.0)
    with pytest.raises(ValueError, match="0 < low <= high"):
        log_grid(0, 1)


def test_an_interior_optimum_needs_no_extension() -> None:
    evaluate, calls = peaked(1e-6, se=0.0)
    selection = select(evaluate, [Axis("l2", (1e-7, 1e-6, 1e-5), low=1e-12, high=1.0, simpler="higher")])
    assert selection.pick.params == {"l2": 1e-6} and selection.edges == {"l2": "interior"}
    assert selection.extended == {} and len(calls) == 3 and not selection.on_edge


def test_a_pick_on_the_edge_extends_the_grid_until_it_is_interior() -> None:
    evaluate, _ = peaked(1e-3, se=0.0)  # two decades above the grid
    selection = select(evaluate, [Axis("l2", (1e-7, 1e-6, 1e-5), low=1e-12, high=1.0, simpler="higher")],
                       max_rounds=5)
    assert selection.pick.params["l2"] == pytest.approx(1e-3)
    assert selection.edges == {"l2": "interior"}
    assert selection.extended["l2"] == pytest.approx([1e-4, 1e-3, 1e-2])


def test_the_cap_and_the_round_limit_are_reported() -> None:
    evaluate, _ = peaked(1e3)
    capped = select(evaluate, [Axis("l2", (1e-2, 1e-1), high=1.0, simpler="higher")], max_rounds=5)
    assert capped.pick.params["l2"] == 1.0 and capped.edges == {"l2": "high edge (at cap)"} and capped.on_edge
    evaluate, _ = peaked(1e3)
    limited = select(evaluate, [Axis("l2", (1e-2, 1e-1), simpler="higher")], max_rounds=1)
    assert limited.pick.params["l2"] == pytest.approx(1.0) and limited.edges == {"l2": "high edge (round limit)"}


def test_one_standard_error_prefers_the_more_regularised_model() -> None:
    # The best mean is at 1e-6 but 1e-5 is within one standard error of it: the simpler model wins.
    scores = {1e-7: 0.50, 1e-6: 0.60, 1e-5: 0.59, 1e-4: 0.40}

    def evaluate(point: dict) -> Score:
        return Score(scores.get(point["l2"], 0.0), 0.02)

    selection = select(evaluate, [Axis("l2", tuple(scores), simpler="higher")])
    assert selection.best.params == {"l2": 1e-6} and selection.pick.params == {"l2": 1e-5}
    assert selection.edges == {"l2": "interior"}


def test_candidates_carry_extra_parameters_and_fixed_values_pass_through() -> None:
    def evaluate(point: dict) -> list[Candidate]:
        assert point["dim"] == 8
        distance = abs(math.log10(point["l2"]) + 6)
        return [Candidate({"epochs": e}, Score(-distance - abs(e - 20) / 100)) for e in (10, 20)]

    selection = select(evaluate, [Axis("l2", (1e-7, 1e-6, 1e-5))], fixed={"dim": 8})
    assert selection.pick.params == {"dim": 8, "l2": 1e-6, "epochs": 20}
    assert len(selection.trials) == 6
    assert selection.summary()["pick"]["params"]["epochs"] == 20


def test_integer_axes_and_fixed_axes() -> None:
    axis = Axis("k", (10, 100), low=1, high=999, integer=True)
    assert axis.beyond(10, -1) == 1 and axis.beyond(100, 1) == 999 and axis.beyond(1, -1) is None
    selection = select(lambda p: Score(-abs(p["k"] - 1000) + 0.0 * p["lr"]),
                       [axis, Axis("lr", (0.005,))], max_rounds=3)
    assert selection.pick.params["k"] == 999 and selection.edges == {"k": "high edge (at cap)", "lr": "fixed"}


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="positive values"):
        Axis("l2", (0.0, 1.0))
    with pytest.raises(ValueError, match="simpler"):
        Axis("l2", (1.0,), simpler="smaller")
    with pytest.raises(ValueError, match="outside the caps"):
        Axis("l2", (1.0, 10.0), high=5.0)
    with pytest.raises(ValueError, match="finite mean"):
        Score(float("nan"))
    with pytest.raises(ValueError, match="no trial"):
        one_se_pick([], [])
