"""GNOLR: the ordinal feedback model (nested ordinal logistic regression, KDD 2025).

A shown result reaches nested feedback levels, impression < click < love (< add_to_cart ...,
the order is configured by `GNOLRConfig.levels`). For K levels above the impression the
model produces nested logits z_k = z_{k-1} + f_k, thresholds a_k and
p_k = sigmoid(z_k - a_k) = P(result reaches level k or higher | examined).

Nesting (p_1 >= p_2 >= ... >= p_K) is guaranteed by construction, not learned:
  - the increments are non-positive, f_k = -softplus(g_k) for k >= 2 (g_k is the raw score
    of level k), so z_1 >= z_2 >= ... >= z_K;
  - the thresholds are non-decreasing, a_k = a_1 + sum_{j<=k} softplus(d_j)
    (`ordered_thresholds`), so z_k - a_k is non-increasing in k.
Either alone would not suffice for free parameters; together they make every p_k - p_{k+1}
non-negative, which the ordinal loss needs for its logarithms.

The loss and the probability functions (`level_labels`, `ordered_thresholds`,
`nested_probabilities`, `gnolr_loss`) are pure torch/numpy and know nothing of the towers,
so other models (the user->item recommender) reuse them.

The model (`GNOLRModel`) is two towers in one embedding space: the query tower reads the
frozen all-MiniLM-L6-v2 embedding of the query text (or a user-id embedding), the document
tower the frozen MiniLM embedding of title+text plus an optional id embedding. Each tower
emits K sub-embeddings; g_k is the dot product of the k-th pair, plus (text query tower) a
learned multiple of the cosine between the frozen query and document embeddings. Unknown document ids map to
a shared "unseen" id row that training also uses (id dropout), so a new document is scored
from its text. Position bias is modelled as in position-aware learning: the observed
probability at position p is theta_p * p_k, with theta learned (theta_1 = 1), given
(propensities of the propensity model) or absent; `predict` returns the examined part only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clickloop.atomic import atomic_path
from clickloop.params import from_dict
from models.text_features import TextEmbeddingCache
from models.training import ShuffledBatches, quiet_trainer

PROBABILITY_EPS = 1e-7  # keeps every log finite in float32
POSITION_BIAS_MODES = ("none", "learned", "propensities")
QUERY_TOWERS = ("text", "user")
UNSEEN_ID = 0  # embedding row shared by ids not seen in training


# --- pure functions (tower-independent) ----------------------------------------------------


def level_labels(actions: Sequence[Sequence[str] | None], levels: Sequence[str]) -> np.ndarray:
    """y[n, k] = 1 when result n reached level k, i.e. received action k or any higher one.

    Counting higher actions makes the labels nested even when a log has a love without a
    click event (the love implies the click level was reached).
    """
    if not levels:
        raise ValueError("at least one feedback level is needed")
    rank = {name: k for k, name in enumerate(levels)}
    labels = np.zeros((len(actions), len(levels)), dtype=np.float32)
    for row, names in enumerate(actions):
        highest = max((rank[a] for a in names or () if a in rank), default=-1)
        labels[row, : highest + 1] = 1.0
    return labels


def ordered_thresholds(raw: Tensor) -> Tensor:
    """Non-decreasing thresholds a_1 <= ... <= a_K from free parameters raw[K]."""
    steps = F.softplus(raw[1:])
    return torch.cat([raw[:1], raw[:1] + torch.cumsum(steps, dim=0)])


def nested_probabilities(level_logits: Tensor, thresholds: Tensor) -> Tensor:
    """P(level >= k) for raw level scores g[N, K] and non-decreasing thresholds a[K].

    z_1 = g_1, z_k = z_{k-1} - softplus(g_k), p_k = sigmoid(z_k - a_k); p is non-increasing
    along k (see the module docstring) and within [PROBABILITY_EPS, 1 - PROBABILITY_EPS].
    """
    if level_logits.ndim != 2 or thresholds.shape != level_logits.shape[1:]:
        raise ValueError(
            f"need logits [N, K] and thresholds [K]; got {tuple(level_logits.shape)} and {tuple(thresholds.shape)}"
        )
    if (thresholds[1:] < thresholds[:-1]).any():
        raise ValueError("thresholds must be non-decreasing (build them with ordered_thresholds)")
    increments = torch.cat([level_logits[:, :1], -F.softplus(level_logits[:, 1:])], dim=1)
    # float32 sigmoid saturates to exactly 0 or 1 beyond |x| ~ 17; clamping (monotone) keeps the
    # nesting and keeps every probability a usable reward strictly inside (0, 1).
    probs = torch.sigmoid(torch.cumsum(increments, dim=1) - thresholds)
    return probs.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)


def gnolr_loss(probs: Tensor, labels: Tensor, binary_weight: float = 0.5, row_weights: Tensor | None = None) -> Tensor:
    """Mean GNOLR loss over rows: the nested ordinal term plus `binary_weight` x per-level BCE.

    ordinal = -[(1 - y_1) log(1 - p_1) + sum_{k<K} max(y_k - y_{k+1}, 0) log(p_k - p_{k+1})
                + y_K log p_K]
    binary  = -sum_k [y_k log p_k + (1 - y_k) log(1 - p_k)]
    Probabilities and their differences are clamped to PROBABILITY_EPS before the logs.
    `row_weights` [N], when given, weighs each row's loss in the mean.
    """
    if probs.shape != labels.shape or probs.ndim != 2:
        raise ValueError(f"probs and labels must both be [N, K]; got {tuple(probs.shape)} and {tuple(labels.shape)}")
    if (labels[:, 1:] > labels[:, :-1]).any():
        raise ValueError("labels must be nested (a row that reached level k+1 reached level k too)")
    p = probs.clamp(PROBABILITY_EPS, 1 - PROBABILITY_EPS)
    y = labels.to(p.dtype)
    below_first = (1 - y[:, 0]) * torch.log1p(-p[:, 0])
    between = (y[:, :-1] - y[:, 1:]).clamp(min=0) * torch.log((p[:, :-1] - p[:, 1:]).clamp(min=PROBABILITY_EPS))
    top = y[:, -1] * torch.log(p[:, -1])
    ordinal = -(below_first + between.sum(dim=1) + top)
    binary = F.binary_cross_entropy(p, y, reduction="none").sum(dim=1)
    per_row = ordinal + binary_weight * binary
    return (per_row if row_weights is None else row_weights * per_row).mean()


# --- configuration -------------------------------------------------------------------------


@dataclass
class GNOLRConfig:
    levels: list[str] = field(default_factory=lambda: ["click", "love"])  # above the impression, low to high
    query_tower: str = "text"  # "text": MiniLM of the query text; "user": a user-id embedding
    use_doc_id: bool = True  # add a learned id embedding to the document's text features
    id_embedding_dim: int = 16
    id_dropout: float = 0.2  # share of training rows whose id is replaced by the unseen-id row
    hidden_dim: int = 128
    # Add w_k * cosine(query text, doc text) to each level's score (text query tower only): with
    # few training queries the towers alone do not learn a similarity that transfers to new texts.
    text_match: bool = True
    level_embedding_dim: int = 32  # size of each level's sub-embedding
    position_bias: str = "learned"  # "none", "learned" (theta_1 = 1) or "propensities" (given theta)
    max_position: int = 20  # learned theta for positions 1..max_position; deeper ones share the last
    binary_weight: float = 0.5
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    batch_size: int = 1024
    max_epochs: int = 4
    seed: int = 13
    encode_batch_size: int = 64

    def __post_init__(self) -> None:
        self.levels = list(self.levels)
        if not self.levels or len(set(self.levels)) != len(self.levels) or "impression" in self.levels:
            raise ValueError(f"levels must be distinct action names above the impression; got {self.levels}")
        if self.query_tower not in QUERY_TOWERS:
            raise ValueError(f"query_tower must be one of {QUERY_TOWERS}; got {self.query_tower!r}")
        if self.position_bias not in POSITION_BIAS_MODES:
            raise ValueError(f"position_bias must be one of {POSITION_BIAS_MODES}; got {self.position_bias!r}")
        if not 0 <= self.id_dropout < 1:
            raise ValueError(f"id_dropout must be in [0, 1); got {self.id_dropout}")


# --- the towers ----------------------------------------------------------------------------


class ExaminationCurve(nn.Module):
    """theta_p, the probability that a result at position p is examined (1-based positions)."""

    def __init__(self, mode: str, max_position: int, propensities: Sequence[float] | None = None) -> None:
        super().__init__()
        self.mode = mode
        if mode == "propensities":
            theta = torch.as_tensor(list(propensities or ()), dtype=torch.float32)
            if theta.ndim != 1 or len(theta) == 0 or not ((theta > 0) & (theta <= 1)).all():
                raise ValueError("position_bias 'propensities' needs a non-empty sequence of theta in (0, 1]")
            self.register_buffer("theta", theta)
        elif mode == "learned":
            # theta_1 = 1 anchors the scale (relevance and examination are otherwise only identified
            # up to a factor); theta_p = exp(-softplus(b_p)) <= 1 for deeper positions.
            self.deeper = nn.Parameter(torch.zeros(max_position - 1))

    def forward(self, positions: Tensor) -> Tensor:
        if self.mode == "none":
            return torch.ones_like(positions, dtype=torch.float32)
        if self.mode == "propensities":
            return self.theta[(positions - 1).clamp(0, len(self.theta) - 1)]
        theta = torch.cat([torch.ones(1, device=self.deeper.device), torch.exp(-F.softplus(self.deeper))])
        return theta[(positions - 1).clamp(0, len(theta) - 1)]


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))


class TwoTowerGNOLR(L.LightningModule):
    """The two towers, the ordered thresholds and the examination curve, trained on gnolr_loss."""

    def __init__(
        self, config: GNOLRConfig, text_dim: int, n_docs: int, n_users: int, propensities: Sequence[float] | None
    ) -> None:
        super().__init__()
        self.config = config
        k, d = len(config.levels), config.level_embedding_dim
        if config.query_tower == "text":
            self.query_tower: nn.Module = _mlp(text_dim, config.hidden_dim, k * d)
        else:
            self.query_tower = nn.Embedding(n_users + 1, k * d)
        self.doc_ids = nn.Embedding(n_docs + 1, config.id_embedding_dim) if config.use_doc_id else None
        doc_in = text_dim + (config.id_embedding_dim if config.use_doc_id else 0)
        self.doc_tower = _mlp(doc_in, config.hidden_dim, k * d)
        self.text_match_weight = (
            nn.Parameter(torch.ones(k)) if config.text_match and config.query_tower == "text" else None
        )
        self.raw_thresholds = nn.Parameter(torch.arange(k, dtype=torch.float32))
        self.examination = ExaminationCurve(config.position_bias, config.max_position, propensities)
        self.epoch_losses: list[float] = []
        self._epoch_loss_sum: Tensor | float = 0.0
        self._epoch_rows = 0

    def level_logits(self, batch: Mapping[str, Tensor]) -> Tensor:
        k, d = len(self.config.levels), self.config.level_embedding_dim
        query = self.query_tower(batch["query"])
        doc_in = batch["doc_text"]
        if self.doc_ids is not None:
            doc_in = torch.cat([doc_in, self.doc_ids(batch["doc_id"])], dim=1)
        doc = self.doc_tower(doc_in)
        logits = (query.view(-1, k, d) * doc.view(-1, k, d)).sum(dim=2)
        if self.text_match_weight is not None:
            cosine = (batch["query"] * batch["doc_text"]).sum(dim=1, keepdim=True)  # the features are unit vectors
            logits = logits + cosine * self.text_match_weight
        return logits

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """P(level >= k | examined) for each row of the batch, [B, K]."""
        return nested_probabilities(self.level_logits(batch), ordered_thresholds(self.raw_thresholds))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if self.config.id_dropout > 0:
            batch = dict(batch)
            for key in ("doc_id", "query") if self.config.query_tower == "user" else ("doc_id",):
                dropped = torch.rand(batch[key].shape, device=batch[key].device) < self.config.id_dropout
                batch[key] = batch[key].masked_fill(dropped, UNSEEN_ID)
        observed = self(batch) * self.examination(batch["position"]).unsqueeze(1)
        loss = gnolr_loss(observed, batch["labels"], self.config.binary_weight)
        # Summed on the device: a float() here would synchronise with the GPU every step.
        self._epoch_loss_sum = self._epoch_loss_sum + loss.detach() * len(batch["labels"])
        self._epoch_rows += len(batch["labels"])
        return loss

    def on_train_epoch_end(self) -> None:
        self.epoch_losses.append(float(self._epoch_loss_sum) / max(self._epoch_rows, 1))
        self._epoch_loss_sum, self._epoch_rows = 0.0, 0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay)


# --- data plumbing -------------------------------------------------------------------------


@dataclass
class _Rows:
    """A frame turned into tensors: gathered lazily per batch from de-duplicated feature tables."""

    query: Tensor  # [U_q, text_dim] query features, or [N] user indices for the user tower
    query_index: Tensor | None  # [N] row -> query feature row (text tower only)
    doc_text: Tensor  # [U_d, text_dim]
    doc_index: Tensor  # [N] row -> doc feature row
    doc_id: Tensor  # [N] id-embedding row (UNSEEN_ID for unknown ids)
    position: Tensor  # [N]
    labels: Tensor | None  # [N, K]

    def __len__(self) -> int:
        return len(self.doc_index)

    def batch(self, rows: Tensor) -> dict[str, Tensor]:
        query = self.query[self.query_index[rows]] if self.query_index is not None else self.query[rows]
        batch = {
            "query": query,
            "doc_text": self.doc_text[self.doc_index[rows]],
            "doc_id": self.doc_id[rows],
            "position": self.position[rows],
        }
        if self.labels is not None:
            batch["labels"] = self.labels[rows]
        return batch


def _require_columns(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; it has {frame.columns}")


# --- the model -----------------------------------------------------------------------------


class GNOLRModel:
    """A trained GNOLR two-tower model with its vocabularies and cached text features."""

    def __init__(
        self,
        config: GNOLRConfig,
        module: TwoTowerGNOLR,
        doc_vocab: Mapping[str, int],
        user_vocab: Mapping[str, int],
        doc_features: TextEmbeddingCache,
        query_features: TextEmbeddingCache,
    ) -> None:
        self.config = config
        self.module = module
        self.doc_vocab = dict(doc_vocab)
        self.user_vocab = dict(user_vocab)
        self.doc_features = doc_features
        self.query_features = query_features

    @property
    def levels(self) -> list[str]:
        return list(self.config.levels)

    @property
    def training_losses(self) -> list[float]:
        """Mean training loss of each epoch (on the position-aware observed probabilities)."""
        return list(self.module.epoch_losses)

    @classmethod
    def fit(
        cls,
        results: pl.DataFrame,
        docs: Mapping[str, str],
        config: GNOLRConfig | None = None,
        propensities: Sequence[float] | None = None,
        text_features: TextEmbeddingCache | None = None,
    ) -> GNOLRModel:
        """Train on shown results (`results.parquet` rows: query text or user id, doc_id, position,
        actions). `docs` maps doc id -> title+text; `propensities` are theta by position (1-based
        order), required when `config.position_bias == "propensities"`. `text_features` lets
        callers share one document-embedding cache between models."""
        config = config or GNOLRConfig()
        if results.is_empty():
            raise ValueError("no shown results to train GNOLR on")
        _require_columns(results, ["doc_id", "position", "actions", _query_column(config)], "results")
        if config.position_bias == "propensities" and propensities is None:
            raise ValueError("position_bias 'propensities' needs the propensities (theta by position)")
        torch.manual_seed(config.seed)
        doc_vocab = {doc_id: i for i, doc_id in enumerate(results["doc_id"].unique(maintain_order=True).to_list(), 1)}
        user_vocab = {}
        if config.query_tower == "user":
            users = results["user_id"].drop_nulls().unique(maintain_order=True).to_list()
            user_vocab = {user: i for i, user in enumerate(users, 1)}
        doc_features = text_features or TextEmbeddingCache(batch_size=config.encode_batch_size)
        query_features = TextEmbeddingCache(doc_features.model_path, config.encode_batch_size)
        module = TwoTowerGNOLR(config, doc_features.dim, len(doc_vocab), len(user_vocab), propensities)
        model = cls(config, module, doc_vocab, user_vocab, doc_features, query_features)

        rows = model._rows(results, docs, with_labels=True)
        batches = ShuffledBatches(len(rows), config.batch_size, config.seed, rows.batch)
        quiet_trainer(config.max_epochs).fit(module, train_dataloaders=batches)
        module.eval()
        return model

    def predict(self, frame: pl.DataFrame, docs: Mapping[str, str] | None = None) -> np.ndarray:
        """P(level >= k | examined) for each row, [N, K] in `levels` order (non-increasing along k).

        "Examined" is relative to the examination curve: with learned position bias theta_1 = 1,
        so this is the probability at position 1; with given propensities it is per examination.
        `docs` supplies texts for documents not cached at training time (new documents).
        """
        _require_columns(frame, ["doc_id", _query_column(self.config)], "frame to score")
        rows = self._rows(frame.drop("position", strict=False), docs or {}, with_labels=False)
        return self._forward_in_batches(rows, self.module)

    def predict_observed(self, frame: pl.DataFrame, docs: Mapping[str, str] | None = None) -> np.ndarray:
        """P(level >= k at the row's shown position) = theta_position x P(level >= k | examined), [N, K]."""
        _require_columns(frame, ["doc_id", "position", _query_column(self.config)], "frame to score")
        rows = self._rows(frame, docs or {}, with_labels=False)
        return self._forward_in_batches(
            rows, lambda batch: self.module(batch) * self.module.examination(batch["position"]).unsqueeze(1)
        )

    def examination(self, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """theta_p of the model's examination curve for 1-based positions."""
        positions = torch.as_tensor(np.asarray(positions, dtype=np.int64), device=self.module.device)
        if len(positions) and int(positions.min()) < 1:
            raise ValueError("positions are 1-based")
        with torch.no_grad():
            return self.module.examination(positions).cpu().numpy()

    def save(self, directory: str | Path) -> None:
        """Write config.json, model.pt and the text-feature caches into `directory`, atomically."""
        examination = self.module.examination
        meta = {
            "config": asdict(self.config),
            "text_dim": self.doc_features.dim,
            "doc_vocab": self.doc_vocab,
            "user_vocab": self.user_vocab,
            "propensities": examination.theta.tolist() if examination.mode == "propensities" else None,
            "epoch_losses": self.module.epoch_losses,
        }
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            (tmp / "config.json").write_text(json.dumps(meta, indent=2))
            torch.save({k: v.cpu() for k, v in self.module.state_dict().items()}, tmp / "model.pt")
            self.doc_features.save(tmp / "doc_features")
            self.query_features.save(tmp / "query_features")

    @classmethod
    def load(cls, directory: str | Path) -> GNOLRModel:
        directory = Path(directory)
        meta: dict[str, Any] = json.loads((directory / "config.json").read_text())
        config = from_dict(GNOLRConfig, meta["config"], where=str(directory / "config.json"))
        module = TwoTowerGNOLR(
            config, meta["text_dim"], len(meta["doc_vocab"]), len(meta["user_vocab"]), meta["propensities"]
        )
        module.load_state_dict(torch.load(directory / "model.pt", map_location="cpu", weights_only=True))
        module.epoch_losses = list(meta["epoch_losses"])
        module.eval()
        doc_features = TextEmbeddingCache.load(directory / "doc_features", config.encode_batch_size)
        query_features = TextEmbeddingCache.load(directory / "query_features", config.encode_batch_size)
        return cls(config, module, meta["doc_vocab"], meta["user_vocab"], doc_features, query_features)

    # internals

    def _forward_in_batches(self, rows: _Rows, forward: Callable[[dict[str, Tensor]], Tensor]) -> np.ndarray:
        device = self.module.device
        outputs = []
        self.module.eval()
        with torch.no_grad():
            for start in range(0, len(rows), self.config.batch_size * 4):
                index = torch.arange(start, min(start + self.config.batch_size * 4, len(rows)))
                batch = {key: value.to(device) for key, value in rows.batch(index).items()}
                outputs.append(forward(batch).cpu())
        width = len(self.config.levels)
        return torch.cat(outputs).numpy() if outputs else np.zeros((0, width), dtype=np.float32)

    def _rows(self, frame: pl.DataFrame, docs: Mapping[str, str], with_labels: bool) -> _Rows:
        doc_ids = frame["doc_id"].cast(pl.String).to_list()
        unique_docs = list(dict.fromkeys(doc_ids))
        uncached = [d for d in unique_docs if d not in self.doc_features]
        no_text = [d for d in uncached if d not in docs]
        if no_text:
            raise KeyError(f"no text for {len(no_text)} document(s), e.g. {no_text[:3]}")
        self.doc_features.embed({d: docs[d] for d in uncached})
        doc_row = {d: i for i, d in enumerate(unique_docs)}
        if self.config.query_tower == "text":
            queries = frame["user_query"].cast(pl.String).to_list()
            if any(q is None or not q.strip() for q in queries):
                raise ValueError("every row needs a non-empty user_query for the text query tower")
            unique_queries = list(dict.fromkeys(queries))
            self.query_features.embed({q: q for q in unique_queries})
            query_row = {q: i for i, q in enumerate(unique_queries)}
            query = torch.from_numpy(self.query_features.matrix(unique_queries))
            query_index: Tensor | None = torch.tensor([query_row[q] for q in queries], dtype=torch.long)
        else:
            users = frame["user_id"].cast(pl.String).to_list()
            query = torch.tensor([self.user_vocab.get(u, UNSEEN_ID) for u in users], dtype=torch.long)
            query_index = None
        if "position" in frame.columns:
            if frame["position"].null_count() or (frame["position"] < 1).any():
                raise ValueError("positions must be present and 1-based")
            positions = frame["position"].cast(pl.Int64).to_numpy(writable=True)
        else:  # scoring without a position: the examined probability does not depend on it
            positions = np.ones(len(frame), dtype=np.int64)
        labels = None
        if with_labels:
            labels = torch.from_numpy(level_labels(frame["actions"].to_list(), self.config.levels))
        return _Rows(
            query=query,
            query_index=query_index,
            doc_text=torch.from_numpy(self.doc_features.matrix(unique_docs)),
            doc_index=torch.tensor([doc_row[d] for d in doc_ids], dtype=torch.long),
            doc_id=torch.tensor([self.doc_vocab.get(d, UNSEEN_ID) for d in doc_ids], dtype=torch.long),
            position=torch.from_numpy(positions),
            labels=labels,
        )


def _query_column(config: GNOLRConfig) -> str:
    return "user_query" if config.query_tower == "text" else "user_id"


def evaluate_levels(model: GNOLRModel, results: pl.DataFrame, docs: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Per level on (held-out) shown results: AUC of the position-aware prediction and of the
    examined-only prediction against whether the level was reached, with the base rates."""
    from sklearn.metrics import roc_auc_score

    labels = level_labels(results["actions"].to_list(), model.levels)
    observed = model.predict_observed(results, docs)
    examined = model.predict(results, docs)
    report = {}
    for k, level in enumerate(model.levels):
        reached = labels[:, k]
        both_classes = 0 < reached.sum() < len(reached)
        report[level] = {
            "n": len(reached),
            "rate": float(reached.mean()),
            "mean_predicted": float(observed[:, k].mean()),
            "auc": float(roc_auc_score(reached, observed[:, k])) if both_classes else float("nan"),
            "auc_examined_only": float(roc_auc_score(reached, examined[:, k])) if both_classes else float("nan"),
        }
    return report
