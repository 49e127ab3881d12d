"""clickloop.process: a function runs in a fresh interpreter and its result or error comes back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clickloop.process import in_fresh_process


def test_runs_in_another_process_and_returns_the_result() -> None:
    assert in_fresh_process(os.getpid) != os.getpid()
    assert in_fresh_process(os.path.join, "a", "b") == os.path.join("a", "b")


def test_an_error_in_the_child_is_raised_in_the_caller(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        in_fresh_process(os.listdir, str(tmp_path / "missing"))


def _nested(value: int) -> int:
    return in_fresh_process(_double, value)


def _double(value: int) -> int:
    return 2 * value


def test_a_child_may_start_a_fresh_process_of_its_own() -> None:
    assert in_fresh_process(_nested, 21) == 42


def test_a_child_that_dies_is_an_error_not_a_hang() -> None:
    with pytest.raises(RuntimeError, match="exit code 3"):
        in_fresh_process(os._exit, 3)
