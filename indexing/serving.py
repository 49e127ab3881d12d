"""Serving from versioned artifacts: the layout `nightly` promotes into, and a Searcher that follows it.

A serving root (`serving/` by default) holds immutable version folders and a pointer naming the one
to serve:

    serving/current                      the served version's id, one line (swapped with os.replace)
    serving/versions/<id>/manifest.json  what the version is (nightly/versions.py writes it)
    serving/versions/<id>/indices/       an index root: docs.parquet and one folder per retriever family
    serving/versions/<id>/recommender/   the recommender artifact folder, when the feedback stage built one
    serving/versions/<id>/models/<name>/ encoders the indices load at query time (dense_feedback's)

A version folder appears whole (it is staged beside and renamed in) and never changes afterwards,
so a reader that found the pointer can load it without racing a writer. `ServingSearcher` watches
the pointer and swaps in a fully loaded `Searcher` under a lock: a request runs on the old or on
the new version, never on a half-loaded one, and none fails because a version was promoted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from indexing.searcher import Hit, Searcher
from indexing.settings import PipelineSpec, SearchConfig

log = logging.getLogger(__name__)

CURRENT_FILE = "current"
VERSIONS_DIR = "versions"
INDICES_DIR = "indices"
RECOMMENDER_DIR = "recommender"
MODELS_DIR = "models"
VERSION_MANIFEST = "manifest.json"


class NoServingVersionError(FileNotFoundError):
    """The serving root has no (complete) version to serve."""

    def __init__(self, root: Path, detail: str) -> None:
        super().__init__(f"nothing to serve at {root}: {detail}; promote a version with "
                         "`python -m nightly run --day feedback_logs/YYYY-MM-DD` (see README, Nightly)")
        self.root = root


def current_version(root: str | Path) -> str | None:
    """The id the pointer names, or None when nothing was promoted yet."""
    try:
        text = (Path(root) / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def version_dir(root: str | Path, version: str) -> Path:
    return Path(root) / VERSIONS_DIR / version


def served_dir(root: str | Path) -> Path:
    """The folder of the served version; NoServingVersionError when there is none or it is incomplete."""
    root = Path(root)
    version = current_version(root)
    if version is None:
        raise NoServingVersionError(root, f"no {CURRENT_FILE} pointer")
    folder = version_dir(root, version)
    if not (folder / VERSION_MANIFEST).is_file():
        raise NoServingVersionError(root, f"{CURRENT_FILE} names version {version!r}, which {folder} does not hold")
    return folder


class ServingSearcher:
    """A `Searcher` over the served version that follows promotions and rollbacks without a restart.

    With `poll_seconds`, a daemon thread checks the pointer that often and loads a new version in the
    background; `reload()` checks it now (what the thread calls). Searching never waits for a load: the
    lock guards only the swap of one reference. A version that fails to load is logged and skipped
    (the loaded one keeps serving) until the pointer changes again.
    """

    def __init__(
        self, serving_root: str | Path = "serving", modes: Sequence[str] | None = None,
        settings: SearchConfig | None = None, poll_seconds: float | None = 5.0,
    ) -> None:
        # Absolute: Lucene resolves a relative path against the JVM's start directory, not the current one.
        self.root = Path(serving_root).absolute()
        self._modes, self._settings = modes, settings
        self._swap = threading.Lock()  # held only to read or replace (searcher, version)
        self._loading = threading.Lock()  # one load at a time: two would race to swap
        self._failed: str | None = None
        self._searcher, self.version = self._load()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if poll_seconds is not None:
            self._thread = threading.Thread(target=self._watch, args=(poll_seconds,), name="serving-watch",
                                            daemon=True)
            self._thread.start()

    def _load(self) -> tuple[Searcher, str]:
        folder = served_dir(self.root)
        return Searcher(folder / INDICES_DIR, modes=self._modes, settings=self._settings), folder.name

    @property
    def searcher(self) -> Searcher:
        """The Searcher serving now (keep it for a batch of calls that must see one version)."""
        with self._swap:
            return self._searcher

    @property
    def modes(self) -> tuple[str, ...]:
        return self.searcher.modes

    def search(self, query: str, k: int = 10, mode: str | PipelineSpec = "bm25", prf: bool | None = None) -> list[Hit]:
        return self.searcher.search(query, k=k, mode=mode, prf=prf)

    def batch_search(
        self, queries: Mapping[str, str], k: int = 100, mode: str | PipelineSpec = "bm25", prf: bool | None = None
    ) -> dict[str, list[Hit]]:
        return self.searcher.batch_search(queries, k=k, mode=mode, prf=prf)

    def reload(self) -> bool:
        """Serve the version the pointer names now, loading it first; True when the version changed.

        Raises what loading raises (NoServingVersionError, MissingIndexError...), the old version serving on.
        """
        with self._loading:
            version = current_version(self.root)
            if version is None or version == self.version:
                return False
            searcher, loaded = self._load()
            with self._swap:
                self._searcher, self.version = searcher, loaded
            self._failed = None
            log.info("serving version %s", loaded)
            return True

    def _watch(self, poll_seconds: float) -> None:
        while not self._stop.wait(poll_seconds):
            version = current_version(self.root)
            if version == self._failed:
                continue  # it failed once; loading it again would fail again and cost a load per poll
            try:
                self.reload()
            except Exception as e:  # the thread must survive a bad version: the loaded one keeps serving
                self._failed = version
                log.error("cannot serve version %s, version %s serves on: %s", version, self.version, e)

    def close(self) -> None:
        """Stop watching the pointer (searching still works, on the version loaded last)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> ServingSearcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
