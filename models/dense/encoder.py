"""The dense encoder: a plain sentence-transformers model, loaded from the packaged all-MiniLM-L6-v2
(or any sentence-transformers folder) and saved as a folder `SentenceTransformer(path)` loads."""

from __future__ import annotations

from pathlib import Path

from sentence_transformers import SentenceTransformer

from clickloop.atomic import atomic_path
from clickloop.env import PACKAGED_MODEL, model_path, torch_device


def new_dense_encoder(base: str = PACKAGED_MODEL, max_seq_length: int = 256, device: str | None = None
                      ) -> SentenceTransformer:
    """The encoder training starts from: `base` (the packaged model's name or a folder), on CUDA when present."""
    model = SentenceTransformer(model_path(base), device=device or torch_device())
    model.max_seq_length = max_seq_length
    return model


def save_dense_encoder(model: SentenceTransformer, path: str | Path) -> None:
    """Save `model` to `path` atomically: the folder appears complete or not at all."""
    with atomic_path(path) as staged:
        # No model card: it would describe the base model's hub training, not this one's.
        model.save(str(staged), create_model_card=False)
