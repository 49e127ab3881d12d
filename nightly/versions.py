"""Versioned serving artifacts: stage a version whole, swap the pointer, roll back, prune.

The layout is `indexing.serving`'s. A promotion takes three steps, each safe to die after:

1. the version is built in a temporary folder beside `versions/<id>` (`clickloop.atomic.atomic_path`)
   and renamed in whole: a kill before the rename leaves a temporary folder that the next run sweeps;
2. the pointer `current` is rewritten atomically (`clickloop.atomic.write_text`, one os.replace): until
   then the champion serves, afterwards the new version does; never a mix, since versions never change;
3. versions beyond the newest `keep` are pruned (renamed to a temporary name first, so a kill mid-delete
   leaves a folder the sweep removes, never a half version that looks whole).

A version killed between steps 1 and 2 stays on disk unserved (a promotion that did not happen); Python
exceptions remove it at once, and pruning removes it like any old version.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clickloop.atomic import atomic_path, recover, write_json, write_text
from clickloop.env import PACKAGED_MODEL
from clickloop.fingerprint import content_sha256
from indexing.serving import (
    CURRENT_FILE,
    INDICES_DIR,
    MODELS_DIR,
    RECOMMENDER_DIR,
    VERSION_MANIFEST,
    VERSIONS_DIR,
    current_version,
)

# Of the version manifest; raise it when a version folder's layout changes in a way older code would misread.
FORMAT_VERSION = 1
RETRIEVER_MANIFEST = "retriever.json"  # indexing.retriever.MANIFEST_FILE; not imported, that pulls in the registry
# Temporary folders of clickloop.atomic writers (and of pruning): ".<name>.<pid>.<random>.tmp".
_TEMPORARY = re.compile(r"\.(.+)\.(\d{1,9})\.[^.]+\.tmp")

Fault = Callable[[str], None]  # called between promotion steps; tests raise in it to simulate a kill


class VersionError(RuntimeError):
    """A rollback or promotion that cannot be done, with the reason."""


@dataclass(frozen=True)
class Challenger:
    """Where the retrained artifacts lie in the workspace (what a promotion copies into a version)."""

    index_root: Path
    recommender_dir: Path | None = None  # absent when the feedback stage trained none (no user ids)
    metrics_dir: Path | None = None
    extra: Mapping[str, Path] = field(default_factory=dict)  # more folders to carry, by name in the version

    def components(self) -> dict[str, Path]:
        """Each served artifact by its name in the version: the index root's entries, the recommender."""
        parts = {
            f"{INDICES_DIR}/{entry.name}": entry
            for entry in sorted(self.index_root.iterdir())
            if not entry.name.startswith(".")  # atomic writers' temporary folders
        }
        if self.recommender_dir is not None and self.recommender_dir.is_dir():
            parts[RECOMMENDER_DIR] = self.recommender_dir
        parts.update(self.extra)
        return parts

    def fingerprint(self) -> dict[str, str]:
        """The content hash of every component and of every local encoder an index names: equal
        fingerprints mean the same served behaviour (query-time settings aside)."""
        hashes = {name: content_sha256(path) for name, path in self.components().items()}
        for kind, (model, _) in local_encoders(self.index_root).items():
            hashes[f"{MODELS_DIR}/{kind}"] = content_sha256(model)
        return hashes


def local_encoders(index_root: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """The encoder folders that index folders load at query time (dense manifests naming a local
    folder rather than the packaged model), by the index folder's name, with its manifest."""
    found = {}
    for manifest_file in sorted(index_root.glob(f"*/{RETRIEVER_MANIFEST}")):
        if manifest_file.parent.name.startswith("."):
            continue
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        model = manifest.get("model")
        if isinstance(manifest.get("model_path"), str):  # located from the index folder (indexing.dense.encoder_of)
            model = str((manifest_file.parent / manifest["model_path"]).resolve())
        if isinstance(model, str) and model != PACKAGED_MODEL and Path(model).is_dir():
            found[manifest_file.parent.name] = (Path(model), manifest)
    return found


class VersionStore:
    """The serving root: its versions, the pointer, promotion, rollback and pruning."""

    def __init__(self, root: str | Path, keep: int = 5) -> None:
        if keep < 2:
            raise ValueError(f"nightly.keep_versions must be at least 2 (the served one and one to roll back to), "
                             f"got {keep}")
        self.root = Path(root).absolute()  # versions are opened by Lucene in the JVM: see nightly.run
        self.keep = keep
        self.versions_dir = self.root / VERSIONS_DIR

    # -- reading ---------------------------------------------------------------------------------

    def current(self) -> str | None:
        return current_version(self.root)

    def versions(self) -> list[str]:
        """Complete versions (those with a manifest), oldest first: ids sort by creation time."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir()
                      if not p.name.startswith(".") and (p / VERSION_MANIFEST).is_file())

    def path(self, version: str) -> Path:
        return self.versions_dir / version

    def manifest(self, version: str) -> dict[str, Any]:
        file = self.path(version) / VERSION_MANIFEST
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VersionError(f"version {version!r} is not in {self.versions_dir} (pruned, or never promoted)"
                               ) from None

    # -- housekeeping ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the serving root: two nightly runs (or a rollback during one) would race."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise VersionError(f"{self.root} is in use by another nightly run or rollback; try again when it "
                                   "has finished") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def sweep(self) -> list[str]:
        """Remove what killed writers left (their temporary folders; a pointer write's old file), named."""
        removed = []
        for folder in (self.root, self.versions_dir, self.root / "reports"):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                match = _TEMPORARY.fullmatch(entry.name)
                if match is None:
                    continue
                recover(folder / match[1])  # skips writers still running; puts back an old version left aside
                if not entry.exists():
                    removed.append(str(entry.relative_to(self.root)))
        return removed

    # -- promotion -------------------------------------------------------------------------------

    def promote(self, challenger: Challenger, facts: Mapping[str, Any], fault: Fault | None = None) -> str:
        """Copy the challenger into a new version and serve it; its id. (`prune` afterwards.)

        `facts` go into the manifest beside what the store records (format version, id, the version it
        replaced, component hashes, encoders, size). `fault(step)` runs after each step (`staged`:
        inside the temporary folder; `renamed`: in place, unserved; `pointed`: served).
        """
        fault = fault or (lambda step: None)
        self.sweep()
        champion = self.current()
        fingerprint = challenger.fingerprint()
        created = dt.datetime.now(dt.UTC)
        version = f"{created:%Y%m%dT%H%M%S%fZ}-{_short_hash(fingerprint)}"
        final = self.path(version)
        with atomic_path(final) as staged:
            staged.mkdir()
            encoders = self._copy(challenger, staged, final)
            manifest = {
                **facts,
                "format_version": FORMAT_VERSION,
                "version": version,
                "created": created.isoformat(),
                "previous": champion,
                "components": fingerprint,
                "encoders": encoders,
                "bytes": folder_bytes(staged),
            }
            write_json(staged / VERSION_MANIFEST, manifest)
            fault("staged")
        try:
            fault("renamed")
            write_text(self.root / CURRENT_FILE, version + "\n")
        except BaseException:
            # Not served yet: removing it undoes the promotion. A kill here instead leaves an unserved
            # version that pruning removes in turn.
            if self.current() != version:
                shutil.rmtree(final, ignore_errors=True)
            raise
        fault("pointed")
        return version

    def _copy(self, challenger: Challenger, staged: Path, final: Path) -> dict[str, Any]:
        """Copy the components into `staged`; encoders named by index manifests are copied into models/
        and the manifests rewritten to name the copy, so the version never reads the workspace's encoder,
        which the next night retrains. The hashes stay the same. A manifest that locates its encoder from
        its folder (`model_path`) gets the copy's path relative to the folder (the version can move); an
        older one, the copy's absolute path where it will lie (`final`)."""
        for name, source in challenger.components().items():
            target = staged / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, symlinks=False, ignore=shutil.ignore_patterns(".*"))
            else:
                shutil.copy2(source, target)
        if challenger.metrics_dir is not None and challenger.metrics_dir.is_dir():
            (staged / "metrics").mkdir()
            for file in sorted(challenger.metrics_dir.glob("*.json")):
                shutil.copy2(file, staged / "metrics" / file.name)
        encoders: dict[str, Any] = {}
        for kind, (model, manifest) in local_encoders(challenger.index_root).items():
            shutil.copytree(model, staged / MODELS_DIR / kind, symlinks=False)
            encoders[kind] = {"model": manifest["model"], "served_from": f"{MODELS_DIR}/{kind}",
                              "model_sha256": manifest.get("model_sha256")}
            if "model_path" in manifest:
                manifest = {**manifest, "model_path": f"../../{MODELS_DIR}/{kind}", "model_origin": str(model)}
            else:
                served = (final / MODELS_DIR / kind).resolve()
                manifest = {**manifest, "model": str(served), "model_origin": manifest["model"]}
            (staged / INDICES_DIR / kind / RETRIEVER_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        for folder in sorted((staged / INDICES_DIR).glob(f"*/{RETRIEVER_MANIFEST}")):
            kind = folder.parent.name
            if kind not in encoders:
                manifest = json.loads(folder.read_text(encoding="utf-8"))
                if "model" in manifest:  # the packaged encoder: recorded by name and hash
                    encoders[kind] = {"model": manifest["model"], "model_sha256": manifest.get("model_sha256")}
        return encoders

    # -- rollback and pruning --------------------------------------------------------------------

    def rollback(self, to: str | None = None) -> tuple[str, str]:
        """Serve `to`, by default the version the served one replaced; (from, to)."""
        current = self.current()
        if current is None:
            raise VersionError(f"nothing is served from {self.root}: no version to roll back from")
        if to is None:
            to = self.manifest(current).get("previous")
            if to is None:
                raise VersionError(f"version {current} was the first promoted: there is no previous version")
        if to == current:
            raise VersionError(f"version {to} is already served")
        self.manifest(to)  # it must be whole: a pruned or unknown id fails here, before the pointer moves
        write_text(self.root / CURRENT_FILE, to + "\n")
        return current, to

    def prune(self) -> list[str]:
        """Delete versions beyond the newest `keep`; the served one and the one it replaced always stay."""
        versions = self.versions()
        current = self.current()
        keep = set(versions[-self.keep:])
        if current is not None:
            keep.add(current)
            previous = self.manifest(current).get("previous") if current in versions else None
            if previous:
                keep.add(previous)
        removed = []
        # Unserved, incomplete folders (no manifest) come from promotions killed mid-way: never served.
        stray = [p.name for p in self.versions_dir.iterdir()
                 if not p.name.startswith(".") and p.name not in versions and p.name != current]
        for version in [v for v in versions if v not in keep] + stray:
            doomed = self.versions_dir / f".{version}.{os.getpid()}.prune.tmp"
            os.replace(self.path(version), doomed)  # one rename: the version is gone whole, then deleted
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(version)
        return removed


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _short_hash(fingerprint: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:8]
