"""Atomic writes: a killed stage leaves either the old artifact or the new one, never half.

Files are written to a temporary sibling and renamed into place (rename is atomic on
POSIX within one filesystem). Directories are built in a temporary sibling and swapped in.

A directory swap takes two renames (the old version aside, the new one in), and a writer killed
between them leaves no version at the target. The temporary folder of a writer is named with its
process id, and the old version is moved aside into it; so the next write of the target, finding
the folder of a dead writer, can move the old version back and then remove the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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
    is left untouched. Leftovers of writers of `target` that died are cleared first (`recover`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if not staged.exists():
            raise FileNotFoundError(f"nothing was written at {staged} for {target}")
        _replace(staged, target, _aside(tmp, target))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover(target: str | os.PathLike[str]) -> None:
    """Clear what writers of `target` that died left behind: put back the old version of a
    directory a kill left aside (when `target` is missing), then remove their temporary folders."""
    target = Path(target)
    # mkdtemp's random part has no dot, so the folders of another target never match.
    leftover = re.compile(rf"\.{re.escape(target.name)}\.(\d{{1,9}})\.[^.]+\.tmp")
    for entry in target.parent.iterdir():
        match = leftover.fullmatch(entry.name)
        if match is None or _is_running(int(match[1])):
            continue
        aside = _aside(entry, target)
        if os.path.lexists(aside) and not os.path.lexists(target):
            os.replace(aside, target)
        shutil.rmtree(entry, ignore_errors=True)


def _aside(tmp: Path, target: Path) -> Path:
    """Where the old version of `target` waits during a swap: in the writer's temporary folder,
    beside (and never named like) the staged new version."""
    return tmp / f"{target.name}.old"


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def _replace(staged: Path, target: Path, aside: Path) -> None:
    if staged.is_dir() and target.exists():
        # A directory cannot be renamed over a non-empty one: move the old one aside first.
        os.replace(target, aside)
        try:
            os.replace(staged, target)
        except BaseException:
            os.replace(aside, target)
            raise
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
