"""User x item matrix factorisation trained on implicit feedback with one of three losses.

Scores: level logits g_k(u, i) = <p_u^k, q_i^k> + b_u^k + b_i^k + c^k for K feedback levels
(K = 1 for the pointwise losses). Every step takes a batch of users and all items, so each
loss covers every unobserved pair: exactly, or (`unobserved_sample_rate` < 1) through an
unbiased inverse-rate weighted sample of them.

- `naive`: a pointwise loss with the observed positive Y (level >= 1) as the label a, s = sigmoid(g_1):
  the log loss -[a log s + (1 - a) log(1 - s)] or (`local_loss: squared`) a (1 - s)^2 + (1 - a) s^2.
  Unobserved is read as irrelevant, so items that were rarely exposed are learnt as rarely
  relevant (the popularity bias).
- `relmf`: Rel-MF (Saito et al., WSDM 2020), the same loss with the label a = Y / max(theta_ui, clip).
  Both losses are linear in a, and E[Y] = theta_ui x relevance, so its expectation is the loss on the
  true relevance (unbiased while theta_ui >= clip); the clip bounds the variance. With a > 1 the log
  loss is unbounded below as the logit grows; the squared loss (the one of Saito et al.'s real-data
  experiments) stays within [1 - a, a] and cannot diverge.

`positive_weight` scales the loss of every observed cell against an unobserved one (WMF's
confidence weight; Saito et al. train on batches half positive, half unobserved, i.e. a weight of
about #unobserved / #observed). It changes the target to a weighted one, for every method alike.
- `gnolr`: nested ordinal logistic regression (models/gnolr.py) over all levels, e.g.
  positive < loved. With `exposure_aware` the observed level probability is modelled as
  max(theta_ui, clip) x P(level >= k), the exposure model of Rel-MF, so the learnt P(level >= k)
  is the debiased one; without it the unobserved pairs are plain negatives (a naive GNOLR).

Every method ranks by its first-level logit g_1 - a_1 (a_1 = 0 for the pointwise losses), whose
sigmoid is the first-level probability; `score_vectors` exports it as an inner product for a FAISS
index. Rank by `logits`, not `scores`: Rel-MF's targets above 1 push some logits far beyond the
range where a float64 sigmoid still tells them apart (it is exactly 1.0 from ~37 on), and tied
probabilities would be ranked by input order.

Faithful Rel-MF (`sampling: balanced`, `biases: false`, `init: xavier`): Saito et al.'s real-data
code trains a plain dot product <p_u, q_i> without biases, Xavier-initialised, on mini-batches of
`batch_pairs` pairs, half drawn from the positive pairs and half from all other cells of the matrix
(every step; `steps_per_epoch` steps make an "epoch" here), with the squared loss, clip and L2 of
the model above. `sampling: rows` (the default) scores a batch of users against every item instead.

Content-aware item tower (`text_tower: true`, features passed to `fit`): an item's vector is its
free factor plus a learned linear projection of its text vector (e.g. the dense encoder's),
q_i = v_i + W^T e_i, and its bias b_i = r_i + w^T e_i. The L2 penalty shrinks the free parts
towards 0, so an item without feedback (cold) is scored from its text alone: `cold_item_vectors`.

Regularisation: `l2` adds (l2 / 2) x the squared norm of every parameter to each step's loss (the
L2 penalty of Saito et al.; with Adam it equals coupled weight decay). Rel-MF needs it: its per-pair
loss with a target Y / theta > 1 is unbounded below (-> -inf as the logit grows), so without a real
penalty the logits of observed rare-item pairs diverge (hundreds) and the fit overfits them.
AdamW's decoupled `weight_decay` is no substitute at the usual 1e-4: it shrinks by lr x 1e-4 per step.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clickloop.atomic import atomic_path
from clickloop.params import from_dict
from models.gnolr import gnolr_loss, nested_probabilities, ordered_thresholds
from models.recommendation.interactions import InteractionMatrix, check_size
from models.training import ShuffledBatches, quiet_trainer

METHODS = ("naive", "relmf", "gnolr")
LOCAL_LOSSES = ("log", "squared")
SAMPLINGS = ("rows", "balanced")
INITS = ("normal", "xavier")


@dataclass
class RecommenderConfig:
    """The `feedback.recommender` params section (and the Yahoo! R3 benchmark's model settings)."""

    method: str = "relmf"  # "naive", "relmf" or "gnolr"
    dim: int = 32  # embedding size (per level for gnolr)
    epochs: int = 30
    lr: float = 0.01
    weight_decay: float = 1e-4  # AdamW decoupled decay on every parameter
    l2: float = 0.0  # coupled L2 penalty (l2 / 2) x ||parameters||^2 added to the (per-cell mean) loss
    clip: float = 0.1  # propensities are raised to at least this: IPS weights stay <= 1 / clip
    local_loss: str = "log"  # naive / relmf: "log" or "squared" (on the sigmoid)
    positive_weight: float = 1.0  # loss weight of an observed (level >= 1) cell against an unobserved one
    batch_size: int = 1024  # users per step; each step scores all items for them
    # Share of the unobserved (level-0) pairs scored per step, re-weighted by its inverse; 1 = all (exact).
    unobserved_sample_rate: float = 1.0
    seed: int = 13
    init_std: float = 0.1
    binary_weight: float = 0.5  # gnolr: weight of the per-level log loss beside the ordinal term
    exposure_aware: bool = True  # gnolr: multiply the level probabilities by the exposure propensity
    feedback_levels: tuple[str, ...] = ("click", "love")  # clickloop logs: nested action levels, low to high
    max_matrix_cells: int = 200_000_000  # users x items above this is refused (dense losses)
    biases: bool = True  # user, item and global biases beside the dot product (Saito et al.: none)
    init: str = "normal"  # "normal" (std init_std) or "xavier" (Glorot uniform, as Saito et al.'s TF code)
    sampling: str = "rows"  # "rows": user batches against all items; "balanced": half positive, half other pairs
    batch_pairs: int = 32768  # balanced: pairs per step (Saito et al.: 2 ** 15)
    steps_per_epoch: int = 25  # balanced: steps that make one epoch (the unit of `epochs` and checkpoints)
    text_tower: bool = False  # item vectors = free factors + a projection of the item features given to fit

    def __post_init__(self) -> None:
        self.feedback_levels = tuple(self.feedback_levels)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        if self.local_loss not in LOCAL_LOSSES:
            raise ValueError(f"local_loss must be one of {LOCAL_LOSSES}; got {self.local_loss!r}")
        if self.positive_weight <= 0:
            raise ValueError(f"positive_weight must be > 0; got {self.positive_weight}")
        if not 0 < self.clip <= 1:
            raise ValueError(f"clip must be in (0, 1]; got {self.clip}")
        for name in ("dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.sampling not in SAMPLINGS or self.init not in INITS:
            raise ValueError(f"sampling must be one of {SAMPLINGS} and init one of {INITS}; "
                             f"got {self.sampling!r}, {self.init!r}")
        if self.batch_pairs < 2 or self.steps_per_epoch < 1:
            raise ValueError("batch_pairs must be >= 2 and steps_per_epoch >= 1")
        if not 0 < self.unobserved_sample_rate <= 1:
            raise ValueError(f"unobserved_sample_rate must be in (0, 1]; got {self.unobserved_sample_rate}")
        if self.lr <= 0 or self.weight_decay < 0 or self.l2 < 0:
            raise ValueError("lr must be > 0, weight_decay and l2 >= 0")


class FactorizationModule(L.LightningModule):
    """Embeddings, biases and (gnolr) ordered thresholds, trained on the configured loss."""

    def __init__(self, config: RecommenderConfig, n_users: int, n_items: int, n_levels: int,
                 item_features: Tensor | None = None) -> None:
        super().__init__()
        self.config = config
        self.n_levels = n_levels if config.method == "gnolr" else 1
        k, d = self.n_levels, config.dim
        self.user_vectors = nn.Parameter(_initial(n_users, k, d, config))
        self.item_vectors = nn.Parameter(_initial(n_items, k, d, config))
        # Without biases (Saito et al.'s plain dot product) they stay zero tensors that never train.
        self.user_bias = nn.Parameter(torch.zeros(n_users, k), requires_grad=config.biases)
        self.item_bias = nn.Parameter(torch.zeros(n_items, k), requires_grad=config.biases)
        self.global_bias = nn.Parameter(torch.zeros(k), requires_grad=config.biases)
        if config.text_tower:
            if item_features is None or item_features.shape[0] != n_items:
                raise ValueError(f"text_tower needs item features with one row per item ({n_items})")
            n_features = item_features.shape[1]
            self.register_buffer("item_features", item_features.float())
            self.text_projection = nn.Parameter(torch.randn(n_features, k * d) * config.init_std / n_features**0.5)
            self.text_bias = nn.Parameter(torch.zeros(n_features, k), requires_grad=config.biases)
        # Free parameters of a_1 <= ... <= a_K; the pointwise losses have no threshold (a_1 = 0).
        self.raw_thresholds = nn.Parameter(torch.zeros(k), requires_grad=config.method == "gnolr")
        self.epoch_losses: list[float] = []
        self._loss_sum = 0.0
        self._steps = 0

    def level_logits(self, users: Tensor) -> Tensor:
        """g[B, I, K] for a batch of user rows against every item."""
        # The biases ride in the one matrix product as extra coordinates, [p_u, b_u, 1] . [q_i, 1, b_i + c]:
        # adding them to the [B, I, K] scores separately costs several full-size passes per step.
        user_bias = self.user_bias[users].unsqueeze(2)
        user = torch.cat([self.user_vectors[users], user_bias, torch.ones_like(user_bias)], dim=2)
        item_vectors, item_bias = self.items()
        item_bias = (item_bias + self.global_bias).unsqueeze(2)
        item = torch.cat([item_vectors, torch.ones_like(item_bias), item_bias], dim=2)
        return torch.einsum("ukd,ikd->uik", user, item)

    def items(self, rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The items' (vectors [I, K, d], biases [I, K]), free factors plus the text tower's part."""
        vectors = self.item_vectors if rows is None else _gather(self.item_vectors, rows)
        bias = self.item_bias if rows is None else _gather(self.item_bias, rows)
        if not self.config.text_tower:
            return vectors, bias
        features = self.item_features if rows is None else self.item_features[rows]
        text_vectors, text_bias = self.text_part(features)
        return vectors + text_vectors, bias + text_bias

    def text_part(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """The text tower's item vectors [N, K, d] and biases [N, K] for feature rows [N, F]."""
        k, d = self.n_levels, self.config.dim
        return (features @ self.text_projection).view(-1, k, d), features @ self.text_bias

    def thresholds(self) -> Tensor:
        if self.config.method != "gnolr":
            return torch.zeros(1, device=self.raw_thresholds.device)
        return ordered_thresholds(self.raw_thresholds)

    def pair_logits(self, users: Tensor, items: Tensor) -> Tensor:
        """g[P, K] for (user row, item) pairs."""
        item_vectors, item_bias = self.items(items)
        dots = (_gather(self.user_vectors, users) * item_vectors).sum(dim=2)
        return dots + _gather(self.user_bias, users) + item_bias + self.global_bias

    def loss(self, users: Tensor, levels: Tensor, propensity: Tensor) -> Tensor:
        """The mean loss over every (batch user, item) cell.

        With `unobserved_sample_rate` r < 1 only r x cells random draws (with replacement) of the level-0
        cells are scored, each standing for 1 / r cells: an unbiased estimate of the same mean at a fraction
        of the cost.
        """
        theta = propensity.clamp(min=self.config.clip, max=1.0).expand_as(levels)
        rate = self.config.unobserved_sample_rate
        if rate >= 1:
            return self.mean_pair_loss(self.level_logits(users).reshape(-1, self.n_levels), levels.reshape(-1),
                                       theta.reshape(-1))
        total = levels.new_zeros((), dtype=torch.float32)
        observed = (levels > 0).nonzero(as_tuple=True)
        # rate x cells draws with replacement, the observed ones dropped: each unobserved cell is drawn rate
        # times in expectation (as a Bernoulli(rate) mask would keep it) without a random number per cell.
        n_cells, n_items = levels.numel(), levels.shape[1]
        n_draws = max(1, round(rate * n_cells))
        draws = torch.randint(n_cells, (n_draws,), device=levels.device)
        draws = draws[levels.reshape(-1)[draws] == 0]
        sampled = (draws // n_items, draws % n_items)
        for (rows, items), weight in ((observed, 1.0), (sampled, n_cells / n_draws)):
            if len(rows):
                group_mean = self.mean_pair_loss(self.pair_logits(users[rows], items), levels[rows, items],
                                                 theta[rows, items])
                total = total + group_mean * (weight * len(rows))
        return total / levels.numel()

    def mean_pair_loss(self, logits: Tensor, levels: Tensor, theta: Tensor) -> Tensor:
        """The configured loss averaged over pairs: logits [P, K], levels [P], clipped propensities [P]."""
        positive = (levels > 0).to(logits.dtype)
        weights = 1.0 + (self.config.positive_weight - 1.0) * positive
        if self.config.method == "gnolr":
            probs = nested_probabilities(logits, self.thresholds())
            if self.config.exposure_aware:
                probs = probs * theta.unsqueeze(1)
            labels = (levels.unsqueeze(1) >= torch.arange(1, self.n_levels + 1, device=levels.device)).to(probs.dtype)
            return gnolr_loss(probs, labels, self.config.binary_weight, weights)
        # Rel-MF's label above 1 is intended: it is the inverse-propensity weighted one.
        label = positive / theta if self.config.method == "relmf" else positive
        if self.config.local_loss == "squared":
            prob = torch.sigmoid(logits[:, 0])
            per_pair = label * (1 - prob).pow(2) + (1 - label) * prob.pow(2)
        else:
            per_pair = F.binary_cross_entropy_with_logits(logits[:, 0], label, reduction="none")
        return (weights * per_pair).mean()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if "items" in batch:  # balanced pairs: the mean loss over the sampled pairs
            theta = batch["propensity"].clamp(min=self.config.clip, max=1.0)
            loss = self.mean_pair_loss(self.pair_logits(batch["users"], batch["items"]), batch["levels"], theta)
        else:
            loss = self.loss(batch["users"], batch["levels"], batch["propensity"])
        self._loss_sum += float(loss.detach())
        self._steps += 1
        return loss + self.l2_penalty()

    def l2_penalty(self) -> Tensor:
        """(l2 / 2) x the squared norm of the trainable parameters (0 when `l2` is 0)."""
        if not self.config.l2:
            return self.global_bias.new_zeros(())
        squares = sum(p.pow(2).sum() for p in self.parameters() if p.requires_grad)
        return 0.5 * self.config.l2 * squares

    def on_train_epoch_end(self) -> None:
        self.epoch_losses.append(self._loss_sum / max(self._steps, 1))
        self._loss_sum, self._steps = 0.0, 0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            [p for p in self.parameters() if p.requires_grad], lr=self.config.lr, weight_decay=self.config.weight_decay
        )


class _UserRows:
    """A user's full row of item levels and propensities, the unit of a recommender batch."""

    def __init__(self, data: InteractionMatrix) -> None:
        self.levels = torch.from_numpy(data.levels)
        self.propensity = torch.from_numpy(np.ascontiguousarray(data.propensity, dtype=np.float32))
        self.per_item = data.propensity.ndim == 1

    def batch(self, users: Tensor) -> dict[str, Tensor]:
        # Per-item propensities stay [1, I] and broadcast in the loss.
        propensity = self.propensity.unsqueeze(0) if self.per_item else self.propensity[users]
        return {"users": users, "levels": self.levels[users], "propensity": propensity}


class BalancedPairs:
    """Saito et al.'s mini-batches: half positive pairs and half pairs drawn uniformly from every
    other cell (unobserved or below the positive level), both with replacement, `steps` per epoch."""

    def __init__(self, data: InteractionMatrix, config: RecommenderConfig) -> None:
        self.levels = data.levels
        self.propensity = np.broadcast_to(data.propensity, data.levels.shape)
        self.positive_users, self.positive_items = np.nonzero(data.levels > 0)
        self.half = config.batch_pairs // 2
        self.steps = config.steps_per_epoch
        self.rng = np.random.default_rng(config.seed)

    def __len__(self) -> int:
        return self.steps

    def _others(self) -> tuple[np.ndarray, np.ndarray]:
        # Rejection sampling over the whole matrix: positives are a small share of the cells.
        users, items = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        n_users, n_items = self.levels.shape
        while len(users) < self.half:
            u = self.rng.integers(n_users, size=2 * self.half)
            i = self.rng.integers(n_items, size=2 * self.half)
            keep = self.levels[u, i] == 0
            users, items = np.concatenate([users, u[keep]]), np.concatenate([items, i[keep]])
        return users[: self.half], items[: self.half]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for _ in range(self.steps):
            picked = self.rng.integers(len(self.positive_users), size=self.half)
            other_users, other_items = self._others()
            users = np.concatenate([self.positive_users[picked], other_users])
            items = np.concatenate([self.positive_items[picked], other_items])
            yield {
                "users": torch.from_numpy(users),
                "items": torch.from_numpy(items),
                "levels": torch.from_numpy(self.levels[users, items].astype(np.int64)),
                "propensity": torch.from_numpy(np.ascontiguousarray(self.propensity[users, items], dtype=np.float32)),
            }


def _gather(table: Tensor, rows: Tensor) -> Tensor:
    """table[rows] through F.embedding, whose backward on CPU is about twice as fast as indexing's
    when rows repeat (balanced batches draw 32k pairs over 1,000 items)."""
    flat = F.embedding(rows, table.reshape(table.shape[0], -1))
    return flat.view(len(rows), *table.shape[1:])


def _initial(n_rows: int, k: int, d: int, config: RecommenderConfig) -> Tensor:
    if config.init == "xavier":  # Glorot uniform over the [rows, d] matrix, as TF's xavier_initializer
        bound = (6.0 / (n_rows + d)) ** 0.5
        return (torch.rand(n_rows, k, d) * 2 - 1) * bound
    return torch.randn(n_rows, k, d) * config.init_std


@dataclass
class ScoreVectors:
    """The ranking score as an inner product: P(first level) = sigmoid(<user, item> + user_offset)."""

    user: np.ndarray  # float32 [U, d + 1]
    item: np.ndarray  # float32 [I, d + 1] (the last column is the item's bias)
    user_offset: np.ndarray  # float32 [U]


class FactorizationModel:
    """A trained factorisation with its user and item vocabularies."""

    def __init__(
        self, config: RecommenderConfig, module: FactorizationModule, user_ids: list[str], item_ids: list[str]
    ) -> None:
        self.config = config
        self.module = module
        self.user_ids = list(user_ids)
        self.item_ids = list(item_ids)

    @classmethod
    def fit(
        cls, data: InteractionMatrix, config: RecommenderConfig | None = None, callbacks: Sequence[L.Callback] = (),
        item_features: np.ndarray | None = None,
    ) -> FactorizationModel:
        """Train on `data`; `callbacks` (Lightning) can e.g. validate after every epoch.

        `item_features` [I, F] (one row per item of `data`, e.g. dense text vectors) feed the text tower
        when `config.text_tower` is on."""
        config = config or RecommenderConfig()
        check_size(len(data.user_ids), len(data.item_ids), config.max_matrix_cells)
        if not data.positives.any():
            raise ValueError("no positive feedback to learn from")
        torch.manual_seed(config.seed)
        features = None if item_features is None or not config.text_tower else torch.from_numpy(
            np.ascontiguousarray(item_features, dtype=np.float32))
        module = FactorizationModule(config, len(data.user_ids), len(data.item_ids), len(data.level_names), features)
        if config.sampling == "balanced":
            batches = BalancedPairs(data, config)
        else:
            batches = ShuffledBatches(len(data.user_ids), config.batch_size, config.seed, _UserRows(data).batch)
        quiet_trainer(config.epochs, callbacks).fit(module, train_dataloaders=batches)
        module.eval()
        return cls(config, module, data.user_ids, data.item_ids)

    def score_vectors(self) -> ScoreVectors:
        """Level-1 logits as inner products: user [p_u^1, 1], item [q_i^1, b_i^1]."""
        m = self.module
        with torch.no_grad():
            ones = torch.ones(len(m.user_vectors), 1, device=m.user_vectors.device)
            user = torch.cat([m.user_vectors[:, 0], ones], dim=1)
            item_vectors, item_bias = m.items()
            item = torch.cat([item_vectors[:, 0], item_bias[:, :1]], dim=1)
            offset = m.user_bias[:, 0] + m.global_bias[0] - m.thresholds()[0]
        return ScoreVectors(*(t.float().cpu().numpy() for t in (user, item, offset)))

    def cold_item_vectors(self, features: np.ndarray) -> np.ndarray:
        """Score vectors [N, d + 1] (as `score_vectors().item`) of items known only by their features:
        the text tower's part, the free factors at their prior mean 0. Needs `text_tower`."""
        if not self.config.text_tower:
            raise ValueError("cold items need the text tower (text_tower: true)")
        with torch.no_grad():
            vectors, bias = self.module.text_part(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
            return torch.cat([vectors[:, 0], bias[:, :1]], dim=1).numpy()

    def logits(self, user_rows: np.ndarray | None = None) -> np.ndarray:
        """First-level logits for the given user rows (all users when None) against every item, [B, I].

        The ranking score: monotone in `scores` but never saturated, so it keeps every order.
        """
        vectors = self.score_vectors()
        rows = np.arange(len(self.user_ids)) if user_rows is None else np.asarray(user_rows)
        return vectors.user[rows] @ vectors.item.T + vectors.user_offset[rows, None]

    def scores(self, user_rows: np.ndarray | None = None) -> np.ndarray:
        """P(first level) for the given user rows (all users when None) against every item, [B, I].

        Computed as (1 + tanh(logit / 2)) / 2, which cannot overflow; rank by `logits` instead.
        """
        return 0.5 * (1.0 + np.tanh(0.5 * self.logits(user_rows)))

    def save(self, directory: str | Path) -> None:
        """config.json (config, vocabularies, training losses) and model.pt, written atomically."""
        meta = {
            "config": asdict(self.config),
            "user_ids": self.user_ids,
            "item_ids": self.item_ids,
            "n_levels": self.module.n_levels,
            "n_features": int(self.module.item_features.shape[1]) if self.config.text_tower else 0,
            "epoch_losses": self.module.epoch_losses,
        }
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            (tmp / "config.json").write_text(json.dumps(meta, indent=2))
            torch.save({k: v.cpu() for k, v in self.module.state_dict().items()}, tmp / "model.pt")

    @classmethod
    def load(cls, directory: str | Path) -> FactorizationModel:
        directory = Path(directory)
        meta = json.loads((directory / "config.json").read_text())
        config = from_dict(RecommenderConfig, meta["config"], where=str(directory / "config.json"))
        n_features = meta.get("n_features", 0)
        features = torch.zeros(len(meta["item_ids"]), n_features) if n_features else None
        module = FactorizationModule(config, len(meta["user_ids"]), len(meta["item_ids"]), meta["n_levels"], features)
        module.load_state_dict(torch.load(directory / "model.pt", map_location="cpu", weights_only=True))
        module.epoch_losses = list(meta["epoch_losses"])
        module.eval()
        return cls(config, module, meta["user_ids"], meta["item_ids"])
