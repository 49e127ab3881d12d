"""Yahoo! R3 robustness of the recommenders: several validation splits, several seeds, faithful
baselines, and a selection that reports (and extends past) grid edges.

Protocol (Saito et al., WSDM 2020, as bench/yahoo_r3.py implements it: ratings >= 4 positive,
propensity (positives / max) ** 0.5, per-user DCG / Recall / MAP over the 10 random test songs,
"rare" = songs with <= 500 training positives), and on top of it:

- three validation splits: each carves a different random 10% of the TRAINING ratings out
  (split seed s); every method's hyper-parameters are selected on each split separately with
  `models.selection.select`: log-space grids, the IPS-weighted validation DCG@5 (gain
  1 / theta on held-out positives, each sampled user ranking every song it did not rate in the
  fit part) with its standard error over users, the simplest setting within one standard error
  of the best, and every axis whose pick sits on an edge extended (up to its cap) or reported.
  Epochs are checkpoints of one run (the last checkpoint picked is reported as an edge);
- five seeds: the selection on split s trains with seed s; its pick is scored on the test set as
  trained (on the split's fit part, 90% of the training ratings). The other seeds then retrain the
  pick on the same fit part, split by split; the table gives the mean and the spread (sample std,
  min, max) over the (split, seed) runs that finished (the report says how many).

Methods: `naive` and `relmf` as configured here (log loss, biases, 2% re-weighted unobserved
sample over full user rows); `relmf_published` / `naive_published` as Saito et al.'s real-data
code runs them (squared loss, plain dot product without biases, Xavier init, dim 200, Adam lr
0.005, L2 1e-4, balanced batches of 2^15 pairs, half positive, 300 iterations; clip
tuned as they did); `gnolr` (the params default, which also sees the 5-star level);
`popularity`; `item_knn`. No content-aware model: Yahoo! R3 has no song text.

Run (writes reports/recommender_robustness_yahoo.json; bench.recommender_report merges):
`OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nice -n 15 .venv/bin/python -m bench.recommender_robustness`
(`--methods` runs a subset into `--out`, to split the work over processes).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import polars as pl

from bench.yahoo_r3 import BenchConfig, YahooR3, grouped_by_user, load_yahoo_r3, rating_matrix
from clickloop.atomic import write_json
from models.recommendation import FactorizationModel, InteractionMatrix, RecommenderConfig, popularity_propensities
from models.recommendation.baselines import item_knn_scores, popularity_scores
from models.recommendation.metrics import mean_metrics, user_metrics
from models.selection import Axis, Candidate, Score, Selection, log_grid, select

FACTORISATIONS = ("naive", "relmf", "gnolr", "relmf_published", "naive_published")
METHODS = (*FACTORISATIONS, "popularity", "item_knn")
SUBSETS = ("all", "rare")
L2_CAPS = (1e-10, 1e-1)

# As configured here: the Yahoo! R3 benchmark's base settings (bench/yahoo_r3.py).
HERE = RecommenderConfig(dim=32, lr=0.05, epochs=50, batch_size=2048, unobserved_sample_rate=0.02, weight_decay=0.0)
# As Saito et al.'s real-data code (usaito/unbiased-implicit-rec-real: config.yaml, trainer.py, recommenders.py):
# eta 0.005, lam 1e-4, batch 2^15 half positive / half unlabelled, 301 iterations, dim 200 (their tuned pick),
# Xavier init, plain dot product, squared loss with the propensity clipped (their tuned clip ~0.009).
PUBLISHED = RecommenderConfig(
    dim=200, lr=0.005, l2=1e-4, weight_decay=0.0, local_loss="squared", biases=False, init="xavier",
    sampling="balanced", batch_pairs=2**15, steps_per_epoch=25, epochs=12,
)


@dataclass
class RobustnessConfig:
    data_dir: Path = BenchConfig.data_dir
    out: Path = Path("reports/recommender_robustness_yahoo.json")
    splits: tuple[int, ...] = (0, 1, 2)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    validation_share: float = 0.1
    validation_users: int = 2000
    ips_gain_clip: float = 0.01  # validation gains 1 / max(theta, this)
    max_rounds: int = 1  # grid extensions per selection (sized for a shared 2-core machine)
    picks_from: Path | None = None  # skip the selection: retrain the picks of this earlier run with the other seeds
    protocol: BenchConfig = field(default_factory=BenchConfig)


def method_space(method: str) -> tuple[RecommenderConfig | None, list[Axis], int]:
    """(base config, axes, checkpoint every n epochs) of a method; None config for the non-factorisations."""
    # Four decades in steps of 100 (wide enough for data of very different sizes), extended by 100 past an edge.
    l2 = Axis("l2", log_grid(1e-8, 1e-4, per_decade=1)[::2], low=L2_CAPS[0], high=L2_CAPS[1], simpler="higher")
    if method == "naive":
        return replace(HERE, method="naive"), [l2], 5
    if method == "relmf":
        return replace(HERE, method="relmf", clip=0.1), [l2], 5
    if method == "gnolr":
        return replace(HERE, method="gnolr", clip=0.1, exposure_aware=True), [l2], 5
    if method == "relmf_published":  # their tuned axis: the clip (lr 0.005 and L2 1e-4 fixed in their config)
        clip = Axis("clip", (0.003, 0.03), low=1e-4, high=1.0, simpler="higher")
        return replace(PUBLISHED, method="relmf"), [clip], 1
    if method == "naive_published":
        return replace(PUBLISHED, method="naive"), [], 1
    if method == "item_knn":
        return None, [Axis("neighbours", (10, 100), low=1, high=999, integer=True)], 0
    if method == "popularity":
        return None, [], 0
    raise ValueError(f"unknown method {method!r}; known: {METHODS}")


@dataclass
class Validation:
    """One split: the fit part's matrix and each sampled user's IPS gains over the songs."""

    fit: InteractionMatrix
    gains: dict[int, np.ndarray]

    def score(self, scores: np.ndarray) -> Score:
        """IPS-weighted DCG@5 mean and standard error over users; `scores` [len(gains), I] in gains order."""
        values = []
        for row, (user, gain) in enumerate(self.gains.items()):
            unrated = ~self.fit.seen[user]
            values.append(user_metrics(scores[row][unrated], gain[unrated], (5,))["DCG@5"])
        v = np.asarray(values)
        return Score(float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))))

    @property
    def users(self) -> np.ndarray:
        return np.fromiter(self.gains, dtype=np.int64)


def validation_split(data: YahooR3, split: int, config: RobustnessConfig) -> Validation:
    protocol = config.protocol
    rng = np.random.default_rng(split)
    held = pl.Series(rng.random(len(data.train)) < config.validation_share)
    fit = rating_matrix(data.train.filter(~held), data.n_users, data.n_items, protocol)
    theta = popularity_propensities(rating_matrix(data.train, data.n_users, data.n_items, protocol).positives)
    held_positives = data.train.filter(held & (data.train["rating"] >= protocol.positive_rating))
    users = held_positives["user"].unique().sort().to_numpy()
    sample = set(rng.choice(users, min(config.validation_users, len(users)), replace=False).tolist())
    gains: dict[int, np.ndarray] = {}
    for (user,), songs in held_positives.filter(pl.col("user").is_in(sorted(sample))).group_by("user"):
        gain = np.zeros(data.n_items)
        items = songs["item"].to_numpy()
        gain[items] = 1.0 / np.maximum(theta[items], config.ips_gain_clip)
        gains[int(user)] = gain
    return Validation(fit, dict(sorted(gains.items())))


class CheckpointScores(L.Callback):
    """Validation score every `every` epochs of one run, as selection candidates (extra: epochs); with `test`,
    each candidate's detail holds the test metrics of the model at that epoch (read only for the pick)."""

    def __init__(self, validation: Validation, every: int,
                 test: Callable[[np.ndarray], dict[str, Any]] | None = None) -> None:
        self.validation, self.every, self.test = validation, every, test
        self.candidates: list[Candidate] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.every:
            return
        model = FactorizationModel(module.config, module, self.validation.fit.user_ids, self.validation.fit.item_ids)
        score = self.validation.score(model.logits(self.validation.users))
        detail = self.test(model.logits()) if self.test else None
        self.candidates.append(Candidate({"epochs": epoch}, score, detail))


def evaluator(method: str, validation: Validation, seed: int,
              test: Callable[[np.ndarray], dict[str, Any]]) -> Callable[[dict[str, Any]], Score | list[Candidate]]:
    """Fit `method` at a grid point on the split's fit part (seed `seed`) and score it on validation; each
    candidate carries the test metrics of that model as its detail."""
    base, _, every = method_space(method)

    def evaluate(point: dict[str, Any]) -> Score | list[Candidate]:
        started = time.perf_counter()
        users = validation.users
        if method in ("popularity", "item_knn"):
            full = (popularity_scores(validation.fit) if method == "popularity"
                    else item_knn_scores(validation.fit, int(point["neighbours"])))
            result: Score | list[Candidate] = [Candidate({}, validation.score(full[users]), test(full))]
        else:
            assert base is not None
            callback = CheckpointScores(validation, every, test)
            FactorizationModel.fit(validation.fit, replace(base, **point, seed=seed), callbacks=[callback])
            result = callback.candidates
        best = max(c.score.mean for c in result)
        print(f"  {method} {point}: {best:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
        return result

    return evaluate


def test_metrics(scores: np.ndarray, data: YahooR3, rare_items: np.ndarray, protocol: BenchConfig) -> dict[str, Any]:
    subsets = {"all": data.test, "rare": data.test.filter(pl.col("item").is_in(rare_items.tolist()))}
    return {
        name: mean_metrics(grouped_by_user(
            test, scores, (test["rating"] >= protocol.positive_rating).cast(pl.Float64).to_numpy()), protocol.cutoffs)
        for name, test in subsets.items()
    }


def epochs_edge(selection: Selection, method: str) -> str | None:
    """Whether the picked epoch count is the last checkpoint (training may have stopped too early)."""
    base, _, _ = method_space(method)
    if base is None or "epochs" not in selection.pick.params:
        return None
    return "high edge (last checkpoint)" if selection.pick.params["epochs"] >= base.epochs else "interior"


def run(config: RobustnessConfig, methods: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    data = load_yahoo_r3(config.data_dir)
    train = rating_matrix(data.train, data.n_users, data.n_items, config.protocol)
    positives = train.positives.sum(axis=0)
    rare_items = np.flatnonzero(positives <= config.protocol.rare_max_positives)
    report: dict[str, Any] = {"methods": {}, "data": {"users": data.n_users, "items": data.n_items,
                                                      "rare_items": len(rare_items)}}
    validations = {split: validation_split(data, split, config) for split in config.splits}
    def score(scores: np.ndarray) -> dict[str, Any]:
        return test_metrics(scores, data, rare_items, config.protocol)

    # Phase 1, split by split: select on the split (training seed = the first seed + split) and test the pick,
    # trained on the split's fit part. Phase 2: the other seeds at each split's pick, split by split, so that a
    # run cut short still holds every method on every split. Each write leaves a complete report of what ran.
    def save() -> None:
        config.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(config.out, {**report, "wall_seconds": time.perf_counter() - started})

    picks: dict[tuple[str, int], tuple[dict[str, Any], int]] = {}
    if config.picks_from is not None:  # phase 2 only, at the picks another run of this benchmark made
        earlier = json.loads(config.picks_from.read_text())["methods"]
        for method in methods:
            for split in config.splits:
                selection = earlier[method]["selections"][str(split)]
                picks[(method, split)] = (selection["pick"]["params"], config.seeds[0] + split)
                entry = report["methods"].setdefault(method, {"selections": {}, "runs": []})
                entry["selections"][split] = selection
    for split, validation in validations.items() if config.picks_from is None else ():
        for method in methods:
            _, axes, _ = method_space(method)
            seed = config.seeds[0] + split
            print(f"select {method} on split {split}", flush=True)
            selection = select(evaluator(method, validation, seed, score), axes, max_rounds=config.max_rounds)
            summary = selection.summary()
            summary["edges"] = {**summary["edges"], **({"epochs": e} if (e := epochs_edge(selection, method)) else {})}
            summary["on_edge"] = any("edge" in v for v in summary["edges"].values())
            entry = report["methods"].setdefault(method, {"selections": {}, "runs": []})
            entry["selections"][split] = summary
            entry["runs"].append({"split": split, "seed": seed, "params": selection.pick.params,
                                  "metrics": selection.pick.detail})
            picks[(method, split)] = (selection.pick.params, seed)
            print(f"test {method} split {split} seed {seed}: all DCG@5 {selection.pick.detail['all']['DCG@5']:.4f}, "
                  f"rare {selection.pick.detail['rare']['DCG@5']:.4f}", flush=True)
            save()
    for split, validation in validations.items():
        for method in methods:
            if method in ("popularity", "item_knn"):
                continue  # deterministic: one fit stands for every seed
            params, tuned_seed = picks[(method, split)]
            base, _, _ = method_space(method)
            assert base is not None
            for seed in (s for s in config.seeds if s != tuned_seed):
                model = FactorizationModel.fit(validation.fit, replace(base, **params, seed=seed))
                metrics = score(model.logits())
                report["methods"][method]["runs"].append({"split": split, "seed": seed, "params": params,
                                                          "metrics": metrics})
                print(f"test {method} split {split} seed {seed}: all DCG@5 {metrics['all']['DCG@5']:.4f}, "
                      f"rare {metrics['rare']['DCG@5']:.4f}", flush=True)
                save()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=RobustnessConfig.data_dir)
    parser.add_argument("--out", type=Path, default=RobustnessConfig.out)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--splits", type=int, nargs="+", default=list(RobustnessConfig.splits))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(RobustnessConfig.seeds))
    parser.add_argument("--picks-from", type=Path, default=None,
                        help="an earlier run's file: only retrain its picks on --splits with the other seeds")
    args = parser.parse_args()
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    config = RobustnessConfig(data_dir=args.data_dir, out=args.out, splits=tuple(args.splits), seeds=tuple(args.seeds),
                              picks_from=args.picks_from)
    run(config, args.methods)
    print(json.dumps(asdict(config), default=str))


if __name__ == "__main__":
    main()
