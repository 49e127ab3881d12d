"""Atomic directory swaps survive a writer that fails or is killed between their two renames."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clickloop import atomic
from clickloop.atomic import atomic_path

REPO = Path(__file__).resolve().parents[1]

# A writer that is killed (SIGKILL: no `finally`, no `except`) right after the first rename of
# the swap, when the old version is aside and the new one not yet in place.
KILLED_WRITER = """
import os, signal, sys
from clickloop.atomic import atomic_path

real_replace = os.replace

def replace_then_die(src, dst):
    real_replace(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace_then_die
with atomic_path(sys.argv[1]) as staged:
    staged.mkdir()
    (staged / "version").write_text("new")
"""


def make_version(target: Path, version: str) -> None:
    target.mkdir()
    (target / "version").write_text(version)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_a_failed_second_rename_puts_the_old_directory_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "artifact"
    make_version(target, "old")
    real_replace = os.replace
    calls = []

    def fail_second(src: Path, dst: Path) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("disk went away")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", fail_second)
    with pytest.raises(OSError, match="disk went away"), atomic_path(target) as staged:
        make_version(staged, "new")

    assert (target / "version").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]


def test_a_writer_killed_between_the_renames_is_recovered_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    make_version(target, "old")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)], env=env, check=False)
    assert killed.returncode == -9 and not target.exists()  # the moment a kill can leave

    # The next writer fails too, but finds the old version first and puts it back.
    with pytest.raises(RuntimeError), atomic_path(target) as staged:
        raise RuntimeError("this writer fails as well")
    assert (target / "version").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]

    with atomic_path(target) as staged:
        make_version(staged, "new")
    assert (target / "version").read_text() == "new"


def test_temporary_folders_of_dead_writers_are_removed_on_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    dead = tmp_path / f".metrics.json.{dead_pid()}.k3x_9q.tmp"
    (dead / "metrics.json").mkdir(parents=True)  # a half-written output
    running = tmp_path / f".metrics.json.{os.getpid()}.abc123.tmp"  # a writer still at work
    running.mkdir()
    other_target = tmp_path / f".metrics.json.1.{dead_pid()}.zz.tmp"  # a folder for target `metrics.json.1`
    other_target.mkdir()

    atomic.write_json(target, {"v": 1})

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.json", running.name, other_target.name])
