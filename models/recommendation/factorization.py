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

Regularisation: `l2` adds (l2 / 2) x the squared norm of every parameter to each step's loss (the
L2 penalty of Saito et al.; with Adam it equals coupled weight decay). Rel-MF needs it: its per-pair
loss with a target Y / theta > 1 is unbounded below (-> -inf as the logit grows), so without a real
penalty the logits of observed rare-item pairs diverge (hundreds) and the fit overfits them.
AdamW's decoupled `weight_decay` is no substitute at the usual 1e-4: it shrinks by lr x 1e-4 per step.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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
        if not 0 < self.unobserved_sample_rate <= 1:
            raise ValueError(f"unobserved_sample_rate must be in (0, 1]; got {self.unobserved_sample_rate}")
        if self.lr <= 0 or self.weight_decay < 0 or self.l2 < 0:
            raise ValueError("lr must be > 0, weight_decay and l2 >= 0")


class FactorizationModule(L.LightningModule):
    """Embeddings, biases and (gnolr) ordered thresholds, trained on the configured loss."""

    def __init__(self, config: RecommenderConfig, n_users: int, n_items: int, n_levels: int) -> None:
        super().__init__()
        self.config = config
        self.n_levels = n_levels if config.method == "gnolr" else 1
        k, d = self.n_levels, config.dim
        self.user_vectors = nn.Parameter(torch.randn(n_users, k, d) * config.init_std)
        self.item_vectors = nn.Parameter(torch.randn(n_items, k, d) * config.init_std)
        self.user_bias = nn.Parameter(torch.zeros(n_users, k))
        self.item_bias = nn.Parameter(torch.zeros(n_items, k))
        self.global_bias = nn.Parameter(torch.zeros(k))
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
        item_bias = (self.item_bias + self.global_bias).unsqueeze(2)
        item = torch.cat([self.item_vectors, torch.ones_like(item_bias), item_bias], dim=2)
        return torch.einsum("ukd,ikd->uik", user, item)

    def thresholds(self) -> Tensor:
        if self.config.method != "gnolr":
            return torch.zeros(1, device=self.raw_thresholds.device)
        return ordered_thresholds(self.raw_thresholds)

    def pair_logits(self, users: Tensor, items: Tensor) -> Tensor:
        """g[P, K] for (user row, item) pairs."""
        dots = (self.user_vectors[users] * self.item_vectors[items]).sum(dim=2)
        return dots + self.user_bias[users] + self.item_bias[items] + self.global_bias

    def loss(self, users: Tensor, levels: Tensor, propensity: Tensor) -> Tensor:
        """The mean loss over every (batch user, item) cell.

        With `unobserved_sample_rate` r < 1 only a random share r of the level-0 cells is scored,
        each standing for 1 / r cells: an unbiased estimate of the same mean at a fraction of the cost.
        """
        theta = propensity.clamp(min=self.config.clip, max=1.0).expand_as(levels)
        rate = self.config.unobserved_sample_rate
        if rate >= 1:
            return self.mean_pair_loss(self.level_logits(users).reshape(-1, self.n_levels), levels.reshape(-1),
                                       theta.reshape(-1))
        total = levels.new_zeros((), dtype=torch.float32)
        observed = levels > 0
        sampled = ~observed & (torch.rand(levels.shape, device=levels.device) < rate)
        for cells, weight in ((observed, 1.0), (sampled, 1.0 / rate)):
            rows, items = cells.nonzero(as_tuple=True)
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
        cls, data: InteractionMatrix, config: RecommenderConfig | None = None, callbacks: Sequence[L.Callback] = ()
    ) -> FactorizationModel:
        """Train on `data`; `callbacks` (Lightning) can e.g. validate after every epoch."""
        config = config or RecommenderConfig()
        check_size(len(data.user_ids), len(data.item_ids), config.max_matrix_cells)
        if not data.positives.any():
            raise ValueError("no positive feedback to learn from")
        torch.manual_seed(config.seed)
        module = FactorizationModule(config, len(data.user_ids), len(data.item_ids), len(data.level_names))
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
            item = torch.cat([m.item_vectors[:, 0], m.item_bias[:, :1]], dim=1)
            offset = m.user_bias[:, 0] + m.global_bias[0] - m.thresholds()[0]
        return ScoreVectors(*(t.float().cpu().numpy() for t in (user, item, offset)))

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
        module = FactorizationModule(config, len(meta["user_ids"]), len(meta["item_ids"]), meta["n_levels"])
        module.load_state_dict(torch.load(directory / "model.pt", map_location="cpu", weights_only=True))
        module.epoch_losses = list(meta["epoch_losses"])
        module.eval()
        return cls(config, module, meta["user_ids"], meta["item_ids"])
