"""Semi-synthetic check of the recommenders on the embedded default: users with known preferences,
logs of three sizes, items that were never shown (cold).

How the project's simulator models users (clickloop/simulation): a session's user is drawn
uniformly from the pool and its queries from the split's queries by a global Zipf popularity,
independently of the user; relevance is the query's graded judgment. So its users have no
lasting taste of their own, and a user -> item recommender has nothing personal to learn from
its logs. This benchmark keeps everything else of the embedded default and adds the one missing
piece, a per-user interest:

- catalog, train queries, graded judgments: `data/dataset` (the dataset stage's output);
- users: the simulator's pool (its seed and `simulate.n_users`), the logged-in ones; each gets
  `interests` train queries drawn by the simulator's Zipf query popularity. Its true preference
  for an item is the highest grade the item has for any of its interests (0-4);
- pages: the logging ranker's top 10 for the query, as the embedded default's simulation showed
  them (BM25, read from `data/simulated_truth/results.parquet`: each query's shown documents in
  order of their mean position);
- behaviour: the simulator's position-based model with params.yaml's examination curve, click
  and love probabilities by grade (normal users only: no noisy or adversarial ones);
- learning: the feedback stage's code path (`interactions_from_results` with the true examination
  curve, then `FactorizationModel.fit` with params.yaml's `feedback.recommender` settings, method
  varied), popularity, item-kNN, and the content-aware item tower fed the dense index's
  all-MiniLM-L6-v2 document vectors (`data/indices/dense`);
- truth: per sampled user, nDCG@10 (gains 2^grade - 1) of the ranking of every catalog item the
  user did not click; "cold": only the items no log ever showed, ranked among themselves. Models
  without a text tower cannot score an item absent from their matrix: they rank those after the
  others ("all") and, for "cold", are scored as a random order (the mean of 5 shuffles).

Needs `dvc repro` of the embedded default first (data/dataset, data/indices/dense,
data/simulated_truth). Run:
`OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 15 .venv/bin/python -m bench.recommender_semisynthetic`
(writes reports/recommender_robustness_semisynthetic.json; bench.recommender_report merges).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.scifact_logs import portable
from clickloop.atomic import write_json
from clickloop.beir import BeirDataset
from clickloop.params import load_params, section
from clickloop.simulation import SimulatorConfig, examination_curve
from clickloop.simulation.simulator import UserPool
from indexing.dense import stored_vectors
from models.recommendation import FactorizationModel, RecommenderConfig, interactions_from_results
from models.recommendation.baselines import item_knn_scores, popularity_scores

FACTORISATIONS = {
    "naive": {"method": "naive"},
    "relmf": {"method": "relmf"},
    "gnolr": {"method": "gnolr"},
    "gnolr_text": {"method": "gnolr", "text_tower": True},
    "naive_text": {"method": "naive", "text_tower": True},
}
METHODS = ("popularity", "item_knn", *FACTORISATIONS)


@dataclass
class SemiSyntheticConfig:
    dataset_dir: Path = Path("data/dataset")
    dense_dir: Path = Path("data/indices/dense")
    truth_file: Path = Path("data/simulated_truth/results.parquet")
    out: Path = Path("reports/recommender_robustness_semisynthetic.json")
    sessions: tuple[int, ...] = (3000, 15000, 60000)  # the embedded default logs 3,000 a day
    interests: int = 3
    eval_users: int = 400
    knn_neighbours: int = 100
    seed: int = 13
    methods: tuple[str, ...] = METHODS
    recommender: RecommenderConfig = field(default_factory=RecommenderConfig)  # params feedback.recommender
    simulate: SimulatorConfig = field(default_factory=SimulatorConfig)


@dataclass
class World:
    item_ids: list[str]
    features: np.ndarray  # [I, 384] dense text vectors
    pages: np.ndarray  # [Q, 10] item rows shown for each train query, best first (-1 padded)
    query_grades: np.ndarray  # [Q, I] graded relevance
    user_ids: list[str]
    interests: np.ndarray  # [U, interests] query rows
    truth: np.ndarray  # [U, I] true preference grade

    @classmethod
    def build(cls, config: SemiSyntheticConfig) -> World:
        dataset = BeirDataset(config.dataset_dir)
        item_ids = [doc.doc_id for doc in dataset.corpus()]
        row = {d: i for i, d in enumerate(item_ids)}
        vectors = stored_vectors(config.dense_dir)
        dense_ids = json.loads((config.dense_dir / "doc_ids.json").read_text())
        if vectors is None or len(dense_ids) != len(item_ids):
            raise ValueError(f"{config.dense_dir} does not hold exact vectors of {config.dataset_dir}: dvc repro index")
        features = np.zeros((len(item_ids), vectors.shape[1]), dtype=np.float32)
        features[[row[d] for d in dense_ids]] = vectors
        qrels = dataset.qrels(config.simulate.split)
        query_ids = sorted(qrels)
        grades = np.zeros((len(query_ids), len(item_ids)), dtype=np.int8)
        for q, qid in enumerate(query_ids):
            for doc, grade in qrels[qid].items():
                if doc in row:
                    grades[q, row[doc]] = min(int(grade), 4)
        shown = (pl.read_parquet(config.truth_file, columns=["beir_query_id", "doc_id", "position"])
                 .group_by("beir_query_id", "doc_id").agg(pl.col("position").mean())
                 .sort("beir_query_id", "position"))
        pages = np.full((len(query_ids), config.simulate.top_k), -1, dtype=np.int64)
        q_row = {qid: q for q, qid in enumerate(query_ids)}
        for (qid,), group in shown.group_by("beir_query_id"):
            docs = [row[d] for d in group.sort("position")["doc_id"].to_list() if d in row][: config.simulate.top_k]
            if qid in q_row:
                pages[q_row[qid], : len(docs)] = docs
        setup = np.random.default_rng([config.seed, 0])  # the simulator's set-up stream: its user pool
        pool = UserPool.draw(config.simulate, setup)
        logged_in = [u for u in pool.user_ids.tolist() if u is not None]
        popularity = (1.0 + np.arange(len(query_ids))) ** -config.simulate.query_zipf_exponent
        rng = np.random.default_rng([config.seed, 7])
        weights = np.empty_like(popularity)
        weights[rng.permutation(len(popularity))] = popularity / popularity.sum()
        interests = np.stack([rng.choice(len(query_ids), config.interests, replace=False, p=weights)
                              for _ in logged_in])
        truth = grades[interests].max(axis=1)
        return cls(item_ids, features, pages, grades, logged_in, interests, truth)


def simulate_logs(world: World, sessions: int, config: SemiSyntheticConfig, seed: int) -> pl.DataFrame:
    """`sessions` sessions of one query each: (user_id, doc_id, position, actions) rows."""
    sim = config.simulate
    rng = np.random.default_rng([seed, sessions])
    users = rng.integers(len(world.user_ids), size=sessions)
    queries = world.interests[users, rng.integers(world.interests.shape[1], size=sessions)]
    docs = world.pages[queries]
    shown = docs >= 0
    grades = np.where(shown, world.query_grades[queries[:, None], np.maximum(docs, 0)], 0)
    theta = examination_curve(sim.examination, sim.eta, sim.top_k)
    examined = rng.random(docs.shape) < np.where(shown, theta[None, :], 0.0)
    clicked = examined & (rng.random(docs.shape) < np.asarray(sim.click_prob_by_grade)[grades])
    loved = clicked & (rng.random(docs.shape) < np.asarray(sim.love_prob_by_grade)[grades])
    s, p = np.nonzero(shown)
    actions = [["impression", *(["click"] if c else []), *(["love"] if v else [])]
               for c, v in zip(clicked[s, p].tolist(), loved[s, p].tolist(), strict=True)]
    return pl.DataFrame({"user_id": np.asarray(world.user_ids, dtype=object)[users[s]].tolist(),
                         "doc_id": [world.item_ids[d] for d in docs[s, p].tolist()],
                         "position": (p + 1).astype(np.int64), "actions": actions})


def ndcg_at_10(scores: np.ndarray, grades: np.ndarray) -> float:
    """nDCG@10 of one ranking (gains 2^grade - 1; ties in input order); nan when nothing is relevant."""
    gains = 2.0 ** grades - 1
    if not gains.any():
        return float("nan")
    discounts = 1 / np.log2(np.arange(2, 12))
    top = np.argsort(-scores, kind="stable")[:10]
    ideal = np.sort(gains)[::-1][:10]
    return float((gains[top] * discounts[: len(top)]).sum() / (ideal * discounts[: len(ideal)]).sum())


def evaluate(full_scores: np.ndarray, can_score_cold: bool, world: World, users: np.ndarray, clicked: np.ndarray,
             cold: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    """Mean true nDCG@10 over `users` on all unclicked items and on the cold items alone."""
    all_values, cold_values = [], []
    for n, u in enumerate(users):
        keep = ~clicked[n]
        all_values.append(ndcg_at_10(full_scores[n][keep], world.truth[u][keep]))
        if can_score_cold:
            cold_values.append(ndcg_at_10(full_scores[n][cold], world.truth[u][cold]))
        else:
            cold_values.append(np.nanmean([ndcg_at_10(rng.random(cold.sum()), world.truth[u][cold])
                                           for _ in range(5)]))
    return {"all": float(np.nanmean(all_values)), "cold": float(np.nanmean(cold_values)),
            "users": int(np.isfinite(all_values).sum())}


def run_size(world: World, sessions: int, config: SemiSyntheticConfig, seed: int) -> dict[str, Any]:
    logs = simulate_logs(world, sessions, config, seed)
    sim = config.simulate
    theta = examination_curve(sim.examination, sim.eta, sim.top_k)
    data = interactions_from_results(logs, theta.tolist(), ["click", "love"], 10**9)
    item_row = {d: i for i, d in enumerate(world.item_ids)}
    matrix_items = np.array([item_row[d] for d in data.item_ids])
    cold = np.ones(len(world.item_ids), dtype=bool)
    cold[matrix_items] = False
    user_row = {u: i for i, u in enumerate(world.user_ids)}
    rng = np.random.default_rng([seed, sessions, 1])
    eval_ids = rng.choice(data.user_ids, min(config.eval_users, len(data.user_ids)), replace=False)
    data_rows = np.array([data.user_ids.index(u) for u in eval_ids])
    users = np.array([user_row[u] for u in eval_ids])
    clicked = np.zeros((len(users), len(world.item_ids)), dtype=bool)
    clicked[:, matrix_items] = data.positives[data_rows]
    out: dict[str, Any] = {"sessions": sessions, "users_in_logs": len(data.user_ids), "shown_items": len(data.item_ids),
                           "cold_items": int(cold.sum()), "clicked_pairs": int(data.positives.sum()), "methods": {}}
    for method in config.methods:
        started = time.perf_counter()
        full = np.full((len(users), len(world.item_ids)), -1e9, dtype=np.float64)  # unknown items rank last
        can_score_cold = False
        if method == "popularity":
            full[:, matrix_items] = popularity_scores(data, data_rows)
        elif method == "item_knn":
            full[:, matrix_items] = item_knn_scores(data, config.knn_neighbours, data_rows)
        else:
            model_config = replace(config.recommender, **FACTORISATIONS[method], seed=seed)
            model = FactorizationModel.fit(data, model_config, item_features=world.features[matrix_items])
            full[:, matrix_items] = model.logits(data_rows)
            if model_config.text_tower:
                vectors = model.score_vectors()
                cold_items = model.cold_item_vectors(world.features[cold])
                full[:, cold] = vectors.user[data_rows] @ cold_items.T + vectors.user_offset[data_rows, None]
                can_score_cold = True
        result = evaluate(full, can_score_cold, world, users, clicked, cold, rng)
        out["methods"][method] = {**result, "scores_cold_items": can_score_cold,
                                  "seconds": time.perf_counter() - started}
        print(f"{sessions} sessions {method}: nDCG@10 all {result['all']:.4f} cold {result['cold']:.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    return out


def run(config: SemiSyntheticConfig) -> dict[str, Any]:
    started = time.perf_counter()
    world = World.build(config)
    report: dict[str, Any] = {"config": portable(json.loads(json.dumps(asdict(config), default=str))), "sizes": [],
                              "users": len(world.user_ids), "items": len(world.item_ids)}
    # The truth's own ceiling and a floor: an oracle ranking by true preference, and a random one.
    for sessions in config.sessions:
        report["sizes"].append(run_size(world, sessions, config, config.seed))
        config.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(config.out, {**report, "wall_seconds": time.perf_counter() - started})
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SemiSyntheticConfig.out)
    parser.add_argument("--sessions", type=int, nargs="+", default=list(SemiSyntheticConfig.sessions))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    from pipeline.feedback import FeedbackConfig  # the stage's own params section
    feedback = section("feedback", FeedbackConfig)
    config = SemiSyntheticConfig(out=args.out, sessions=tuple(args.sessions), methods=tuple(args.methods),
                                 recommender=feedback.recommender, simulate=section("simulate", SimulatorConfig),
                                 seed=int(load_params()["seed"]))
    run(config)


if __name__ == "__main__":
    main()
