"""Running a function in a fresh interpreter.

A process that has trained with torch and then calls into Lucene's JVM has crashed in native code
(segfaults in the JVM while indexing and while searching, on this machine), so work on Lucene that
follows training runs in a spawned child: a clean process with its own JVM.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, TypeVar

T = TypeVar("T")


def in_fresh_process(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a spawned child; `function` and the arguments must be picklable
    (a module-level function, plain data). The child is not a daemon, so it may start children
    of its own (e.g. train, then index in yet another fresh process)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_call, args=(sender, function, args))
    child.start()
    sender.close()
    try:
        succeeded, value = receiver.recv()
    except EOFError:
        child.join()
        raise RuntimeError(f"{function.__name__} died in its process (exit code {child.exitcode})") from None
    child.join()
    if not succeeded:
        raise value
    return value


def _call(sender: Connection, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        sender.send((True, function(*args)))
    except BaseException as error:  # every failure goes back to the caller, which raises it
        try:
            sender.send((False, error))
        except (pickle.PicklingError, TypeError, AttributeError):
            sender.send((False, RuntimeError(f"{type(error).__name__}: {error}")))
