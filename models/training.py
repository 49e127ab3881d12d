"""The Lightning trainer every feedback model uses: the accelerator Lightning finds (CUDA when
present), one device, and no logger, checkpoints or progress bars, because a pipeline stage
reports through its metrics file and its artifacts are saved by the model itself."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L


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
