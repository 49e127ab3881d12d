"""Atomic writes: a killed stage leaves either the old artifact or the new one, never half.

Files are written to a temporary sibling and renamed into place (rename is atomic on
POSIX within one filesystem). Directories are built in a temporary sibling and swapped in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it is renamed onto `target`.

    Works for a file or a directory: whatever the caller creates at the yielded path
    replaces `target` as a whole. On an exception the temporary is removed and `target`
    is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if not staged.exists():
            raise FileNotFoundError(f"nothing was written at {staged} for {target}")
        _replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace(staged: Path, target: Path) -> None:
    if staged.is_dir() and target.exists():
        # A directory cannot be renamed over a non-empty one: move the old one aside first.
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)


def write_json(target: str | os.PathLike[str], payload: Any) -> None:
    """Write `payload` as pretty JSON atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write `text` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
