"""What every retriever shares, and the registry of retriever families the Searcher serves.

A family is one kind of index (Lucene BM25, FAISS dense, ...): it is built into its own folder
of an index root, named after its kind, holding a `retriever.json` manifest whose `"kind"` says
which family reads it, and it serves one or more search modes (bm25 serves bm25 and bm25_rm3).
Adding a family is one `register` line below plus a module with a `load(folder, settings)`.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from indexing.errors import CorruptIndexError, SearchInputError, reading
from indexing.settings import SearchConfig

log = logging.getLogger(__name__)

Ranking = list[tuple[str, float]]  # (doc id, score), best first

MANIFEST_FILE = "retriever.json"
# Of every manifest and the folder it describes; raise it when a family's folder changes in a way an
# older loader would misread, so that serving an old folder fails at load with "rebuild it".
FORMAT_VERSION = 1
# Manifests from before format versions were recorded (version 0) describe the same folder layouts
# with fewer facts, so they stay readable; the dense loader warns that it cannot check their encoder.
READABLE_VERSIONS = (0, FORMAT_VERSION)


class Retriever(Protocol):
    """One search mode over one index; implementations check their input and are thread-safe."""

    num_docs: int

    def search(self, query: str, k: int) -> Ranking: ...

    def batch_search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]: ...


@runtime_checkable
class FeedbackRetriever(Retriever, Protocol):
    """A retriever whose pseudo-relevance feedback reads documents the caller names (its own top
    documents, or a fused ranking's), so that PRF can follow fusion."""

    def feedback_search(
        self, queries: Mapping[str, str], feedback: Mapping[str, Sequence[str]], k: int
    ) -> dict[str, Ranking]:
        """`batch_search` with each query expanded from its `feedback` documents (best first; the
        retriever's PRF settings say how many it reads)."""
        ...


@dataclass(frozen=True)
class Family:
    """A kind of index, the modes it serves and where its loader lives.

    `loader` is "module:function", a `function(folder: Path, settings: SearchConfig) -> dict[str,
    Retriever]` returning one retriever per mode. It is imported on first load, so listing the
    modes costs no heavy import (FAISS, torch) and the family module may import this one.
    """

    kind: str
    modes: tuple[str, ...]
    loader: str
    stage: str = "index"  # the DVC stage that builds the folder, named when it is missing
    # (mode, its PRF mode) for a PRF that reads only its own top documents, like pyserini's RM3
    own_feedback_prf: tuple[tuple[str, str], ...] = ()

    def load(self, folder: Path, settings: SearchConfig) -> dict[str, Retriever]:
        read_manifest(folder, self.kind)  # a folder of another kind or format fails here, before its loader runs
        module, _, function = self.loader.partition(":")
        retrievers: dict[str, Retriever] = getattr(importlib.import_module(module), function)(folder, settings)
        if sorted(retrievers) != sorted(self.modes):
            raise RuntimeError(f"{self.loader} loaded modes {sorted(retrievers)}; family {self.kind!r} declares "
                               f"{list(self.modes)}")
        return retrievers


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> None:
    """Add `family` to the registry; its kind and its modes must be new."""
    taken = set(known_modes()) & set(family.modes)
    if family.kind in FAMILIES or taken:
        raise ValueError(f"family {family.kind!r}: the kind or the mode(s) {sorted(taken)} are registered already")
    FAMILIES[family.kind] = family


def known_modes() -> tuple[str, ...]:
    """Every mode of every registered family, in registration order."""
    return tuple(mode for family in FAMILIES.values() for mode in family.modes)


def family_of(mode: str) -> Family:
    """The family serving `mode`; a SearchInputError listing the known modes when none does."""
    for family in FAMILIES.values():
        if mode in family.modes:
            return family
    raise SearchInputError(f"unknown search mode {mode!r}; choose one of {', '.join(known_modes())}")


# The registry: one line per family. Its kind names its folder and the "kind" of its manifest.
register(Family("bm25", ("bm25", "bm25_rm3"), "indexing.bm25:load", own_feedback_prf=(("bm25", "bm25_rm3"),)))
register(Family("dense", ("dense",), "indexing.dense:load"))
register(Family("sparse", ("sparse",), "indexing.sparse:load", stage="sparse"))
register(Family("dense_feedback", ("dense_feedback",), "indexing.dense:load_feedback", stage="dense_feedback"))


def write_manifest(folder: Path, kind: str, facts: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Write `folder`'s retriever.json: its kind, the format version, the build `params` that shaped it
    (its params.yaml section) and the build-time `facts` (document count, encoder...)."""
    if kind not in FAMILIES:
        raise ValueError(f"{kind!r} is not a registered retriever family; register it in indexing/retriever.py")
    manifest = {"kind": kind, "format_version": FORMAT_VERSION, "params": dict(params), **facts}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def read_manifest(folder: Path, kind: str | None = None) -> dict[str, Any]:
    """`folder`'s manifest. With `kind`, it must describe a folder of that kind in a readable format version.

    Missing, unreadable or mismatched, it raises MissingIndexError or CorruptIndexError naming the
    stage that (re)builds the folder: the family's stage, found by `kind` or else by the folder's name.
    """
    stage = stage_of(kind or folder.name)
    with reading(folder / MANIFEST_FILE, "retriever manifest", stage) as path:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict):
        raise CorruptIndexError(path, "retriever manifest", stage, "not a JSON object")
    if kind is not None:
        if manifest.get("kind") != kind:
            raise CorruptIndexError(path, "retriever manifest", stage, f"kind {manifest.get('kind')!r}, not {kind!r}")
        version = manifest.get("format_version", 0)
        if version not in READABLE_VERSIONS:
            raise CorruptIndexError(path, f"{kind} index", stage, f"format version {version}; this clickloop reads "
                                    f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    return manifest


def stage_of(kind: str) -> str:
    """The DVC stage that builds folders of `kind` ("index" for a kind that is not registered)."""
    return FAMILIES[kind].stage if kind in FAMILIES else "index"


def discover(index_root: Path) -> dict[str, Path]:
    """The family folders of an index root, by kind, found through their manifests.

    Hidden folders are skipped: atomic writes stage and retire folders under dot-names beside
    the real ones. A manifest of an unregistered kind is skipped with a warning, so an index
    root that another version built still serves the families this one knows.
    """
    found: dict[str, Path] = {}
    for manifest in sorted(index_root.glob(f"*/{MANIFEST_FILE}")):
        folder = manifest.parent
        if folder.name.startswith("."):
            continue
        kind = read_manifest(folder).get("kind")
        if not isinstance(kind, str) or kind not in FAMILIES:
            log.warning("%s: retriever kind %r is not registered; its folder is not served", manifest, kind)
        elif kind in found:
            raise ValueError(f"{index_root}: {found[kind].name}/ and {folder.name}/ are both {kind!r} indices")
        else:
            found[kind] = folder
    return found

