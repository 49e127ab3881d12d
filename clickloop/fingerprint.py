"""Content hashes of model folders, so an artifact can record exactly which model built it."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK_BYTES = 1 << 20


def content_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, or of a folder's files: their relative paths, sizes and bytes, in path order.

    Names take part, so moving a file within a model folder (which changes what loads) changes the hash;
    the folder's own location does not, so a copied model keeps its hash.
    """
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix()}\0{file.stat().st_size}\0".encode())
        with open(file, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()
