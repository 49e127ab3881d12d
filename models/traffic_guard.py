"""The traffic guard: clients whose click volume or pattern is implausible, found and set aside with a reason.

Spam, click bots and users who click against everyone else would otherwise teach every feedback model
(propensities, labels, GNOLR, the reward, the recommender) their taste. Per client (`client_id`) over the
window, the guard computes

- `queries`, `impressions`, `clicks`, `loves`, `clicks_per_query`, `deep_click_share` (clicks below
  position 3), reported for every flagged client;
- `click_rate` (clicks / impressions) and `love_rate` (loves / clicks) on the log-odds scale,
  `logit((k + 0.5) / (n + 1))`;
- `crowd_lift`: log of how much more the rest of the crowd clicks what this client clicks than what it
  was shown. Each (query text, document) pair's click rate among the *other* clients' impressions
  (leave-one-out, a light prior at the global rate) is averaged over the client's clicks and over its
  impressions; the ratio is above 1 for users who click what others find relevant and below 1 for
  users who click what others pass over (the simulator's adversarial users, click farms boosting
  an item).

Each statistic is compared with the population by a robust z-score over the clients with enough support
for it (`min_impressions` for the click rate, `min_clicks` for the love rate and the crowd lift):
`(x - median) / (1.4826 * MAD * w)` (the MAD at least `min_spread`), where `w = sqrt(max(1, v / v_median))`
widens the spread for a client whose own sampling variance `v` of the statistic (binomial for the
log-odds, in proportion to 1 / clicks for the crowd lift) exceeds the typical client's: a client with few clicks or
loves is judged against its noise, so it is not flagged on chance (9 loves in 9 clicks), and a heavy one
is judged like a typical one. Checks, each a reason:

- `click_rate_high`, `love_rate_high`, `crowd_disagreement` (z beyond `z_threshold`, on the side named):
  the client's rows are **excluded** from what the feedback models learn (weight 0);
- passes after the first (`passes`) recompute every statistic without the clients excluded so far and
  exclude those now beyond the threshold (many adversaries pollute the crowd's rates and widen the MAD);
- `volume`: more than `max(volume_factor * median, min_volume_queries)` queries in the window: the
  client is **capped** to that many queries (its first ones, by day then query id); the rest of its rows
  are set aside.

Nothing is lost silently: `GuardReport` counts clients flagged, rows and clicks set aside per reason,
with `rows_in = rows_kept + rows_set_aside`, and lists the worst flagged clients with their figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from models.propensity import QUERY, normalized_query

CLIENT = "client_id"
PATTERN_CHECKS = ("click_rate_high", "love_rate_high", "crowd_disagreement")
VOLUME = "volume"
REASONS = (*PATTERN_CHECKS, VOLUME)
MAD_SCALE = 1.4826  # MAD * this estimates the standard deviation of a normal population
DEEP_POSITION = 3  # clicks below this position count as deep


@dataclass
class TrafficGuardConfig:
    """params.yaml section `feedback.traffic_guard`."""

    enabled: bool = True
    # Robust z (in MAD-estimated standard deviations) beyond which a statistic is implausible.
    z_threshold: float = 4.0
    # Support below which a client is never flagged on a rate: impressions for the click rate,
    # clicks for the love rate and the crowd lift.
    min_impressions: int = 50
    min_clicks: int = 8
    # Pattern checks that exclude a client (any of PATTERN_CHECKS).
    checks: list[str] = field(default_factory=lambda: list(PATTERN_CHECKS))
    # Volume cap: queries in the window beyond max(volume_factor * the median client's, min_volume_queries).
    volume_factor: float = 20.0
    min_volume_queries: int = 200
    # Floor on the spread (log-odds units), so a population with MAD 0 does not flag every deviation.
    min_spread: float = 0.05
    # Rounds of the pattern checks: each next one recomputes the statistics without the clients excluded so
    # far (many adversaries pollute the crowd's rates and widen the MAD, hiding some of them).
    passes: int = 2
    # Flagged clients listed in the report (the most extreme first).
    report_clients: int = 20

    def __post_init__(self) -> None:
        unknown = sorted(set(self.checks) - set(PATTERN_CHECKS))
        if unknown:
            raise ValueError(f"feedback.traffic_guard.checks: unknown {unknown}; choose from {PATTERN_CHECKS}")
        if self.z_threshold <= 0 or self.volume_factor <= 1 or self.min_spread <= 0:
            raise ValueError("feedback.traffic_guard: z_threshold and min_spread must be > 0, volume_factor > 1")
        if min(self.min_impressions, self.min_clicks, self.min_volume_queries, self.passes) < 1:
            raise ValueError("feedback.traffic_guard: min_impressions, min_clicks, min_volume_queries, passes "
                             "must be >= 1")


@dataclass(frozen=True)
class GuardResult:
    """The rows the feedback models learn from, the per-client statistics and flags, and the report."""

    kept: pl.DataFrame
    clients: pl.DataFrame
    report: dict[str, Any]


def client_statistics(results: pl.DataFrame) -> pl.DataFrame:
    """One row per client: volume, rates (raw and log-odds), deep-click share and crowd lift."""
    clicked = pl.col("clicked").cast(pl.Int64)
    base = results.select(
        CLIENT, "query_id", normalized_query().alias(QUERY), "doc_id", "position",
        clicked.alias("click"), pl.col("loved").cast(pl.Int64).alias("love"),
    )
    global_rate = float(base["click"].mean()) if base.height else 0.0
    prior = 2.0  # pseudo-impressions at the global click rate in each pair's leave-one-out rate
    pairs = base.group_by(QUERY, "doc_id").agg(pl.len().alias("pair_n"), pl.col("click").sum().alias("pair_k"))
    mine = base.group_by(CLIENT, QUERY, "doc_id").agg(pl.len().alias("n"), pl.col("click").sum().alias("k"))
    crowd = (
        mine.join(pairs, on=[QUERY, "doc_id"])
        .with_columns(((pl.col("pair_k") - pl.col("k") + prior * global_rate)
                       / (pl.col("pair_n") - pl.col("n") + prior)).alias("others_rate"))
        .group_by(CLIENT)
        .agg((pl.col("others_rate") * pl.col("k")).sum().alias("clicked_crowd"),
             (pl.col("others_rate") * pl.col("n")).sum().alias("shown_crowd"))
    )
    stats = (
        base.group_by(CLIENT)
        .agg(
            pl.col("query_id").n_unique().alias("queries"),
            pl.len().alias("impressions"),
            pl.col("click").sum().alias("clicks"),
            pl.col("love").sum().alias("loves"),
            ((pl.col("position") > DEEP_POSITION).cast(pl.Int64) * pl.col("click")).sum().alias("deep_clicks"),
        )
        .join(crowd, on=CLIENT, how="left")
    )
    clicked_mean = pl.col("clicked_crowd") / pl.col("clicks")
    shown_mean = pl.col("shown_crowd") / pl.col("impressions")
    return stats.with_columns(
        (pl.col("clicks") / pl.col("queries")).alias("clicks_per_query"),
        (pl.col("clicks") / pl.col("impressions")).alias("click_rate"),
        _log_odds(pl.col("clicks"), pl.col("impressions")).alias("click_rate_logit"),
        _log_odds_variance(pl.col("clicks"), pl.col("impressions")).alias("click_rate_logit_var"),
        _log_odds(pl.col("loves"), pl.col("clicks")).alias("love_rate_logit"),
        _log_odds_variance(pl.col("loves"), pl.col("clicks")).alias("love_rate_logit_var"),
        pl.when(pl.col("clicks") > 0).then(pl.col("deep_clicks") / pl.col("clicks")).alias("deep_click_share"),
        pl.when((pl.col("clicks") > 0) & (pl.col("shown_crowd") > 0))
        .then((clicked_mean / shown_mean).log()).alias("crowd_lift"),
        # Its noise is that of a mean over the client's clicks: variance in proportion to 1 / clicks (only the
        # ratio to the typical client's matters). The delta method's would grow as the lift falls, hiding
        # exactly the clients that click what the crowd passes over.
        pl.when(pl.col("clicks") > 0).then(1.0 / pl.col("clicks")).alias("crowd_lift_var"),
    ).drop("clicked_crowd", "shown_crowd", "deep_clicks").sort(CLIENT)


def flag_clients(stats: pl.DataFrame, config: TrafficGuardConfig) -> pl.DataFrame:
    """`stats` with a robust z per pattern statistic, a volume cap, and `reasons` (list) and `action`
    (`exclude`, `cap` or null) per client."""
    specs = {  # check: (statistic, support column, minimum support, +1 high is implausible / -1 low)
        "click_rate_high": ("click_rate_logit", "impressions", config.min_impressions, 1),
        "love_rate_high": ("love_rate_logit", "clicks", config.min_clicks, 1),
        "crowd_disagreement": ("crowd_lift", "clicks", config.min_clicks, -1),
    }
    flags = []
    for check, (column, support, minimum, side) in specs.items():
        supported = (pl.col(support) >= minimum) & pl.col(column).is_not_null()
        values = stats.filter(supported)[column]
        z_name = f"{column}_z"
        if values.len() < 3:  # no population to compare with
            stats = stats.with_columns(pl.lit(None, dtype=pl.Float64).alias(z_name))
        else:
            # The MAD spread holds the sampling noise of a typical client; a client noisier than that (fewer
            # clicks or impressions) is judged against a spread widened by its noise relative to the typical.
            median = float(values.median())
            spread = max(MAD_SCALE * float((values - median).abs().median()), config.min_spread)
            typical = float(stats.filter(supported)[f"{column}_var"].median())
            widen = (pl.col(f"{column}_var") / typical).clip(lower_bound=1.0).sqrt() if typical > 0 else pl.lit(1.0)
            stats = stats.with_columns(pl.when(supported).then(
                (pl.col(column) - median) / (spread * widen)).alias(z_name))
        if check in config.checks:
            flags.append(pl.when(side * pl.col(z_name) > config.z_threshold).then(pl.lit(check)))
    cap = volume_cap(stats["queries"], config)
    flags.append(pl.when(pl.col("queries") > cap).then(pl.lit(VOLUME)))
    stats = stats.with_columns(pl.concat_list(flags).list.drop_nulls().alias("reasons"))
    return stats.with_columns(
        pl.when(pl.col("reasons").list.set_intersection(list(PATTERN_CHECKS)).list.len() > 0)
        .then(pl.lit("exclude"))
        .when(pl.col("reasons").list.contains(VOLUME)).then(pl.lit("cap"))
        .otherwise(pl.lit(None, dtype=pl.String)).alias("action"),
        pl.lit(cap).alias("query_cap"),
    )


def volume_cap(queries: pl.Series, config: TrafficGuardConfig) -> int:
    """Queries a client may contribute in the window."""
    median = float(queries.median()) if queries.len() else 0.0
    return max(math.ceil(config.volume_factor * median), config.min_volume_queries)


def guard(results: pl.DataFrame, config: TrafficGuardConfig) -> GuardResult:
    """Flag implausible clients in the ingested results table and set their rows aside (module docstring)."""
    if not config.enabled or results.is_empty() or CLIENT not in results.columns:
        reason = "disabled" if not config.enabled else "no logged results" if results.is_empty() else "no client_id"
        return GuardResult(results, pl.DataFrame(), {"skipped": reason, "rows_in": results.height,
                                                     "rows_kept": results.height, "rows_set_aside": 0})
    clients = flag_clients(client_statistics(results), config).with_columns(pl.lit(1).alias("pass"))
    for round_ in range(2, config.passes + 1):
        excluded = clients.filter(pl.col("action") == "exclude")[CLIENT].implode()
        again = flag_clients(client_statistics(results.filter(~pl.col(CLIENT).is_in(excluded))), config)
        newly = again.filter((pl.col("action") == "exclude") & ~pl.col(CLIENT).is_in(excluded))
        if newly.is_empty():
            break
        newly = newly.with_columns(pl.lit(round_).alias("pass"), pl.lit(clients["query_cap"][0]).alias("query_cap"))
        clients = pl.concat([clients.filter(~pl.col(CLIENT).is_in(newly[CLIENT].implode())),
                             newly.select(clients.columns)]).sort(CLIENT)
    action = clients.select(CLIENT, "action", "query_cap")
    marked = results.with_row_index("_row").join(action, on=CLIENT, how="left")
    # Capped clients keep their first `query_cap` queries (by day, then query id).
    order = (marked.filter(pl.col("action") == "cap").select(CLIENT, "day", "query_id").unique()
             .sort(CLIENT, "day", "query_id")
             .with_columns(pl.int_range(pl.len()).over(CLIENT).alias("_query_rank"))
             .select(CLIENT, "query_id", "_query_rank"))
    marked = marked.join(order, on=[CLIENT, "query_id"], how="left")
    capped = (pl.col("action") == "cap") & (pl.col("_query_rank") >= pl.col("query_cap"))
    set_aside = (pl.col("action") == "exclude") | capped
    marked = marked.with_columns(set_aside.fill_null(False).alias("_aside"))
    kept = marked.filter(~pl.col("_aside")).sort("_row").select(results.columns)
    return GuardResult(kept, clients, _report(results, marked, clients, config))


def _report(results: pl.DataFrame, marked: pl.DataFrame, clients: pl.DataFrame,
            config: TrafficGuardConfig) -> dict[str, Any]:
    aside = marked.filter(pl.col("_aside"))
    flagged = clients.filter(pl.col("reasons").list.len() > 0)
    by_reason = {}
    for reason in REASONS:
        mine = flagged.filter(pl.col("reasons").list.contains(reason))[CLIENT]
        rows = aside.filter(pl.col(CLIENT).is_in(mine.implode()))
        by_reason[reason] = {"clients": mine.len(), "rows_set_aside": rows.height,
                             "clicks_set_aside": int(rows["clicked"].sum())}
    by_action = {}
    for action in ("exclude", "cap"):
        rows = aside.filter(pl.col("action") == action)
        by_action[action] = {"clients": clients.filter(pl.col("action") == action).height,
                             "rows_set_aside": rows.height, "clicks_set_aside": int(rows["clicked"].sum()),
                             "loves_set_aside": int(rows["loved"].sum())}
    z_columns = [c for c in clients.columns if c.endswith("_z")]
    worst = (flagged.with_columns(pl.max_horizontal([pl.col(c).abs() for c in z_columns]).alias("_worst"))
             .sort("_worst", descending=True, nulls_last=True).head(config.report_clients))
    listed = ["client_id", "reasons", "action", "pass", "queries", "impressions", "clicks", "loves", "click_rate",
              "clicks_per_query", "deep_click_share", "crowd_lift", *z_columns]
    return {
        "rows_in": results.height,
        "rows_kept": results.height - aside.height,
        "rows_set_aside": aside.height,
        "clicks_in": int(results["clicked"].sum()),
        "clicks_set_aside": int(aside["clicked"].sum()),
        "clients": clients.height,
        "clients_flagged": flagged.height,
        "clients_flagged_by_pass": {str(p): int((flagged["pass"] == p).sum()) for p in range(1, config.passes + 1)},
        "query_cap": int(clients["query_cap"][0]),
        "by_reason": by_reason,
        "by_action": by_action,
        "population": {c: _quantiles(clients[c]) for c in ("queries", "click_rate", "crowd_lift")},
        "flagged": [_plain(row) for row in worst.select(listed).to_dicts()],
    }


def _log_odds(k: pl.Expr, n: pl.Expr) -> pl.Expr:
    p = (k + 0.5) / (n + 1.0)
    return (p / (1.0 - p)).log()


def _log_odds_variance(k: pl.Expr, n: pl.Expr) -> pl.Expr:
    """Sampling variance of `_log_odds(k, n)` (binomial, with the same half-counts)."""
    return 1.0 / (k + 0.5) + 1.0 / (n - k + 0.5)


def _quantiles(values: pl.Series) -> dict[str, float | None]:
    values = values.drop_nulls()
    if values.is_empty():
        return {"p10": None, "median": None, "p90": None}
    return {name: round(float(values.quantile(q)), 4) for name, q in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))}


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
