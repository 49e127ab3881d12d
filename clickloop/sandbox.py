"""A fresh DVC project holding a copy of this repository's pipeline.

The end-to-end tests and the nightly benchmarks run `dvc repro` and `python -m nightly` in one, so they
never touch the working tree's data/, serving/, feedback_logs/ or dvc.lock, and each can shrink the
embedded default through params overrides.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CODE = ("pipeline", "clickloop", "models", "indexing", "nightly", "feedback_logs", "dvc.yaml", ".dvcignore")


def merge_params(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` laid over it, nested sections merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        merged[key] = merge_params(base.get(key) or {}, value) if isinstance(value, Mapping) else value
    return merged


def run(args: Sequence[str], cwd: Path, timeout: float = 3600, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with this interpreter's environment first on PATH (DVC stages run `python -m ...`);
    with `check`, a failure raises with the tail of its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n"
                           f"{done.stderr[-4000:]}")
    return done


def export_commit(rev: str, dest: Path) -> str:
    """The tree of commit `rev` written to `dest` (what a benchmark runs: committed code, not the working
    tree's edits in progress); returns the commit's full hash."""
    commit = run(["git", "rev-parse", rev], REPO).stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit


def _without_modes_of(params: dict[str, Any], stages: set[str]) -> None:
    """Leave out of `params` what would ask for the retrievers the dropped `stages` build: their modes in
    evaluate.retrievers, and the search pipelines over them."""
    from indexing.retriever import FAMILIES

    gone = {mode for family in FAMILIES.values() if family.stage in stages for mode in family.modes}
    evaluate = params.get("evaluate") or {}
    if "retrievers" in evaluate:
        evaluate["retrievers"] = [mode for mode in evaluate["retrievers"] if mode not in gone]
    pipelines = (params.get("search") or {}).get("pipelines") or {}
    for name in [name for name, spec in pipelines.items() if set(spec.get("modes", [])) & gone]:
        del pipelines[name]


def new_project(root: Path, overrides: Mapping[str, Any] | None = None, drop_stages: Iterable[str] = (),
                code: Iterable[str] = CODE, source_root: Path = REPO) -> Path:
    """Copy the pipeline's code from `source_root` (the repo, or an `export_commit`) into `root` (created),
    write params.yaml (the source's with `overrides`) and a dvc.yaml without `drop_stages` (and without the
    deps other stages had on their outputs, nor the modes their retrievers serve in evaluate and the search
    pipelines), `git init` and `dvc init` it; return `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for name in code:
        source = source_root / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, root / name)
    stages = yaml.safe_load((source_root / "dvc.yaml").read_text())
    dropped = [stages["stages"].pop(name) for name in drop_stages]
    gone = {out if isinstance(out, str) else next(iter(out)) for stage in dropped for out in stage.get("outs", [])}
    for stage in stages["stages"].values():
        stage["deps"] = [dep for dep in stage.get("deps", []) if dep not in gone]
    (root / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    params = merge_params(yaml.safe_load((source_root / "params.yaml").read_text()), overrides or {})
    if dropped:
        _without_modes_of(params, set(drop_stages))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    return root
