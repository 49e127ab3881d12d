"""The Searcher API: one object over an index root that answers every registered search mode.

An index root (`data/indices/` by default) holds `docs.parquet` (titles and texts for the hits)
and one folder per retriever family, each with its `retriever.json` manifest (`bm25/`, `dense/`;
see indexing/retriever.py). Query-time settings come from a `SearchConfig` (params.yaml `search`),
not from the artifacts, so they can change without a rebuild.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from indexing.docstore import DOCS_FILE, DocStore
from indexing.errors import CorruptIndexError, MissingIndexError, SearchInputError, require
from indexing.fusion import Component, ScoredDoc, unfused
from indexing.pipeline_choice import resolve_all
from indexing.retriever import FAMILIES, MANIFEST_FILE, FeedbackRetriever, Retriever, discover, family_of, known_modes
from indexing.search_pipeline import PRF_SUFFIX, SearchPipeline
from indexing.settings import PipelineSpec, SearchConfig


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float
    rank: int  # 1-based
    title: str
    text: str
    # Why it ranked here: one component per ranking that made the score (a single retriever's own
    # score; each fused ranking's score, normalised value and weight; "+prf" when PRF ran).
    components: tuple[Component, ...] = ()


class Searcher:
    """Search an index root by mode. Loads each index once; safe to call from many threads."""

    def __init__(
        self, index_root: str | Path = "data/indices", modes: Sequence[str] | None = None,
        settings: SearchConfig | None = None,
    ) -> None:
        """Load the index root.

        `modes` limits what is loaded (the dense encoder takes seconds to load); a family loads
        all its modes together, a pipeline of `settings.pipelines` the modes it runs. By default
        every family whose folder the root holds is loaded, and every pipeline over them.
        A requested mode whose folder is missing raises MissingIndexError naming the stage that
        builds it; an unknown mode raises SearchInputError. A pipeline with `auto` settings runs what
        the `fusion` stage chose for this root (its pipelines.json); one without a choice is left out,
        or, asked for by name, raises MissingIndexError.
        """
        settings = settings or SearchConfig()
        clashes = sorted(set(settings.pipelines) & set(known_modes()))
        if clashes:
            raise SearchInputError(f"pipeline name(s) {clashes} are retriever modes already; rename the pipelines")
        root = require(Path(index_root), "index root")
        named = None if modes is None else [mode for mode in modes if mode in settings.pipelines]
        # `auto` settings take the fusion stage's choice (pipelines.json); a pipeline asked for by name must have one.
        wanted = settings.pipelines if named is None else {name: settings.pipelines[name] for name in named}
        specs = resolve_all(root, wanted, required=named or ())
        # Pipelines asked for by name load their modes; with no `modes`, every pipeline whose modes load.
        if modes is not None:
            modes = [mode for mode in modes if mode not in settings.pipelines]
            modes += [m for name in named for m in specs[name].modes]
        requested = None if modes is None else list(dict.fromkeys(family_of(mode) for mode in modes))
        found = discover(root)
        if requested is None:
            requested = [FAMILIES[kind] for kind in found]
            if not requested:
                raise MissingIndexError(root / "*" / MANIFEST_FILE, "retriever index")
        missing = next((family for family in requested if family.kind not in found), None)
        if missing:
            raise MissingIndexError(
                root / missing.kind / MANIFEST_FILE, f"{missing.kind} index (modes {', '.join(missing.modes)})",
                missing.stage,
            )
        self._docs = DocStore(root / DOCS_FILE)
        self._retrievers: dict[str, Retriever] = {}
        self._folders = {family.kind: found[family.kind] for family in requested}
        for family in requested:
            self._retrievers.update(family.load(found[family.kind], settings))
        self._own_feedback_prf = {mode: prf_mode for family in requested for mode, prf_mode in family.own_feedback_prf}
        self._pipelines = {
            name: SearchPipeline(name, spec, self._retrievers, self._own_feedback_prf)
            for name, spec in specs.items()
            if (name in named if named is not None else set(spec.modes) <= set(self._retrievers))
        }
        self.modes = tuple(mode for mode in known_modes() if mode in self._retrievers) + tuple(self._pipelines)

    def search(self, query: str, k: int = 10, mode: str | PipelineSpec = "bm25", prf: bool | None = None) -> list[Hit]:
        """The top `k` hits for `query`, best first.

        `mode`: a retriever mode, a pipeline of `search.pipelines` by name, or a `PipelineSpec` to run as
        given (the retrievers it names must be loaded). `prf`: True runs the mode's
        pseudo-relevance feedback (Rocchio for dense and sparse, RM3 for bm25); for a pipeline, None
        keeps its configured PRF, False turns it off and True runs it on every mode that has one.
        """
        pipeline = self._pipeline(mode, prf)
        if pipeline is None:
            return self._hits(unfused(mode, self._retriever(mode).search(query, k)))
        return self._hits(pipeline.search(query, k))

    def batch_search(
        self, queries: Mapping[str, str], k: int = 100, mode: str | PipelineSpec = "bm25", prf: bool | None = None
    ) -> dict[str, list[Hit]]:
        """`search` for every (query id, text); the same hits as one `search` per query."""
        pipeline = self._pipeline(mode, prf)
        if pipeline is None:
            rankings = self._retriever(mode).batch_search(queries, k)
            ranked = {qid: unfused(mode, ranking) for qid, ranking in rankings.items()}
        else:
            ranked = pipeline.batch_search(queries, k)
        return {qid: self._hits(docs) for qid, docs in ranked.items()}

    def _pipeline(self, mode: str | PipelineSpec, prf: bool | None) -> SearchPipeline | None:
        """What runs `mode` with `prf`: None for a retriever called directly, else a pipeline."""
        if isinstance(mode, PipelineSpec):
            if mode.auto_fields:
                raise SearchInputError(f"an ad hoc pipeline needs explicit {', '.join(mode.auto_fields)}; "
                                       "auto is chosen by the fusion stage for the pipelines of params search")
            name, spec = "(ad hoc)", mode
        elif not isinstance(mode, str):
            raise SearchInputError(f"mode must be a mode name or a PipelineSpec, got {mode!r}")
        elif mode in self._pipelines:
            if prf is None:
                return self._pipelines[mode]
            name, spec = mode, self._pipelines[mode].spec
        else:
            self._retriever(mode)
            if not prf:
                return None
            if not self._has_prf(mode):
                raise SearchInputError(f"mode {mode!r} has no pseudo-relevance feedback")
            name, spec = mode, PipelineSpec([mode])
        if prf is not None:
            spec = replace(spec, prf=[m for m in spec.modes if prf and self._has_prf(m)])
        return SearchPipeline(name, spec, self._retrievers, self._own_feedback_prf)

    def pipeline_spec(self, name: str) -> PipelineSpec:
        """What the loaded pipeline `name` runs (`auto` settings resolved)."""
        if name not in self._pipelines:
            raise SearchInputError(f"no pipeline {name!r} was loaded; this Searcher has {', '.join(self.modes)}")
        return self._pipelines[name].spec

    def has_prf(self, mode: str) -> bool:
        """Whether the loaded retriever `mode` has a pseudo-relevance feedback."""
        return self._has_prf(mode)

    def prf_reads_own_ranking_only(self, mode: str) -> bool:
        """Whether `mode`'s PRF reads only its own top documents (RM3), so it cannot follow a fusion."""
        return mode in self._own_feedback_prf and not isinstance(self._retrievers[mode], FeedbackRetriever)

    def _has_prf(self, mode: str) -> bool:
        return isinstance(self._retrievers[mode], FeedbackRetriever) or mode in self._own_feedback_prf

    def _retriever(self, mode: str) -> Retriever:
        family_of(mode)  # an unknown mode gets the list of known ones
        if mode not in self._retrievers:
            raise SearchInputError(f"mode {mode!r} was not loaded; this Searcher has {', '.join(self.modes)}")
        return self._retrievers[mode]

    def _hits(self, docs: list[ScoredDoc]) -> list[Hit]:
        hits = []
        for rank, scored in enumerate(docs, start=1):
            doc = self._docs.get(scored.doc_id)
            if doc is None:
                # The index and the document store were built from different corpora; the index is the
                # stale one when another stage built it (e.g. sparse after a new `index`).
                source = next(c.source for c in scored.components if c.score is not None)
                family = family_of(source.removesuffix(PRF_SUFFIX))
                raise CorruptIndexError(
                    self._folders[family.kind], f"{family.kind} index", family.stage,
                    f"it returns document {scored.doc_id!r}, which {DOCS_FILE} does not hold",
                )
            hits.append(Hit(scored.doc_id, scored.score, rank, doc.title, doc.text, scored.components))
        return hits
