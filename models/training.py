"""What every feedback model's training loop shares: the Lightning trainer (the accelerator
Lightning finds, CUDA when present, one device, and no logger, checkpoints or progress bars,
because a pipeline stage reports through its metrics file and its artifacts are saved by the
model itself) and seeded shuffled mini-batches."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import lightning as L
import torch
from torch import Tensor


def quiet_trainer(max_epochs: int, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    return L.Trainer(
        accelerator="auto",
        devices=1,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
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
