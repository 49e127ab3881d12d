"""The promotion gate: is the retrained challenger not worse than the serving champion beyond noise?

Both are measured now, on the same data, by the evaluate stage's own code: the challenger's figures are
what `dvc repro` just wrote (metrics/evaluate.json, data/runs/), the champion is loaded from its version
folder and evaluated again on today's judgments and today's logs. So a difference is a difference of the
retrievers, not of the data each was measured on.

- Judged metrics (where the dataset has judgments): per query, paired. The mean of the per-query
  differences (challenger - champion) with its standard error; the challenger is worse beyond noise when
  the one-sided upper confidence bound of that mean is below `-judged_tolerance`.
- Off-policy estimates (IPS clicks@k on the logged queries, where there are logs): the two estimates
  with their standard errors, combined as independent (sqrt(se1^2 + se2^2)). They come from the same
  traffic, so are positively correlated and the true error of the difference is smaller: the test errs
  towards keeping a challenger, never towards rejecting one for noise.
- Every comparison is one test; with `correction: bonferroni` the confidence level is split among them,
  so that retraining five retrievers does not reject an equal challenger five times as often.
- Guards: the challenger must load (every index and the recommender), its p95 search latency per mode
  must stay within `latency.max_ratio` x the champion's (+ `slack_ms`, timings on a busy machine being
  noisy) and under `max_p95_ms`; its size within `size.max_ratio` x the champion's and under `max_bytes`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import ir_measures
import numpy as np
from scipy.stats import norm

from clickloop.beir import BeirDataset, Qrels, Run, read_trec_run
from indexing import SearchConfig, Searcher
from indexing.retriever import FAMILIES
from indexing.serving import INDICES_DIR, MODELS_DIR
from nightly.versions import Challenger
from pipeline.evaluate import EvaluateConfig, counterfactual_report, judged_report

log = logging.getLogger(__name__)

CORRECTIONS = ("bonferroni", "none")


@dataclass
class LatencyGuard:
    queries: int = 50          # queries timed per mode: the judged split's, else logged ones, else titles
    k: int = 10
    max_ratio: float = 1.5     # challenger p95 <= champion p95 x max_ratio + slack_ms
    slack_ms: float = 5.0      # tiny indices answer in a few ms, where scheduling noise alone doubles a p95
    max_p95_ms: float | None = None  # an absolute ceiling (also on the first night, with no champion)


@dataclass
class SizeGuard:
    max_ratio: float = 2.0     # the challenger's version folder <= champion's x max_ratio
    max_bytes: int | None = None


@dataclass
class GateConfig:
    alpha: float = 0.05                  # one-sided error rate of calling an equal challenger worse
    correction: str = "bonferroni"       # bonferroni | none: over all the comparisons of a night
    judged_metrics: list[str] = field(default_factory=lambda: ["nDCG@10"])
    judged_tolerance: float = 0.0        # a mean drop within this is never a rejection
    offpolicy_tolerance: float = 0.0
    retrievers: list[str] = field(default_factory=list)  # compared modes; [] = evaluate.retrievers both serve
    latency: LatencyGuard = field(default_factory=LatencyGuard)
    size: SizeGuard = field(default_factory=SizeGuard)

    def __post_init__(self) -> None:
        if self.correction not in CORRECTIONS:
            raise ValueError(f"params nightly.gate.correction: {self.correction!r}, not one of {CORRECTIONS}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"params nightly.gate.alpha: {self.alpha} is not in (0, 1)")


@dataclass
class Comparison:
    """One metric of one retriever, champion against challenger."""

    kind: str            # judged | offpolicy
    retriever: str
    measure: str
    champion: float
    challenger: float
    difference: float    # challenger - champion
    stderr: float
    n: int               # queries paired (judged) or logged queries (off-policy, the challenger's)
    tolerance: float
    upper: float = math.nan  # one-sided upper confidence bound of the difference
    worse: bool = False

    def describe(self) -> str:
        how = f"paired over {self.n} queries" if self.kind == "judged" else "IPS on the logged queries"
        return (f"{self.retriever} {self.measure}: {self.champion:.4f} -> {self.challenger:.4f} ({how}, difference "
                f"{self.difference:+.4f} +- {self.stderr:.4f}, upper bound {self.upper:+.4f} "
                f"{'<' if self.worse else '>='} {-self.tolerance:+.4f})")


@dataclass
class GateResult:
    promote: bool
    reasons: list[str]                       # why not (rejected), or notes (promoted)
    checks: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"promote": self.promote, "reasons": self.reasons, "checks": self.checks}


# -- statistics (pure) ---------------------------------------------------------------------------


def per_query(qrels: Qrels, run: Run, measure: str) -> dict[str, float]:
    """`measure` for every judged query; a query the run misses scores 0, as in `clickloop.metrics.evaluate`."""
    parsed = ir_measures.parse_measure(measure)
    complete = {qid: run.get(qid) or {} for qid in qrels}
    values = dict.fromkeys(qrels, 0.0)
    for row in ir_measures.iter_calc([parsed], qrels, complete):
        values[row.query_id] = float(row.value)
    return values


def paired(champion: Mapping[str, float], challenger: Mapping[str, float]) -> tuple[float, float, int]:
    """Mean per-query difference (challenger - champion) over the queries both score, its standard error, n."""
    queries = sorted(set(champion) & set(challenger))
    if not queries:
        return math.nan, math.nan, 0
    diffs = np.array([challenger[q] - champion[q] for q in queries])
    stderr = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else math.nan
    return float(diffs.mean()), stderr, len(diffs)


def judged_comparisons(
    qrels: Qrels, champion: Mapping[str, Run], challenger: Mapping[str, Run], measures: Sequence[str],
    tolerance: float,
) -> list[Comparison]:
    out = []
    for mode in sorted(set(champion) & set(challenger)):
        for measure in measures:
            old, new = per_query(qrels, champion[mode], measure), per_query(qrels, challenger[mode], measure)
            difference, stderr, n = paired(old, new)
            out.append(Comparison("judged", mode, measure, float(np.mean(list(old.values()))),
                                  float(np.mean(list(new.values()))), difference, stderr, n, tolerance))
    return out


def offpolicy_comparisons(
    champion: Mapping[str, Mapping[str, float]], challenger: Mapping[str, Mapping[str, float]], tolerance: float,
    n_queries: int = 0,
) -> list[Comparison]:
    """Compare each retriever's `ips_*` estimates (evaluate's rows: value and `<key>_stderr`)."""
    out = []
    for mode in sorted(set(champion) & set(challenger)):
        for key, new in challenger[mode].items():
            if not key.startswith("ips_") or key.endswith(("_stderr", "_coverage")) or key not in champion[mode]:
                continue
            old = champion[mode][key]
            se_old = champion[mode].get(f"{key}_stderr", math.nan)
            se_new = challenger[mode].get(f"{key}_stderr", math.nan)
            out.append(Comparison("offpolicy", mode, key, old, new, new - old, math.hypot(se_old, se_new), n_queries,
                                  tolerance))
    return out


def judge(comparisons: list[Comparison], alpha: float, correction: str) -> float:
    """Mark each comparison worse or not; the z used. A comparison without a standard error (one query,
    one logged query) is not a test: it is kept in the report and never rejects."""
    testable = [c for c in comparisons if math.isfinite(c.stderr) and math.isfinite(c.difference)]
    level = alpha / len(testable) if correction == "bonferroni" and testable else alpha
    z = float(norm.ppf(1 - level))
    for c in testable:
        c.upper = c.difference + z * c.stderr
        c.worse = c.upper < -c.tolerance
    return z


# -- evidence (loads and searches) ---------------------------------------------------------------


def latency_queries(evaluate: EvaluateConfig, n: int) -> list[str]:
    """Texts to time: the judged split's queries, else the most frequent logged ones, else titles."""
    dataset = BeirDataset(Path(evaluate.dataset_dir))
    texts = list(dataset.queries(evaluate.split).values()) if evaluate.split in dataset.splits() else []
    if len(texts) < n and Path(evaluate.results_file).is_file():
        import polars as pl

        logged = pl.read_parquet(evaluate.results_file, columns=["user_query"])
        texts += logged["user_query"].value_counts(sort=True)["user_query"].to_list()
    if len(texts) < n:
        texts += [doc.title or doc.text[:200] for doc in dataset.corpus()]
    return [t for t in texts if t and t.strip()][:n]


def measure_latency(searchers: Mapping[str, Searcher], modes: Sequence[str], queries: Sequence[str],
                    k: int) -> dict[str, dict[str, float]]:
    """p95 milliseconds of `search` per searcher and mode. The searchers take turns on each query (in
    alternating order), so a burst of load on the machine falls on both rather than on one."""
    names = list(searchers)
    times: dict[str, dict[str, list[float]]] = {name: {mode: [] for mode in modes} for name in names}
    warmup = min(3, len(queries) // 4)
    for i, query in enumerate(queries):
        for mode in modes:
            for name in names if i % 2 == 0 else reversed(names):
                start = time.perf_counter()
                searchers[name].search(query, k=k, mode=mode)
                if i >= warmup:
                    times[name][mode].append((time.perf_counter() - start) * 1000)
    return {name: {mode: float(np.percentile(values, 95)) if values else math.nan
                   for mode, values in by_mode.items()} for name, by_mode in times.items()}


def _read_runs(evaluate: EvaluateConfig, modes: Sequence[str]) -> dict[str, Run]:
    runs_dir = Path(evaluate.runs_dir)
    return {mode: read_trec_run(runs_dir / f"{mode}.trec") for mode in modes if (runs_dir / f"{mode}.trec").is_file()}


def unchanged_modes(searcher: Searcher, modes: Sequence[str], challenger: Mapping[str, str],
                    champion: Mapping[str, str]) -> set[str]:
    """The modes whose artifacts are the champion's, byte for byte (`challenger` and `champion`: component name
    -> content hash, as in a version manifest): a retriever whose index folder (and the encoder it loads) did
    not change, a pipeline all of whose modes and whose stored choice did not. Their comparisons would be
    exact ties, so the gate spends no time on them."""
    def same(name: str) -> bool:
        return challenger.get(name) == champion.get(name)

    kinds = {mode: family.kind for family in FAMILIES.values() for mode in family.modes}
    unchanged = {mode for mode in modes if mode in kinds and same(f"{INDICES_DIR}/{kinds[mode]}")
                 and same(f"{MODELS_DIR}/{kinds[mode]}")}
    choice = all(same(name) for name in {*challenger, *champion} if name.endswith(".json")
                 and name.startswith(f"{INDICES_DIR}/"))
    for mode in modes:
        if mode not in kinds and choice and set(searcher.pipeline_spec(mode).modes) <= unchanged:
            unchanged.add(mode)
    return unchanged


def run_gate(
    config: GateConfig, evaluate: EvaluateConfig, settings: SearchConfig, challenger: Challenger,
    challenger_bytes: int, champion_dir: Path | None, champion_bytes: int | None, workdir: Path,
    unchanged: Callable[[Searcher, Sequence[str]], set[str]] | None = None,
) -> GateResult:
    """Load both sides, compare, apply the guards. `workdir`: scratch space for the champion's runs;
    `unchanged(challenger searcher, modes)`: the modes not to compare (identical to the champion's)."""
    reasons: list[str] = []
    checks: dict[str, Any] = {}
    try:
        new = Searcher(challenger.index_root, settings=settings)
        if challenger.recommender_dir is not None and challenger.recommender_dir.is_dir():
            from indexing.recommender import Recommender  # the training stack: paid only when there is one

            Recommender(challenger.recommender_dir)
    except Exception as e:  # whatever stops it loading stops it serving
        return GateResult(False, [f"the challenger does not load: {type(e).__name__}: {e}"], checks)
    old: Searcher | None = None
    if champion_dir is not None:
        try:
            old = Searcher(champion_dir / INDICES_DIR, settings=settings)
        except Exception as e:  # a champion this code cannot serve any more is no yardstick
            reasons.append(f"the champion {champion_dir.name} no longer loads ({type(e).__name__}: {e}); "
                           "the challenger is checked against the guards only")
    # What the evaluate stage scores: its retrievers and every pipeline of params search (getattr: a search
    # section without pipelines is one from before them).
    wanted = config.retrievers or list(dict.fromkeys([*evaluate.retrievers, *getattr(settings, "pipelines", {})]))
    served = [m for m in wanted if m in new.modes and (old is None or m in old.modes)]
    identical = unchanged(new, served) if unchanged is not None and old is not None else set()
    modes = [m for m in served if m not in identical]
    checks["retrievers"], checks["identical"] = modes, sorted(identical)

    # Timed first, on searchers that have answered nothing yet: evaluating the champion below fills its
    # dense query-vector cache with these very queries, and a warm cache against a cold one is no comparison.
    latency_modes = modes or ([] if identical else list(new.modes))
    queries = latency_queries(evaluate, config.latency.queries)
    timed = measure_latency({"champion": old, "challenger": new} if old else {"challenger": new}, latency_modes,
                            queries, config.latency.k) if queries else {}
    checks["latency_p95_ms"] = timed
    for mode, p95 in timed.get("challenger", {}).items():
        limit = math.inf
        if "champion" in timed and math.isfinite(timed["champion"][mode]):
            limit = timed["champion"][mode] * config.latency.max_ratio + config.latency.slack_ms
        if config.latency.max_p95_ms is not None:
            limit = min(limit, config.latency.max_p95_ms)
        if p95 > limit:
            reasons.append(f"too slow: {mode} p95 {p95:.1f} ms > {limit:.1f} ms allowed")

    comparisons: list[Comparison] = []
    if old is not None and modes:
        compared = replace(evaluate, retrievers=modes, runs_dir=str(workdir / "champion_runs"))
        judged_report(compared, old)  # writes the champion's runs on today's judged queries, if any
        dataset = BeirDataset(Path(evaluate.dataset_dir))
        if evaluate.split in dataset.splits():
            champion_runs = _read_runs(compared, modes)  # the runs judged_report just wrote
            comparisons += judged_comparisons(dataset.qrels(evaluate.split), champion_runs,
                                              _read_runs(evaluate, modes), config.judged_metrics,
                                              config.judged_tolerance)
        else:
            checks["judged"] = f"skipped: no judgments for split {evaluate.split!r}"
        champion_offpolicy = counterfactual_report(compared, old)
        metrics_file = Path(evaluate.metrics_file)
        challenger_offpolicy = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        if champion_offpolicy:
            comparisons += offpolicy_comparisons(champion_offpolicy, challenger_offpolicy, config.offpolicy_tolerance)
        else:
            checks["offpolicy"] = "skipped: no logs with an examination curve"
    checks["alpha"], checks["correction"] = config.alpha, config.correction
    checks["z"] = judge(comparisons, config.alpha, config.correction) if comparisons else None
    checks["comparisons"] = [asdict(c) for c in comparisons]
    reasons += [f"worse beyond noise: {c.describe()}" for c in comparisons if c.worse]

    checks["bytes"] = {"challenger": challenger_bytes, "champion": champion_bytes}
    size_limit = math.inf if champion_bytes is None else champion_bytes * config.size.max_ratio
    if config.size.max_bytes is not None:
        size_limit = min(size_limit, config.size.max_bytes)
    if challenger_bytes > size_limit:
        reasons.append(f"too large: {challenger_bytes} bytes > {size_limit:.0f} allowed")

    rejected = any(c.worse for c in comparisons) or any(r.startswith(("too slow", "too large")) for r in reasons)
    return GateResult(not rejected, reasons, checks)

