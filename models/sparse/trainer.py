"""Training the inference-free sparse encoder: one config dataclass, one Lightning module, one call.

Each step takes `batch_queries` queries, each with one positive (drawn by label weight) and
`negatives` hard negatives from its candidate list, and minimises
- a ranking loss: softmax cross-entropy of the positive against every document of the batch
  (its own negatives and the other queries' documents);
- ensemble distillation: KL divergence from the teachers' normalised, averaged and scaled scores
  over the query's documents to the student's;
- the FLOPS regulariser on the document vectors, IDF-aware by default (a token's penalty grows as
  its IDF falls, so frequent words are pruned first), its weight ramped up quadratically.
The student's score of a document is the dot product of the query's token weights (trainable, with
their own learning rate) with the document's SPLADE vector. Only the tokens of the batch's queries
and a random sample of the vocabulary (for the regulariser, rescaled to the whole vocabulary) are
projected, and the frozen backbone's states come from `models.sparse.cache`. Validation searches
the whole corpus for each held-out training query, exactly as the index would on its tokens;
early stopping and the checkpoint keep the best nDCG@10.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from sentence_transformers import SparseEncoder
from torch import Tensor

from models.feedback_queries import TrainingQuery, ndcg_at_10, split_queries
from models.sparse.cache import DocumentStates
from models.sparse.encoder import (
    backbone,
    document_logits,
    mlm_head,
    query_module,
    query_token_ids,
    special_token_ids,
    splade_pool,
)
from models.training import fit_best_epoch

FLOPS_KINDS = ("idf", "plain")


@dataclass
class SparseTrainingConfig:
    """params.yaml: sparse.training."""

    batch_queries: int = 16
    negatives: int = 7
    ranking_weight: float = 1.0
    distill_weight: float = 1.0
    ensemble_scale: float = 20.0  # the averaged [0, 1] teacher score times this is the target logit
    flops: str = "idf"  # idf | plain
    flops_weight: float = 1.0e-4
    flops_ramp_steps: int = 100
    lr: float = 3.0e-4  # MLM head (transform and decoder bias); 1e-3 unlearns the identity transform
    train_decoder: bool = False  # also move each token's output vector (untied from the word embeddings)
    decoder_lr: float = 1.0e-4
    query_lr: float = 1.0e-2  # the query token weights
    train_max_seq_length: int = 128  # documents are cut to this many tokens in training steps
    vocab_sample: int = 1024  # random tokens per step for the regulariser
    max_epochs: int = 8
    max_steps: int = -1
    patience: int = 2
    validation_share: float = 0.1
    seed: int = 13
    progress: bool = True
    checkpoint_dir: str = ""  # empty: a temporary folder, removed after training

    def __post_init__(self) -> None:
        if self.flops not in FLOPS_KINDS:
            raise ValueError(f"flops must be one of {FLOPS_KINDS}, got {self.flops!r}")
        if self.batch_queries < 1 or self.negatives < 1:
            raise ValueError("batch_queries and negatives must be at least 1")
        if not 0 < self.validation_share < 1:
            raise ValueError(f"validation_share must be in (0, 1), got {self.validation_share}")


@dataclass
class TrainingResult:
    kept_untrained: bool  # no epoch validated better than the untrained encoder, which is kept
    best_val_ndcg: float
    untrained_val_ndcg: float
    epochs: int
    steps: int
    n_train: int
    n_val: int
    history: list[dict[str, float]] = field(default_factory=list)


def flops_penalty(idf: np.ndarray, kind: str) -> Tensor:
    """Per-token FLOPS weight: 1 for plain; mean IDF / token IDF for IDF-aware (a token at a tenth
    of the mean IDF costs ten times more to keep), floored so no weight passes 100."""
    if kind == "plain":
        return torch.ones(len(idf))
    return torch.tensor(float(np.mean(idf)) / np.maximum(idf, float(np.mean(idf)) / 100.0), dtype=torch.float32)


class SparseEncoderModule(L.LightningModule):
    def __init__(self, model: SparseEncoder, states: DocumentStates, idf: np.ndarray, config: SparseTrainingConfig,
                 validation: ValidationQueries):
        super().__init__()
        self.validation = validation
        self.model, self.states, self.config = model, states, config
        backbone(model).requires_grad_(False)
        mlm_head(model).decoder.weight.requires_grad_(bool(config.train_decoder))
        self.register_buffer("penalty", flops_penalty(idf, config.flops))
        self.vocab_size = len(idf)
        self._val_scores: list[Tensor] = []
        self.history: list[dict[str, float]] = []

    def doc_vectors(self, rows: Tensor, vocab: Tensor) -> Tensor:
        hidden, lengths = self.states.padded(rows.tolist(), self.config.train_max_seq_length)
        logits = document_logits(self.model, hidden.to(self.device), vocab)
        return splade_pool(logits, lengths.to(self.device)).float()

    def query_weights(self, presence: Tensor, vocab: Tensor) -> Tensor:
        return presence * query_module(self.model).weight[vocab]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        n_query_vocab = batch["query_vocab"].numel()
        vocab = torch.cat([batch["query_vocab"], batch["sample_vocab"]])
        docs = self.doc_vectors(batch["rows"].flatten(), vocab)  # (B * C, |vocab|)
        queries = self.query_weights(batch["presence"], batch["query_vocab"])  # (B, |query vocab|)
        scores = queries @ docs[:, :n_query_vocab].T  # (B, B * C)
        n_queries, per_query = batch["rows"].shape
        own = scores.view(n_queries, n_queries, per_query)[torch.arange(n_queries), torch.arange(n_queries)]
        has_positive = batch["has_positive"]
        ranking = torch.zeros((), device=self.device)
        if has_positive.any():
            targets = torch.arange(n_queries, device=self.device) * per_query
            ranking = torch.nn.functional.cross_entropy(scores[has_positive], targets[has_positive])
        teacher = torch.log_softmax(batch["target"] * self.config.ensemble_scale, dim=1)
        distill = torch.nn.functional.kl_div(
            torch.log_softmax(own, dim=1), teacher, log_target=True, reduction="batchmean"
        )
        sample = docs[:, n_query_vocab:]
        flops = (self.penalty[batch["sample_vocab"]] * sample.mean(dim=0) ** 2).sum()
        flops = flops * self.vocab_size / batch["sample_vocab"].numel()
        ramp = min(1.0, (self.global_step + 1) / max(1, self.config.flops_ramp_steps)) ** 2
        loss = (
            self.config.ranking_weight * ranking
            + self.config.distill_weight * distill
            + ramp * self.config.flops_weight * flops
        )
        terms = {"ranking": ranking, "distill": distill, "flops": flops, "doc_terms": (sample > 0).float().mean()}
        self.log_dict({f"train_{k}": v for k, v in terms.items()}, prog_bar=True, batch_size=n_queries)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Score one chunk of the corpus for every held-out query (on their own tokens: exact)."""
        vocab = self.validation.vocab.to(self.device)
        hidden, lengths = self.states.padded(batch["rows"].tolist())
        docs = splade_pool(document_logits(self.model, hidden.to(self.device), vocab), lengths.to(self.device))
        queries = self.query_weights(self.validation.presence.to(self.device), vocab)
        self._val_scores.append((queries @ docs.float().T).cpu())

    def on_validation_epoch_end(self) -> None:
        scores = torch.cat(self._val_scores, dim=1)
        self._val_scores.clear()
        value = self.validation.ndcg_at_10(scores)
        self.log("val_ndcg", value, prog_bar=True)
        self.history.append({"epoch": self.current_epoch, "step": self.global_step, "val_ndcg": value})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        head = mlm_head(self.model)
        groups = [
            {"params": [*head.transform.parameters(), head.decoder.bias], "lr": self.config.lr},
            {"params": [query_module(self.model).weight], "lr": self.config.query_lr, "weight_decay": 0.0},
        ]
        if self.config.train_decoder:
            # No decay: a step sees a few hundred tokens, and decay would shrink every other row.
            groups.append({"params": [head.decoder.weight], "lr": self.config.decoder_lr, "weight_decay": 0.0})
        return torch.optim.AdamW(groups)


class TrainingBatches:
    """Seeded batches of queries, each with one positive and hard negatives from its candidates."""

    def __init__(self, model: SparseEncoder, queries: Sequence[TrainingQuery], config: SparseTrainingConfig,
                 vocab_size: int):
        self.queries, self.config = queries, config
        self.tokens = query_token_ids(model, [q.text for q in queries])
        self.rng = np.random.default_rng(config.seed)
        self.samplable = np.setdiff1d(np.arange(vocab_size), special_token_ids(model))

    def __len__(self) -> int:
        return math.ceil(len(self.queries) / self.config.batch_queries)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        order = self.rng.permutation(len(self.queries))
        for start in range(0, len(order), self.config.batch_queries):
            yield self._batch(order[start : start + self.config.batch_queries])

    def _batch(self, picked: np.ndarray) -> dict[str, Tensor]:
        per_query = self.config.negatives + 1
        rows, targets, has_positive = [], [], []
        for i in picked:
            chosen = self._documents(self.queries[i], per_query)
            rows.append(self.queries[i].candidates[chosen])
            targets.append(self.queries[i].target[chosen])
            has_positive.append(len(self.queries[i].positives) > 0)
        vocab, presence = _query_vocabulary([self.tokens[i] for i in picked])
        return {
            "rows": torch.tensor(np.array(rows)),
            "target": torch.tensor(np.array(targets), dtype=torch.float32),
            "has_positive": torch.tensor(has_positive),
            "query_vocab": vocab,
            "presence": presence,
            "sample_vocab": torch.tensor(self.rng.choice(self.samplable, self.config.vocab_sample, replace=False)),
        }

    def _documents(self, query: TrainingQuery, n: int) -> np.ndarray:
        """Positions in the candidate list: a positive first (when there is one), then negatives."""
        positives = query.positives
        first: list[int] = []
        if len(positives):
            weights = query.labels[positives] / query.labels[positives].sum()
            first = [int(self.rng.choice(positives, p=weights))]
        pool = query.negatives if len(query.negatives) else np.setdiff1d(np.arange(len(query.candidates)), first)
        rest = self.rng.choice(pool, n - len(first), replace=len(pool) < n - len(first))
        return np.array([*first, *rest])


class FixedBatches:
    """Batches built once; a plain list would read to Lightning as one data loader per element."""

    def __init__(self, batches: list[dict[str, Tensor]]):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        return iter(self.batches)


@dataclass
class ValidationQueries:
    """Held-out training queries, searched over the whole corpus as the index would search them
    (a reranking of the teachers' candidates would not see a document that lost its own words)."""

    vocab: Tensor  # the queries' distinct tokens
    presence: Tensor  # (n queries, |vocab|) 0/1
    gains: list[dict[int, float]]  # per query: corpus row -> label (> 0)

    @classmethod
    def of(cls, model: SparseEncoder, queries: Sequence[TrainingQuery]) -> ValidationQueries:
        vocab, presence = _query_vocabulary(query_token_ids(model, [q.text for q in queries]))
        gains = [{int(q.candidates[i]): float(q.labels[i]) for i in q.positives} for q in queries]
        return cls(vocab, presence, gains)

    def ndcg_at_10(self, scores: Tensor) -> float:
        """Mean nDCG@10 of (n queries, n docs) scores; unlabelled documents count as irrelevant."""
        top = torch.topk(scores, min(10, scores.shape[1]), dim=1).indices.numpy()
        return float(np.mean([
            ndcg_at_10(np.array([gains.get(int(row), 0.0) for row in rows]), ideal=list(gains.values()))
            for rows, gains in zip(top, self.gains, strict=True)
        ]))

    def corpus_chunks(self, n_docs: int, size: int = 64) -> FixedBatches:
        return FixedBatches([{"rows": torch.arange(s, min(s + size, n_docs))} for s in range(0, n_docs, size)])


def _query_vocabulary(token_lists: Sequence[list[int]]) -> tuple[Tensor, Tensor]:
    """The distinct tokens of some queries and each query's 0/1 presence over them."""
    vocab = sorted({t for tokens in token_lists for t in tokens})
    column = {t: j for j, t in enumerate(vocab)}
    presence = torch.zeros(len(token_lists), max(1, len(vocab)))
    for i, tokens in enumerate(token_lists):
        presence[i, [column[t] for t in tokens]] = 1.0
    return torch.tensor(vocab if vocab else [0], dtype=torch.long), presence


def train_sparse_encoder(
    model: SparseEncoder,
    states: DocumentStates,
    idf: np.ndarray,
    queries: Sequence[TrainingQuery],
    config: SparseTrainingConfig,
) -> TrainingResult:
    """Train `model` in place on `queries`; it ends with the weights of the best validation epoch."""
    L.seed_everything(config.seed, workers=True, verbose=False)
    train, val = split_queries(queries, config.validation_share, config.seed)
    validation = ValidationQueries.of(model, val)
    module = SparseEncoderModule(model, states, idf, config, validation)
    val_batches = validation.corpus_chunks(len(states))
    fitted = fit_best_epoch(
        module, TrainingBatches(model, train, config, len(idf)), val_batches, max_epochs=config.max_epochs,
        max_steps=config.max_steps, patience=config.patience, progress=config.progress,
        checkpoint_dir=config.checkpoint_dir,
    )
    return TrainingResult(
        kept_untrained=fitted.kept_start,
        best_val_ndcg=fitted.best_score,
        untrained_val_ndcg=fitted.start_score,
        epochs=fitted.epochs,
        steps=fitted.steps,
        n_train=len(train),
        n_val=len(val),
        history=module.history,
    )
