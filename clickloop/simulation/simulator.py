"""The simulator core: sessions of simulated users issuing queries, looking at the logging
ranker's pages and clicking and loving results under a click model.

It works on plain data (query texts, the ranker's ranked doc ids per query, graded qrels), so it
runs without any index; `pipeline.simulate` feeds it BM25 rankings. One numpy Generator per day,
seeded from (seed, day), makes every day reproducible on its own.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from clickloop.beir import Qrels
from clickloop.simulation import click_models, exploration
from clickloop.simulation.config import USER_KINDS, SimulatorConfig

DAY_MS = 24 * 3600 * 1000
NO_DOC = -1
# Sub-streams of the seed: the fixed set-up (user pool, query popularity), then one per day.
_SETUP_STREAM, _DAY_STREAM = 0, 1


@dataclass(frozen=True)
class UserPool:
    """Simulated users: a stable client id each, a user id for the logged-in ones, a kind."""

    client_ids: np.ndarray
    user_ids: np.ndarray  # None for anonymous users
    kinds: np.ndarray  # index into USER_KINDS

    @classmethod
    def draw(cls, config: SimulatorConfig, rng: np.random.Generator) -> UserPool:
        n = config.n_users
        # Exact counts per kind (not per-user coin flips), so the shares hold even for small pools.
        n_noisy = round(config.noisy_user_share * n)
        n_adversarial = round(config.adversarial_user_share * n)
        kinds = np.zeros(n, dtype=np.int8)
        shuffled = rng.permutation(n)
        kinds[shuffled[:n_noisy]] = USER_KINDS.index("noisy")
        kinds[shuffled[n_noisy:n_noisy + n_adversarial]] = USER_KINDS.index("adversarial")
        logged_in = rng.random(n) < config.logged_in_share
        client_ids = np.array([f"client-{i:06d}" for i in range(n)], dtype=object)
        user_ids = np.array([f"user-{i:06d}" if logged_in[i] else None for i in range(n)], dtype=object)
        return cls(client_ids, user_ids, kinds)


@dataclass(frozen=True)
class SimulatedDay:
    """One day of traffic. Per-query arrays are [queries], in time order; per-result arrays are
    [queries, top_k], position p holding the result shown at 1-based position p + 1.
    Times are milliseconds since the day's midnight UTC."""

    date: dt.date
    query_ids: np.ndarray
    session_ids: np.ndarray
    client_ids: np.ndarray
    user_ids: np.ndarray
    devices: np.ndarray
    user_kinds: np.ndarray
    source_query_ids: np.ndarray  # the BEIR query id issued
    user_queries: np.ndarray
    exploration_schemes: np.ndarray
    query_time_ms: np.ndarray
    shown: np.ndarray
    doc_ids: np.ndarray
    logging_ranks: np.ndarray  # 1-based rank before exploration; 0 where nothing is shown
    display_propensities: np.ndarray
    grades: np.ndarray
    examination_prob: np.ndarray
    examined: np.ndarray
    click_prob: np.ndarray
    clicked: np.ndarray
    loved: np.ndarray
    impression_time_ms: np.ndarray
    click_time_ms: np.ndarray
    love_time_ms: np.ndarray

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    def counts(self) -> dict[str, int]:
        return {
            "queries": self.n_queries,
            "sessions": len(set(self.session_ids)),
            "impressions": int(self.shown.sum()),
            "clicks": int(self.clicked.sum()),
            "loves": int(self.loved.sum()),
        }


class Simulator:
    """Simulated traffic on the queries of one split, shown by a fixed logging ranking."""

    def __init__(
        self,
        config: SimulatorConfig,
        queries: Mapping[str, str],
        rankings: Mapping[str, Sequence[str]],
        qrels: Qrels,
        seed: int,
    ) -> None:
        if not queries:
            raise ValueError("the simulator needs at least one query to issue")
        missing = sorted(set(queries) - set(rankings))
        if missing:
            raise ValueError(f"no logging ranking for {len(missing)} queries, e.g. {missing[:5]}")
        self.config = config
        self.seed = seed
        self.query_ids = np.array(sorted(queries), dtype=object)
        self.query_texts = np.array([queries[q] for q in self.query_ids], dtype=object)
        self._doc_ids, self._ranked, self._grades = self._page_tables(rankings, click_models.relevance_grades(qrels))
        self.lengths = (self._ranked != NO_DOC).sum(axis=1)
        self.devices = np.array(sorted(config.device_share), dtype=object)
        self._device_p = np.array([config.device_share[d] for d in self.devices])
        self.examination_by_device = np.stack([
            click_models.examination_curve(config.examination, config.eta_by_device.get(d, config.eta), config.top_k)
            for d in self.devices
        ])
        setup = np.random.default_rng([seed, _SETUP_STREAM])
        self.users = UserPool.draw(config, setup)
        popularity = (1.0 + np.arange(len(self.query_ids))) ** -config.query_zipf_exponent
        self.query_popularity = np.empty_like(popularity)
        self.query_popularity[setup.permutation(len(popularity))] = popularity / popularity.sum()
        self._click_tables = np.array([
            config.click_prob_by_grade, [config.noisy_click_prob] * len(config.click_prob_by_grade),
            config.adversarial_click_prob_by_grade,
        ])
        self._love_tables = np.array([
            config.love_prob_by_grade, [0.0] * len(config.love_prob_by_grade), config.adversarial_love_prob_by_grade,
        ])

    def _page_tables(
        self, rankings: Mapping[str, Sequence[str]], grades: Mapping[str, Mapping[str, int]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Doc id vocabulary, and the top_k doc indices and grades of each query (NO_DOC / 0 padded)."""
        k = self.config.top_k
        index: dict[str, int] = {}
        ranked = np.full((len(self.query_ids), k), NO_DOC, dtype=np.int64)
        page_grades = np.zeros((len(self.query_ids), k), dtype=np.int8)
        for row, qid in enumerate(self.query_ids):
            top = list(dict.fromkeys(map(str, rankings[qid])))[:k]  # a ranker listing a doc twice shows it once
            judged = grades.get(qid, {})
            for rank, doc_id in enumerate(top):
                ranked[row, rank] = index.setdefault(doc_id, len(index))
                page_grades[row, rank] = judged.get(doc_id, 0)
        doc_ids = np.array([*index, ""], dtype=object)  # "" at NO_DOC (-1)
        return doc_ids, ranked, page_grades

    def days(self) -> Iterator[SimulatedDay]:
        for day in range(self.config.days):
            yield self.simulate_day(day)

    def simulate_day(self, day: int) -> SimulatedDay:
        config, timing = self.config, self.config.timing
        rng = np.random.default_rng([self.seed, _DAY_STREAM, day])
        date = self.config.start_day() + dt.timedelta(days=day)
        n_sessions = config.sessions_per_day
        per_session = 1 + np.minimum(rng.poisson(config.extra_queries_per_session, n_sessions),
                                     config.max_queries_per_session - 1)
        session_of = np.repeat(np.arange(n_sessions), per_session)
        user_of_session = rng.integers(config.n_users, size=n_sessions)
        device_of_session = rng.choice(len(self.devices), p=self._device_p, size=n_sessions)
        source = rng.choice(len(self.query_ids), p=self.query_popularity, size=len(session_of))
        n_queries, k = len(source), config.top_k
        rows = np.arange(n_queries)[:, None]
        positions = np.arange(k)

        explore = config.exploration
        explored = np.zeros(n_queries, dtype=bool)
        if explore.scheme != "none":
            explored = rng.random(n_queries) < explore.share
        reordering = exploration.identity(n_queries, k)
        randomized = exploration.randomize(explore.scheme, self.lengths[source[explored]], k, explore.n, rng)
        reordering.order[explored] = randomized.order
        reordering.propensity[explored] = randomized.propensity
        shown = positions < self.lengths[source][:, None]
        doc_index = np.where(shown, self._ranked[source][rows, reordering.order], NO_DOC)
        grades = np.where(shown, self._grades[source][rows, reordering.order], 0)

        kinds = self.users.kinds[user_of_session][session_of]
        device = device_of_session[session_of]
        click_prob = np.where(shown, self._click_tables[kinds[:, None], grades], 0.0)
        if config.click_model == "pbm":
            behaviour = click_models.position_based(self.examination_by_device[device], click_prob, shown, rng)
        else:
            behaviour = click_models.cascade(click_prob, shown, rng)
        loved = click_models.loves(behaviour.clicked, self._love_tables[kinds[:, None], grades], rng)

        # Times relative to each query: impressions as the page renders, clicks top-down, a love after its click.
        delay_ms = 1000.0 * timing.action_delay_mean_s
        click_offset = timing.impression_delay_ms + np.cumsum(
            np.where(behaviour.clicked, rng.exponential(delay_ms, (n_queries, k)), 0.0), axis=1)
        love_offset = click_offset + rng.exponential(delay_ms, (n_queries, k))
        page_ms = np.maximum.reduce([
            np.full(n_queries, float(timing.impression_delay_ms)),
            np.where(behaviour.clicked, click_offset, 0.0).max(axis=1),
            np.where(loved, love_offset, 0.0).max(axis=1),
        ])
        query_offset, session_span = _session_offsets(
            session_of, page_ms + rng.exponential(1000.0 * timing.query_gap_mean_s, n_queries), page_ms)
        if (session_span >= DAY_MS).any():
            raise ValueError("a simulated session outlasts its day; lower the simulate.timing delays "
                             "or max_queries_per_session")
        session_start = np.floor(rng.random(n_sessions) * (DAY_MS - session_span))
        query_time = np.floor(session_start[session_of] + query_offset).astype(np.int64)

        # Ids follow time order, as a live system would hand them out.
        by_time = np.argsort(query_time, kind="stable")
        session_rank = np.empty(n_sessions, dtype=np.int64)
        session_rank[np.argsort(session_start, kind="stable")] = np.arange(n_sessions)
        t = query_time[by_time][:, None]
        scheme_names = np.where(explored, explore.scheme, "none").astype(object)
        user_of_query = user_of_session[session_of]
        return SimulatedDay(
            date=date,
            query_ids=np.array([f"{date}-q{i:07d}" for i in range(n_queries)], dtype=object),
            session_ids=np.array([f"{date}-s{s:07d}" for s in session_rank[session_of][by_time]], dtype=object),
            client_ids=self.users.client_ids[user_of_query][by_time],
            user_ids=self.users.user_ids[user_of_query][by_time],
            devices=self.devices[device][by_time],
            user_kinds=np.array(USER_KINDS, dtype=object)[kinds][by_time],
            source_query_ids=self.query_ids[source][by_time],
            user_queries=self.query_texts[source][by_time],
            exploration_schemes=scheme_names[by_time],
            query_time_ms=query_time[by_time],
            shown=shown[by_time],
            doc_ids=self._doc_ids[doc_index][by_time],
            logging_ranks=np.where(shown, reordering.order + 1, 0)[by_time],
            display_propensities=reordering.propensity[by_time],
            grades=grades[by_time],
            examination_prob=behaviour.examination_prob[by_time],
            examined=behaviour.examined[by_time],
            click_prob=click_prob[by_time],
            clicked=behaviour.clicked[by_time],
            loved=loved[by_time],
            impression_time_ms=t + timing.impression_delay_ms,
            click_time_ms=t + np.floor(click_offset[by_time]).astype(np.int64),
            love_time_ms=t + np.floor(love_offset[by_time]).astype(np.int64),
        )


def _session_offsets(session_of: np.ndarray, step_ms: np.ndarray, page_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's start relative to its session's first query (queries of a session are
    consecutive in `session_of`, each taking `step_ms` until the next one), and each session's span."""
    elapsed = np.cumsum(step_ms) - step_ms  # before each query, across all sessions
    first = np.flatnonzero(np.r_[True, session_of[1:] != session_of[:-1]])
    offset = elapsed - elapsed[first][session_of]
    last = np.r_[first[1:], len(session_of)] - 1
    return offset, offset[last] + page_ms[last]
