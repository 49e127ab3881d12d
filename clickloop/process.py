"""Running a function in a fresh interpreter.

A process that has trained with torch and then calls into Lucene's JVM has crashed in native code
(segfaults in the JVM while indexing and while searching, on this machine), so work on Lucene that
follows training runs in a spawned child: a clean process with its own JVM.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def in_fresh_process(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a spawned child; `function` and the arguments must be picklable
    (a module-level function, plain data)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)
