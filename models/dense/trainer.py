"""Fine-tuning the dense encoder on the feedback: one config dataclass, one Lightning module, one call.

Each step takes `batch_queries` training queries (`models.feedback_queries.TrainingQuery`), each
with one positive (drawn by label weight) and `negatives` hard negatives from its teacher candidates
(documents the teachers ranked high that no label calls relevant: beyond what was shown), and
minimises
- a ranking loss: softmax cross-entropy of the positive's scaled cosine similarity against every
  document of the batch (its own hard negatives and the other queries' documents, the in-batch
  negatives), with the query's other known positives masked out of its negatives;
- optionally (`distill_weight`), KL divergence from the teachers' normalised, averaged and scaled
  scores over the query's own documents to the student's, which keeps the encoder close to the
  teachers' judgement where the labels say nothing.
The whole transformer learns (AdamW, linear warmup then linear decay).

Validation is a seeded split of the training queries (never a test judgment): each held-out query
ranks a fixed pool, the held-out queries' positives and their `validation_candidates` best teacher
candidates (the documents hardest to tell from the positives) plus `distractors` documents drawn at
random from the corpus, by the encoder's cosine similarity; the score is the mean nDCG@10. The pool
keeps validation affordable on CPU (encoding the whole corpus every epoch would cost more than the
training), and its random documents still catch an encoder that pulls unrelated documents up. The
untrained encoder is measured the same way first; the encoder ends with the weights of the best
epoch, or its starting weights when no epoch beat them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor

from models.feedback_queries import TrainingQuery, ndcg_at_10, split_queries
from models.training import ShuffledBatches, fit_best_epoch


@dataclass
class DenseTrainingConfig:
    """params.yaml: dense_feedback.training."""

    batch_queries: int = 16  # queries per step; each one's documents are negatives of the others
    negatives: int = 1  # hard negatives per query, from its teacher candidates that no label calls positive
    scale: float = 20.0  # cosine similarity x this is the logit (sentence-transformers' ranking-loss default)
    distill_weight: float = 0.0  # weight of the KL to the teachers' ensemble (0: labels only)
    ensemble_scale: float = 20.0  # the averaged [0, 1] teacher score times this is the target logit
    lr: float = 3.0e-5
    weight_decay: float = 0.01
    warmup_share: float = 0.1  # of the planned steps, linear warmup; then linear decay to zero
    max_epochs: int = 2
    max_steps: int = -1
    patience: int = 1  # epochs without a better validation nDCG@10 before stopping
    validation_share: float = 0.1
    validation_candidates: int = 10  # per held-out query, its top candidates by the teachers' target (hard ones)
    distractors: int = 500  # random corpus documents every held-out query ranks with the candidates
    train_max_seq_length: int = 64  # tokens of a document in training and validation (cost grows with it)
    encode_batch_size: int = 64  # documents per forward pass in validation
    seed: int = 13
    progress: bool = True
    checkpoint_dir: str = ""  # empty: a temporary folder, removed after training

    def __post_init__(self) -> None:
        if self.batch_queries < 1 or self.negatives < 0:
            raise ValueError("batch_queries must be at least 1 and negatives at least 0")
        if not 0 < self.validation_share < 1:
            raise ValueError(f"validation_share must be in (0, 1), got {self.validation_share}")
        if not 0 <= self.warmup_share < 1 or min(self.distractors, self.validation_candidates, self.distill_weight) < 0:
            raise ValueError("warmup_share must be in [0, 1); distractors, validation_candidates and distill_weight "
                             "at least 0")


@dataclass
class DenseTrainingResult:
    kept_base: bool  # no epoch validated better than the encoder training started from, which is kept
    base_val_ndcg: float | None  # None: not trained (see `skipped`)
    best_val_ndcg: float | None
    epochs: int
    steps: int
    n_train: int
    n_val: int
    n_validation_docs: int  # the pool the held-out queries rank
    history: list[dict[str, float]] = field(default_factory=list)
    skipped: str = ""  # why there was no training, when there was none


@dataclass
class ValidationPool:
    """Held-out queries and the documents they rank: their teacher candidates and random distractors."""

    queries: list[str]
    rows: np.ndarray  # corpus rows of the pool: the columns of the scores
    gains: list[dict[int, float]]  # per query: pool column -> label (> 0)

    @classmethod
    def of(cls, queries: Sequence[TrainingQuery], n_docs: int, candidates: int, distractors: int, seed: int
           ) -> ValidationPool:
        # Its own generator: the pool must not depend on what else drew from the seed.
        rng = np.random.default_rng([seed, 1])
        drawn = rng.choice(n_docs, size=min(distractors, n_docs), replace=False)
        kept = [q.candidates[np.union1d(q.positives, np.argsort(-q.target, kind="stable")[:candidates])]
                for q in queries]
        rows = np.unique(np.concatenate([drawn, *kept]).astype(np.int64))
        column = {int(row): j for j, row in enumerate(rows)}
        gains = [{column[int(q.candidates[i])]: float(q.labels[i]) for i in q.positives} for q in queries]
        return cls([q.text for q in queries], rows, gains)

    def ndcg_at_10(self, scores: Tensor) -> float:
        """Mean nDCG@10 of (n queries, pool size) scores; unlabelled documents count as irrelevant."""
        top = torch.topk(scores, min(10, scores.shape[1]), dim=1).indices.numpy()
        return float(np.mean([
            ndcg_at_10(np.array([gains.get(int(col), 0.0) for col in cols]), ideal=list(gains.values()))
            for cols, gains in zip(top, self.gains, strict=True)
        ]))


class TextChunks:
    """Fixed chunks of texts, for validation (a sized iterable is a data loader to Lightning)."""

    def __init__(self, texts: Sequence[str], size: int):
        self.chunks = [list(texts[s : s + size]) for s in range(0, len(texts), size)]

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[dict[str, list[str]]]:
        return iter({"texts": chunk} for chunk in self.chunks)


class BatchMaker:
    """Turns training-query indices into a step's batch: texts, teacher targets, masks (seeded)."""

    def __init__(self, queries: Sequence[TrainingQuery], doc_texts: Sequence[str], config: DenseTrainingConfig):
        self.queries, self.doc_texts, self.config = queries, doc_texts, config
        self.rng = np.random.default_rng([config.seed, 2])

    def __call__(self, picked: Tensor) -> dict[str, Any]:
        rows, targets, has_positive = [], [], []
        for i in picked.tolist():
            chosen = self._documents(self.queries[i])
            rows.append(self.queries[i].candidates[chosen])
            targets.append(self.queries[i].target[chosen])
            has_positive.append(len(self.queries[i].positives) > 0)
        rows_array = np.array(rows, dtype=np.int64)  # (B, 1 + negatives)
        per_query = rows_array.shape[1]
        # A query's other positives (another query's positive, a duplicate) must not count as its negatives.
        masked = np.zeros((len(rows), rows_array.size), dtype=bool)
        for b, i in enumerate(picked.tolist()):
            query = self.queries[i]
            positives = query.candidates[query.positives]
            masked[b] = np.isin(rows_array.ravel(), positives)
            if has_positive[b]:
                masked[b, b * per_query] = False  # its own positive, the target
        return {
            "queries": [self.queries[i].text for i in picked.tolist()],
            "documents": [self.doc_texts[r] for r in rows_array.ravel()],
            "target": torch.tensor(np.array(targets), dtype=torch.float32),
            "has_positive": torch.tensor(has_positive),
            "masked": torch.tensor(masked),
        }

    def _documents(self, query: TrainingQuery) -> np.ndarray:
        """Positions in the candidate list: a positive first (when there is one), then hard negatives."""
        first: list[int] = []
        if len(query.positives):
            weights = query.labels[query.positives] / query.labels[query.positives].sum()
            first = [int(self.rng.choice(query.positives, p=weights))]
        n = self.config.negatives + 1 - len(first)
        pool = query.negatives
        if not len(pool):  # no negative to mine: any other candidate (a positive among them is masked)
            pool = np.setdiff1d(np.arange(len(query.candidates)), first)
        rest = self.rng.choice(pool, n, replace=len(pool) < n) if n else np.array([], dtype=np.int64)
        return np.array([*first, *rest], dtype=np.int64)


class DenseEncoderModule(L.LightningModule):
    def __init__(self, model: SentenceTransformer, config: DenseTrainingConfig, pool: ValidationPool,
                 planned_steps: int):
        super().__init__()
        self.model, self.config, self.pool = model, config, pool
        self.planned_steps = max(1, planned_steps)
        self._val_docs: list[Tensor] = []
        self.history: list[dict[str, float]] = []

    def embed(self, texts: Sequence[str]) -> Tensor:
        """Unit-length embeddings of `texts` (the index normalises too: the score is the cosine)."""
        features = self.model.preprocess(list(texts))
        features = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in features.items()}
        return F.normalize(self.model(features)["sentence_embedding"], dim=-1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        queries, docs = self.embed(batch["queries"]), self.embed(batch["documents"])
        scores = (queries @ docs.T * self.config.scale).masked_fill(batch["masked"], float("-inf"))  # (B, B * C)
        n_queries, per_query = batch["target"].shape
        has_positive = batch["has_positive"]
        ranking = torch.zeros((), device=self.device)
        if has_positive.any():
            targets = torch.arange(n_queries, device=self.device) * per_query
            ranking = F.cross_entropy(scores[has_positive], targets[has_positive])
        loss = ranking
        terms = {"ranking": ranking}
        if self.config.distill_weight > 0:
            own = (queries.unsqueeze(1) * docs.view(n_queries, per_query, -1)).sum(-1) * self.config.scale
            teacher = torch.log_softmax(batch["target"] * self.config.ensemble_scale, dim=1)
            distill = F.kl_div(torch.log_softmax(own, dim=1), teacher, log_target=True, reduction="batchmean")
            loss = loss + self.config.distill_weight * distill
            terms["distill"] = distill
        self.log_dict({f"train_{k}": v for k, v in terms.items()}, prog_bar=True, batch_size=n_queries)
        return loss

    def validation_step(self, batch: dict[str, list[str]], batch_idx: int) -> None:
        self._val_docs.append(self.embed(batch["texts"]).float().cpu())

    def on_validation_epoch_end(self) -> None:
        docs = torch.cat(self._val_docs)
        self._val_docs.clear()
        queries = torch.cat([self.embed(self.pool.queries[s : s + self.config.encode_batch_size]).float().cpu()
                             for s in range(0, len(self.pool.queries), self.config.encode_batch_size)])
        value = self.pool.ndcg_at_10(queries @ docs.T)
        self.log("val_ndcg", value, prog_bar=True)
        self.history.append({"epoch": self.current_epoch, "step": self.global_step, "val_ndcg": value})

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr,
                                      weight_decay=self.config.weight_decay)
        warmup = math.ceil(self.config.warmup_share * self.planned_steps)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (self.planned_steps - step) / max(1, self.planned_steps - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def trainable_queries(queries: Sequence[TrainingQuery], config: DenseTrainingConfig) -> list[TrainingQuery]:
    """The queries a step can learn from: with a positive for the ranking loss; without one only
    when the teachers are distilled (their target is all such a query teaches)."""
    return [q for q in queries if len(q.candidates) >= 2 and (len(q.positives) or config.distill_weight > 0)]


def train_dense_encoder(
    model: SentenceTransformer,
    doc_texts: Sequence[str],
    queries: Sequence[TrainingQuery],
    config: DenseTrainingConfig,
) -> DenseTrainingResult:
    """Fine-tune `model` in place on `queries`; it ends with the weights of the best validation epoch,
    or with its own when no epoch validated better.

    `doc_texts` are the corpus documents as the index encodes them (`indexing.dense.document_text`),
    in the row order of the queries' `candidates`; `queries` come from
    `models.feedback_queries.with_teachers` (any signal). A seeded share of them
    (`config.validation_share`, among those with a positive) is held out for validation. Without a
    query to train on and one to validate on, the model is left untouched (`skipped` says why).
    """
    L.seed_everything(config.seed, workers=True, verbose=False)
    train, val = split_queries(queries, config.validation_share, config.seed)
    train = trainable_queries(train, config)
    if not train or not val:
        # Too little feedback yet (e.g. the first days of logs): nothing to learn from, or nothing to
        # check a trained encoder against; the base encoder stays as it is.
        return DenseTrainingResult(
            kept_base=True, base_val_ndcg=None, best_val_ndcg=None, epochs=0, steps=0, n_train=len(train),
            n_val=len(val), n_validation_docs=0,
            skipped=f"{len(train)} training and {len(val)} validation queries with a positive label",
        )
    pool = ValidationPool.of(val, len(doc_texts), config.validation_candidates, config.distractors, config.seed)
    batches = ShuffledBatches(len(train), config.batch_queries, config.seed, BatchMaker(train, doc_texts, config))
    planned = len(batches) * config.max_epochs
    planned = min(planned, config.max_steps) if config.max_steps > 0 else planned
    module = DenseEncoderModule(model, config, pool, planned)
    val_batches = TextChunks([doc_texts[r] for r in pool.rows], config.encode_batch_size)
    serving_length = model.max_seq_length
    model.max_seq_length = config.train_max_seq_length
    try:
        fitted = fit_best_epoch(
            module, batches, val_batches, max_epochs=config.max_epochs, max_steps=config.max_steps,
            patience=config.patience, progress=config.progress, checkpoint_dir=config.checkpoint_dir,
        )
    finally:
        model.max_seq_length = serving_length
    model.eval()
    return DenseTrainingResult(
        kept_base=fitted.kept_start,
        base_val_ndcg=fitted.start_score,
        best_val_ndcg=fitted.best_score,
        epochs=fitted.epochs,
        steps=fitted.steps,
        n_train=len(train),
        n_val=len(val),
        n_validation_docs=len(pool.rows),
        history=module.history,
    )
