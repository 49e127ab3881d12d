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
class RocchioSettings:
    """Rocchio pseudo-relevance feedback: the query vector becomes alpha q + beta times the mean vector of
    the top `depth` feedback documents (pyserini's dense reproduction: depth 5, alpha 0.4, beta 0.6)."""

    depth: int = 5
    alpha: float = 0.4
    beta: float = 0.6

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"PRF depth must be at least 1, got {self.depth}")
        if self.alpha < 0 or self.beta < 0 or self.alpha + self.beta == 0:
            raise ValueError(f"PRF needs alpha, beta >= 0, not both 0; got alpha={self.alpha}, beta={self.beta}")


@dataclass
class SparseRocchioSettings(RocchioSettings):
    """Rocchio over term weights: the query keeps its own terms and gains the feedback documents' heaviest ones."""

    expansion_terms: int = 20  # each expansion term is one more clause of the Lucene query

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.expansion_terms < 0:
            raise ValueError(f"expansion_terms must be >= 0, got {self.expansion_terms}")


@dataclass
class DenseSettings:
    """FAISS search parameters, query encoding and vector PRF."""

    # faiss.ParameterSpace settings applied when the index is loaded, e.g. "nprobe=16" for IVF
    # or "efSearch=128" for HNSW; empty keeps FAISS's defaults.
    search_params: str = ""
    batch_size: int = 64  # queries per encoder batch in batch_search
    prf: RocchioSettings = field(default_factory=RocchioSettings)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


@dataclass
class SparseSettings:
    """Query weighting and term-vector PRF of the inference-free sparse retriever."""

    # Lucene impact queries take integer weights: a query token's weight times this, rounded.
    query_scale: float = 100.0
    prf: SparseRocchioSettings = field(default_factory=SparseRocchioSettings)

    def __post_init__(self) -> None:
        if self.query_scale <= 0:
            raise ValueError(f"query_scale must be positive, got {self.query_scale}")


FUSION_POINTS = ("before", "after", "both")
FUSION_METHODS = ("interpolate", "rrf")
# A pipeline field set to this is chosen per collection by the `fusion` stage on held-out training queries
# (pipeline/fusion.py); the Searcher reads the choice from the index root's pipelines.json.
AUTO = "auto"


@dataclass
class PipelineSpec:
    """A search pipeline: first-stage modes, which of them run PRF, and how their rankings fuse.

    `fusion` places the fusion relative to PRF (Li et al., SIGIR 2022): `after`, each PRF reads its
    own retriever's top documents and the final rankings fuse; `before`, the first stages fuse and
    the fused top documents feed every PRF, whose rankings alone fuse into the result; `both`, the
    fused top documents feed the PRF and every mode's final ranking (PRF or not) fuses.

    `weights`, `prf` and `fusion` may each be `auto` (AUTO): the `fusion` stage measures the choices on
    held-out training queries, and a Searcher runs what it chose; explicit values are used as given.
    """

    modes: list[str]
    weights: list[float] | str = field(default_factory=list)  # per mode, normalised to sum 1; empty: equal; auto
    prf: list[str] | str = field(default_factory=list)  # the modes whose PRF runs; auto
    fusion: str = "after"  # before | after | both | auto
    method: str = "interpolate"  # interpolate: weighted sum of per-query min-max scores; rrf: reciprocal ranks
    depth: int = 100  # documents each ranking contributes to the fusion (at least k)
    rrf_k: int = 60

    def __post_init__(self) -> None:
        if not self.modes or len(set(self.modes)) != len(self.modes):
            raise ValueError(f"a pipeline needs distinct modes, got {self.modes}")
        for name in ("weights", "prf"):
            value = getattr(self, name)
            if isinstance(value, str) and value != AUTO:
                raise ValueError(f"{name} must be a list or {AUTO!r}, got {value!r}")
        weights = self.weights
        if weights and weights != AUTO and (
            len(weights) != len(self.modes) or min(weights) < 0 or sum(weights) <= 0
        ):
            raise ValueError(f"weights must be one non-negative number per mode {self.modes}, got {weights}")
        if self.prf != AUTO and not set(self.prf) <= set(self.modes):
            raise ValueError(f"prf modes {self.prf} must be among the pipeline's modes {self.modes}")
        if self.fusion not in (*FUSION_POINTS, AUTO) or self.method not in FUSION_METHODS:
            raise ValueError(f"fusion must be one of {FUSION_POINTS} and method one of {FUSION_METHODS}, got "
                             f"{self.fusion!r}, {self.method!r}")
        if self.depth < 1 or self.rrf_k < 0:
            raise ValueError(f"depth must be >= 1 and rrf_k >= 0, got {self.depth}, {self.rrf_k}")

    @property
    def auto_fields(self) -> list[str]:
        """The fields left to the `fusion` stage's measurement."""
        return [name for name in ("weights", "prf", "fusion") if getattr(self, name) == AUTO]

    def mode_weights(self) -> dict[str, float]:
        """Each mode's fusion weight, summing to 1."""
        if self.auto_fields:
            raise ValueError(f"pipeline fields {self.auto_fields} are {AUTO!r}: resolve them first "
                             "(indexing.pipeline_choice.resolve)")
        weights = self.weights or [1.0] * len(self.modes)
        return {mode: w / sum(weights) for mode, w in zip(self.modes, weights, strict=True)}


@dataclass
class SearchConfig:
    """params.yaml section `search`: one field per retriever family (or per part of one, like rm3), and
    the named pipelines, which the Searcher serves as modes of their own."""

    bm25: BM25Settings = field(default_factory=BM25Settings)
    rm3: RM3Settings = field(default_factory=RM3Settings)
    dense: DenseSettings = field(default_factory=DenseSettings)
    sparse: SparseSettings = field(default_factory=SparseSettings)
    pipelines: dict[str, PipelineSpec] = field(default_factory=dict)
