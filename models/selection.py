"""Hyper-parameter selection that cannot silently sit on the edge of its grid.

A search over log-spaced grids (`Axis`) calls `evaluate(point)` for every grid point and keeps
each result's validation `Score` (a mean and its standard error, e.g. an IPS-weighted metric
averaged over validation users). Then:

- the *best* trial is the highest mean; the *pick* is the simplest trial whose mean is within
  one standard error of the best's (the one-standard-error rule: among models the validation
  data cannot tell apart, prefer the more regularised one). "Simpler" follows each axis's
  `simpler` direction ("higher": e.g. a larger L2 penalty or clip; "lower": e.g. a smaller
  dimension; "none": no preference), compared axis by axis in the order given;
- when the best or the pick sits on an end of an axis, that axis is extended one step beyond it
  (the grid's own ratio, e.g. x10 for decades), with the other axes held at that trial's values,
  and the new points are evaluated; this repeats until neither sits on an edge, the axis meets
  its cap (`low` / `high`) or `max_rounds` extensions were made;
- `Selection.edges` says, per axis, where the pick ended: "interior", "fixed" (one value, never
  searched), or "low edge"/"high edge" with why the search stopped there ("at cap" or "round
  limit"). A caller reports these; a pick on an edge is a finding, not a silent choice.

`evaluate` may return one `Score`, or several `Candidate`s for one point when a run scores more
than one setting at once (e.g. one training run validated after several epochs): each becomes a
trial with its extra parameters. Extra parameters are not extended (the caller sizes their range)
and are not part of the simplicity order.

Example::

    axes = [Axis("l2", log_grid(1e-7, 1e-5), low=1e-10, high=1e-1, simpler="higher")]
    selection = select(lambda p: Score(*validate(train(l2=p["l2"]))), axes)
    selection.pick.params, selection.edges   # {'l2': 1e-06}, {'l2': 'interior'}
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

SIMPLER = ("higher", "lower", "none")


@dataclass(frozen=True)
class Score:
    """A validation figure to maximise: the mean over validation units and its standard error."""

    mean: float
    se: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.mean) or not self.se >= 0:
            raise ValueError(f"a score needs a finite mean and a standard error >= 0; got {self.mean}, {self.se}")


@dataclass(frozen=True)
class Candidate:
    """One of several settings a single evaluation scored: its extra parameters and its score."""

    extra: dict[str, Any]
    score: Score
    detail: Any = None


@dataclass(frozen=True)
class Axis:
    """One hyper-parameter's grid: ascending positive values, extended geometrically within [low, high]."""

    name: str
    values: tuple[float, ...]
    low: float | None = None  # never extend below this (None: no cap)
    high: float | None = None  # never extend above this
    simpler: str = "none"  # the direction of the simpler / more regularised model
    integer: bool = False  # round extended values (e.g. a neighbourhood size)

    def __post_init__(self) -> None:
        values = tuple(sorted(set(self.values)))
        object.__setattr__(self, "values", values)
        if not values or values[0] <= 0:
            raise ValueError(f"axis {self.name}: a log-space grid needs positive values; got {self.values}")
        if self.simpler not in SIMPLER:
            raise ValueError(f"axis {self.name}: simpler must be one of {SIMPLER}; got {self.simpler!r}")
        if (self.low is not None and values[0] < self.low) or (self.high is not None and values[-1] > self.high):
            raise ValueError(f"axis {self.name}: values {values} lie outside the caps [{self.low}, {self.high}]")

    @property
    def ratio(self) -> float:
        """The extension step: the grid's largest ratio between neighbours (10 for a single value)."""
        if len(self.values) < 2:
            return 10.0
        return max(b / a for a, b in itertools.pairwise(self.values))

    def beyond(self, value: float, direction: int) -> float | None:
        """The next value one step beyond `value` (-1 down, +1 up), or None when the cap forbids it."""
        step = value * self.ratio ** direction
        if self.integer:
            step = float(round(step))
            if step == value:
                step = value + direction
        cap = self.low if direction < 0 else self.high
        if cap is not None and (step < cap if direction < 0 else step > cap):
            step = cap
        if step == value or step <= 0:
            return None
        return int(step) if self.integer else step


@dataclass(frozen=True)
class Trial:
    params: dict[str, Any]
    score: Score
    detail: Any = None


@dataclass
class Selection:
    best: Trial  # the highest validation mean
    pick: Trial  # the simplest trial within one standard error of the best
    trials: list[Trial]
    edges: dict[str, str]  # axis name -> "interior" | "fixed" | "<low|high> edge (at cap|round limit)"
    extended: dict[str, list[float]] = field(default_factory=dict)  # values added beyond the starting grid

    @property
    def on_edge(self) -> bool:
        """True when the pick sits on the end of a searched axis."""
        return any("edge" in state for state in self.edges.values())

    def summary(self) -> dict[str, Any]:
        """A JSON-ready account: the pick, the best, the edges, the extensions and every trial."""
        def row(trial: Trial) -> dict[str, Any]:
            return {"params": trial.params, "mean": trial.score.mean, "se": trial.score.se}
        return {"pick": row(self.pick), "best": row(self.best), "edges": self.edges, "on_edge": self.on_edge,
                "extended": self.extended, "trials": [row(t) for t in self.trials]}


def log_grid(low: float, high: float, per_decade: int = 1, integer: bool = False) -> tuple[float, ...]:
    """Values from `low` to `high` (inclusive), `per_decade` of them per factor of ten."""
    if not 0 < low <= high or per_decade < 1:
        raise ValueError(f"log_grid needs 0 < low <= high and per_decade >= 1; got {low}, {high}, {per_decade}")
    steps = round(math.log10(high / low) * per_decade)
    values = [low * 10 ** (k / per_decade) for k in range(steps + 1)]
    if integer:
        return tuple(sorted({float(round(v)) for v in values}))
    return tuple(float(f"{v:.6g}") for v in values)


def one_se_pick(trials: Sequence[Trial], axes: Sequence[Axis]) -> tuple[Trial, Trial]:
    """(best, pick): the highest mean, and the simplest trial within one standard error of it."""
    if not trials:
        raise ValueError("no trial to select from")
    best = max(trials, key=lambda t: t.score.mean)
    threshold = best.score.mean - best.score.se
    contenders = [t for t in trials if t.score.mean >= threshold]

    def simplicity(trial: Trial) -> tuple[float, ...]:
        keys = []
        for axis in axes:
            if axis.simpler != "none":
                value = math.log(trial.params[axis.name])
                keys.append(value if axis.simpler == "higher" else -value)
        return (*keys, trial.score.mean)

    return best, max(contenders, key=simplicity)


def select(
    evaluate: Callable[[dict[str, Any]], Score | Sequence[Candidate]],
    axes: Sequence[Axis],
    max_rounds: int = 3,
    fixed: dict[str, Any] | None = None,
) -> Selection:
    """Evaluate the full grid of `axes` (plus the `fixed` parameters, passed through), then extend
    every axis whose best or picked value sits on its edge, up to `max_rounds` times; see the module doc."""
    names = [axis.name for axis in axes]
    if len(set(names)) != len(names):
        raise ValueError(f"axis names must be unique; got {names}")
    fixed = dict(fixed or {})
    seen: dict[tuple[Any, ...], list[Trial]] = {}
    grids = {axis.name: list(axis.values) for axis in axes}
    extended: dict[str, list[float]] = {}

    def run(point: dict[str, Any]) -> None:
        key = tuple(point[n] for n in names)
        if key in seen:
            return
        result = evaluate({**fixed, **point})
        candidates = [Candidate({}, result)] if isinstance(result, Score) else list(result)
        if not candidates:
            raise ValueError(f"evaluate returned no score for {point}")
        seen[key] = [Trial({**fixed, **point, **c.extra}, c.score, c.detail) for c in candidates]

    for values in itertools.product(*(axis.values for axis in axes)):
        run(dict(zip(names, values, strict=True)))
    for _ in range(max_rounds):
        trials = [t for group in seen.values() for t in group]
        best, pick = one_se_pick(trials, axes)
        new_points = []
        for axis in axes:
            grid = grids[axis.name]
            if len(axis.values) < 2:
                continue  # a fixed value is not a search
            for anchor in (best, pick):
                value = anchor.params[axis.name]
                direction = -1 if value == min(grid) else 1 if value == max(grid) else 0
                nxt = axis.beyond(value, direction) if direction else None
                if nxt is None or nxt in grid:
                    continue
                grid.append(nxt)
                extended.setdefault(axis.name, []).append(nxt)
                new_points.append({**{n: anchor.params[n] for n in names}, axis.name: nxt})
        if not new_points:
            break
        for point in new_points:
            run(point)
    trials = [t for group in seen.values() for t in group]
    best, pick = one_se_pick(trials, axes)
    return Selection(best, pick, trials, _edges(pick, axes, grids, max_rounds_hit=_more_possible(pick, axes, grids)),
                     extended)


def _more_possible(pick: Trial, axes: Sequence[Axis], grids: dict[str, list[float]]) -> dict[str, bool]:
    """Per axis: whether one more step beyond the pick's edge value would still be allowed by the cap."""
    out = {}
    for axis in axes:
        value, grid = pick.params[axis.name], grids[axis.name]
        direction = -1 if value == min(grid) else 1 if value == max(grid) else 0
        out[axis.name] = bool(direction) and axis.beyond(value, direction) not in (None, *grid)
    return out


def _edges(pick: Trial, axes: Sequence[Axis], grids: dict[str, list[float]],
           max_rounds_hit: dict[str, bool]) -> dict[str, str]:
    edges = {}
    for axis in axes:
        grid, value = grids[axis.name], pick.params[axis.name]
        if len(axis.values) < 2:
            edges[axis.name] = "fixed"
        elif min(grid) < value < max(grid):
            edges[axis.name] = "interior"
        else:
            side = "low" if value == min(grid) else "high"
            edges[axis.name] = f"{side} edge ({'round limit' if max_rounds_hit[axis.name] else 'at cap'})"
    return edges
