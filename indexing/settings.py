"""Query-time settings of the retrievers (params.yaml section `search`), one section per family.

They are read when a `Searcher` loads, never frozen into an index: changing them reruns the
evaluation, not the index build. Build-time settings live with each index (`index:` section).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BM25Settings:
    """Lucene BM25 scoring and batch threads; the defaults are pyserini's."""

    k1: float = 0.9
    b: float = 0.4
    threads: int = 2  # Lucene threads for batch_search

    def __post_init__(self) -> None:
        if self.k1 < 0 or not 0 <= self.b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={self.k1}, b={self.b}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")


@dataclass
class RM3Settings:
    """RM3 query expansion of the bm25_rm3 mode; the defaults are pyserini's."""

    fb_terms: int = 10
    fb_docs: int = 10
    original_query_weight: float = 0.5

    def __post_init__(self) -> None:
        if self.fb_terms < 1 or self.fb_docs < 1:
            raise ValueError("RM3 needs at least one feedback term and one feedback document")
        if not 0 <= self.original_query_weight <= 1:
            raise ValueError(f"original_query_weight must be in [0, 1], got {self.original_query_weight}")


@dataclass
class DenseSettings:
    """FAISS search parameters and query encoding."""

    # faiss.ParameterSpace settings applied when the index is loaded, e.g. "nprobe=16" for IVF
    # or "efSearch=128" for HNSW; empty keeps FAISS's defaults.
    search_params: str = ""
    batch_size: int = 64  # queries per encoder batch in batch_search

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


@dataclass
class SparseSettings:
    """Query weighting of the inference-free sparse retriever."""

    # Lucene impact queries take integer weights: a query token's weight times this, rounded.
    query_scale: float = 100.0

    def __post_init__(self) -> None:
        if self.query_scale <= 0:
            raise ValueError(f"query_scale must be positive, got {self.query_scale}")


@dataclass
class SearchConfig:
    """params.yaml section `search`: one field per retriever family (or per part of one, like rm3)."""

    bm25: BM25Settings = field(default_factory=BM25Settings)
    rm3: RM3Settings = field(default_factory=RM3Settings)
    dense: DenseSettings = field(default_factory=DenseSettings)
    sparse: SparseSettings = field(default_factory=SparseSettings)
