"""A search pipeline: first-stage retrievers, pseudo-relevance feedback, and fusion before or after it.

The Searcher builds one per named pipeline of `search.pipelines` (served as a mode of its own) and
one on the fly for `search(..., prf=True)` over a single mode. PRF comes in two kinds:
- Rocchio over the retriever's own vectors (dense, sparse: `FeedbackRetriever.feedback_search`),
  which reads any feedback documents, so it can follow a fusion (`fusion: before` or `both`);
- a PRF mode that reads only its own top documents (bm25 -> bm25_rm3, pyserini's RM3), usable
  with `fusion: after` only.
"""

from __future__ import annotations

from collections.abc import Mapping

from indexing.errors import SearchInputError, check_k, check_queries, check_query
from indexing.fusion import ScoredDoc, fuse, unfused
from indexing.retriever import FeedbackRetriever, Ranking, Retriever
from indexing.settings import PipelineSpec

PRF_SUFFIX = "+prf"


class SearchPipeline:
    """Runs one `PipelineSpec` over loaded retrievers; as thread-safe as they are (it holds no state)."""

    def __init__(self, name: str, spec: PipelineSpec, retrievers: Mapping[str, Retriever],
                 own_feedback_prf: Mapping[str, str]) -> None:
        """`retrievers`: the loaded modes by name; `own_feedback_prf`: mode -> its own-feedback PRF mode."""
        self.name, self.spec = name, spec
        missing = [m for m in spec.modes if m not in retrievers]
        if missing:
            raise SearchInputError(f"pipeline {name!r} needs mode(s) {missing}, which this Searcher did not load")
        self._retrievers = retrievers
        self._prf_sources = {mode: self._prf_source(mode, own_feedback_prf) for mode in spec.prf}
        self._own_feedback_prf = own_feedback_prf
        self.num_docs = max(retrievers[m].num_docs for m in spec.modes)

    def _prf_source(self, mode: str, own_feedback_prf: Mapping[str, str]) -> str:
        """The name of `mode`'s PRF ranking; a SearchInputError when `mode` has no PRF this pipeline can run."""
        if isinstance(self._retrievers[mode], FeedbackRetriever):
            return f"{mode}{PRF_SUFFIX}"
        prf_mode = own_feedback_prf.get(mode)
        if prf_mode is None:
            raise SearchInputError(f"pipeline {self.name!r}: mode {mode!r} has no PRF")
        if self.spec.fusion != "after" and len(self.spec.modes) > 1:
            raise SearchInputError(
                f"pipeline {self.name!r}: {mode}'s PRF ({prf_mode}) reads only its own top documents, so it cannot "
                f"follow a fusion; use fusion: after, or PRF on modes that read given documents (dense, sparse)"
            )
        return prf_mode

    def _run_prf(self, mode: str, queries: Mapping[str, str], feedback: Mapping[str, list[str]],
                 depth: int) -> dict[str, Ranking]:
        retriever = self._retrievers[mode]
        if isinstance(retriever, FeedbackRetriever):
            return retriever.feedback_search(queries, feedback, depth)
        return self._retrievers[self._own_feedback_prf[mode]].batch_search(queries, depth)

    def search(self, query: str, k: int) -> list[ScoredDoc]:
        check_query(query)
        return self.batch_search({"query": query}, k)["query"]

    def batch_search(self, queries: Mapping[str, str], k: int) -> dict[str, list[ScoredDoc]]:
        """The top `k` fused documents of every (query id, text), with their score components."""
        check_queries(queries)
        check_k(k)
        if not queries:
            return {}
        spec = self.spec
        depth = max(k, spec.depth)
        first = {mode: self._retrievers[mode].batch_search(queries, depth) for mode in spec.modes}
        if not spec.prf:
            return self._fused(first, {m: m for m in spec.modes}, k)
        if spec.fusion == "after":
            feedback_of = {mode: first[mode] for mode in spec.prf}
        else:
            fused = self._fused(first, {m: m for m in spec.modes}, depth)
            shared = {qid: [(d.doc_id, d.score) for d in docs] for qid, docs in fused.items()}
            feedback_of = dict.fromkeys(spec.prf, shared)
        final = {} if spec.fusion == "before" else dict(first)
        sources = {} if spec.fusion == "before" else {m: m for m in spec.modes}
        for mode in spec.prf:
            feedback = {qid: [doc_id for doc_id, _ in ranking] for qid, ranking in feedback_of[mode].items()}
            final[mode] = self._run_prf(mode, queries, feedback, depth)
            sources[mode] = self._prf_sources[mode]
        return self._fused(final, sources, k)

    def _fused(self, rankings: Mapping[str, Mapping[str, Ranking]], sources: Mapping[str, str],
               k: int) -> dict[str, list[ScoredDoc]]:
        """Per query, the fusion of each mode's ranking (named by its source), weighted by mode."""
        if len(rankings) == 1:
            [(mode, ranked)] = rankings.items()
            return {qid: unfused(sources[mode], ranking[:k]) for qid, ranking in ranked.items()}
        all_weights = self.spec.mode_weights()
        total = sum(all_weights[m] for m in rankings)
        weights = {sources[m]: all_weights[m] / total for m in rankings}
        query_ids = next(iter(rankings.values()))
        return {
            qid: fuse({sources[m]: rankings[m][qid] for m in rankings}, weights, k, self.spec.method,
                      self.spec.rrf_k)
            for qid in query_ids
        }
