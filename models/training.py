"""What every feedback model's training loop shares: the Lightning trainer (the accelerator
Lightning finds, CUDA when present, one device, and no logger, checkpoints or progress bars,
because a pipeline stage reports through its metrics file and its artifacts are saved by the
model itself) and seeded shuffled mini-batches."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import Tensor


def quiet_trainer(max_epochs: int, callbacks: Sequence[L.Callback] = (), max_steps: int = -1,
                  progress: bool = False, checkpointing: bool = False) -> L.Trainer:
    return L.Trainer(
        accelerator="auto",
        devices=1,
        max_epochs=max_epochs,
        max_steps=max_steps,
        logger=False,
        enable_checkpointing=checkpointing,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )


class ShuffledBatches:
    """Mini-batches of row indices 0..n_rows-1, reshuffled every epoch from a seeded generator;
    `make_batch` turns the indices into the tensors a training step reads. Lightning accepts
    any sized iterable as a data loader."""

    def __init__(self, n_rows: int, batch_size: int, seed: int, make_batch: Callable[[Tensor], dict[str, Tensor]]):
        self.n_rows, self.batch_size, self.make_batch = n_rows, batch_size, make_batch
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(self.n_rows / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        order = torch.randperm(self.n_rows, generator=self.generator)
        for start in range(0, self.n_rows, self.batch_size):
            yield self.make_batch(order[start : start + self.batch_size])


@dataclass
class BestEpoch:
    """What `fit_best_epoch` did: validation nDCG@10 at the start and at the best epoch, and whether the
    starting weights were kept because no epoch beat them."""

    start_score: float
    best_score: float
    kept_start: bool
    epochs: int
    steps: int


def fit_best_epoch(
    module: L.LightningModule,
    train_batches: Iterable[Any],
    val_batches: Iterable[Any],
    *,
    max_epochs: int,
    max_steps: int,
    patience: int,
    progress: bool,
    checkpoint_dir: str = "",
) -> BestEpoch:
    """Validate `module` as it starts, fit it with early stopping on its logged `val_ndcg`, and leave it with
    the weights of its best epoch, or with its starting weights when no epoch validated better: a stage never
    ships a model that validates worse than (or only as well as) where training started.

    `module` keeps a `history` list of its validation epochs (the starting validation is not one of them);
    checkpoints go to `checkpoint_dir`, else to a temporary folder removed afterwards.
    """
    with tempfile.TemporaryDirectory(prefix="clickloop-ckpt-") as tmp:
        checkpoint = ModelCheckpoint(dirpath=checkpoint_dir or tmp, monitor="val_ndcg", mode="max", save_top_k=1,
                                     save_weights_only=True)
        stopping = EarlyStopping(monitor="val_ndcg", mode="max", patience=patience)
        trainer = quiet_trainer(max_epochs, [stopping, checkpoint], max_steps=max_steps, progress=progress,
                                checkpointing=True)
        start = float(trainer.validate(module, val_batches, verbose=False)[0]["val_ndcg"])
        initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.history.clear()
        module.train()  # validate left the module in eval mode, and fit keeps the mode it finds (dropout off)
        trainer.fit(module, train_batches, val_batches)
        best = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else -1.0
        kept_start = best <= start
        module.load_state_dict(initial if kept_start else torch.load(
            checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"])
    return BestEpoch(start, max(best, start), kept_start, trainer.current_epoch, trainer.global_step)
