"""PRF for every first stage and the fusion of rankings, before, after and around PRF.

The fusion arithmetic is checked on hand-made rankings; the pipelines on a tiny index root built
by the `index` stage (Lucene BM25, FAISS over MiniLM) plus a sparse impact index of hand-made term
weights, so each PRF can be checked against what it should compute.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from clickloop.beir import BeirDataset, Document, write_beir
from clickloop.params import from_dict
from indexing import MissingIndexError, SearchConfig, Searcher, SearchInputError
from indexing.fusion import fuse, minmax
from indexing.settings import DenseSettings, PipelineSpec, RocchioSettings, SparseRocchioSettings, SparseSettings
from indexing.sparse import DOC_IMPACTS_FILE, build_sparse_index
from pipeline.evaluate import EvaluateConfig, judged_report
from pipeline.index import IndexConfig
from pipeline.index import run as build_index_root

# --- fusion on hand-made rankings ---------------------------------------------------------------


def test_minmax_maps_each_ranking_to_the_unit_interval() -> None:
    assert minmax([("a", 3.0), ("b", 2.0), ("c", 1.0)]) == {"a": 1.0, "b": 0.5, "c": 0.0}
    assert minmax([("a", 7.0), ("b", 7.0)]) == {"a": 1.0, "b": 1.0}
    assert minmax([]) == {}


def test_interpolation_weighs_normalised_scores_and_counts_an_absent_document_as_zero() -> None:
    rankings = {"bm25": [("a", 10.0), ("b", 5.0), ("c", 0.0)], "dense": [("b", 0.9), ("d", 0.5), ("a", 0.1)]}
    fused = fuse(rankings, {"bm25": 0.25, "dense": 0.75}, k=10)
    scores = {doc.doc_id: doc.score for doc in fused}
    assert scores == pytest.approx({"a": 0.25, "b": 0.25 * 0.5 + 0.75, "c": 0.0, "d": 0.75 * 0.5})
    assert [doc.doc_id for doc in fused] == ["b", "d", "a", "c"]
    d = next(doc for doc in fused if doc.doc_id == "d")
    assert [(c.source, c.score, c.fused, c.weight) for c in d.components] == [
        ("bm25", None, 0.0, 0.25), ("dense", 0.5, pytest.approx(0.5), 0.75)
    ]


def test_rrf_sums_weighted_reciprocal_ranks_and_ties_break_by_doc_id() -> None:
    rankings = {"x": [("a", 9.0), ("b", 1.0)], "y": [("b", 0.3), ("a", 0.2)]}
    fused = fuse(rankings, {"x": 0.5, "y": 0.5}, k=1, method="rrf", rrf_k=60)
    assert [doc.doc_id for doc in fused] == ["a"]  # a and b tie; the id decides, whatever the input order
    assert fused[0].score == pytest.approx(0.5 / 61 + 0.5 / 62)
    assert fuse(dict(reversed(rankings.items())), {"x": 0.5, "y": 0.5}, 1, "rrf")[0].doc_id == "a"


@pytest.mark.parametrize("bad", [
    {"modes": []}, {"modes": ["bm25", "bm25"]}, {"modes": ["bm25", "dense"], "weights": [1.0]},
    {"modes": ["bm25"], "prf": ["dense"]}, {"modes": ["bm25"], "fusion": "during"},
    {"modes": ["bm25"], "method": "max"},
])
def test_a_pipeline_spec_that_cannot_run_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        PipelineSpec(**bad)


def test_pipelines_come_from_the_search_params_section() -> None:
    config = from_dict(SearchConfig, {
        "dense": {"prf": {"depth": 3, "alpha": 0.5, "beta": 0.5}},
        "pipelines": {"hybrid": {"modes": ["sparse", "dense"], "weights": [1, 3], "prf": ["dense"], "fusion": "both"}},
    }, "search")
    assert config.dense.prf == RocchioSettings(depth=3, alpha=0.5, beta=0.5)
    assert config.pipelines["hybrid"].mode_weights() == {"sparse": 0.25, "dense": 0.75}
    with pytest.raises(ValueError, match="unknown key"):
        from_dict(SearchConfig, {"pipelines": {"p": {"modes": ["bm25"], "weight": [1]}}}, "search")


# --- pipelines over real indices ----------------------------------------------------------------

DOCS = {
    "photo": ("Photosynthesis", "Plants turn sunlight and water into glucose with chlorophyll."),
    "pigment": ("Leaf pigment", "Chlorophyll is the green pigment of leaves."),
    "volcano": ("Volcanoes", "Magma rises through the crust and erupts as lava and ash."),
    "bees": ("Honey bees", "Worker bees collect nectar and make honey in the hive."),
    "whale": ("Blue whales", "The blue whale is the largest animal and eats krill in the ocean."),
    "moon": ("The Moon", "The moon causes ocean tides and shows phases each month."),
    "chess": ("Chess", "The Sicilian defence is a popular chess opening."),
    "bread": ("Sourdough", "A wild yeast starter ferments the dough before baking."),
}
QUERIES = {"q1": "sunlight glucose", "q2": "honey nectar hive", "q3": "largest animal ocean"}
QRELS = {"test": {"q1": {"photo": 1, "pigment": 1}, "q2": {"bees": 1}, "q3": {"whale": 1}}}
PIPELINES = {
    "hybrid": PipelineSpec(["bm25", "dense"], weights=[0.3, 0.7]),
    "hybrid_after": PipelineSpec(["sparse", "dense"], prf=["sparse", "dense"], fusion="after"),
    "dense_prf_before": PipelineSpec(["sparse", "dense"], prf=["dense"], fusion="before"),
    "dense_prf_both": PipelineSpec(["sparse", "dense"], prf=["dense"], fusion="both"),
}


def _binary_sparse_index(dataset: BeirDataset, out_dir: Path) -> None:
    """A sparse index whose documents weigh each of their tokens 1 and whose query weights are all 1."""
    from transformers import AutoTokenizer

    from clickloop.env import model_path

    tokenizer = AutoTokenizer.from_pretrained(str(model_path("all-MiniLM-L6-v2")))
    docs = list(dataset.corpus())
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(tokenizer.vocab_size)))
    rows, cols = [], []
    for row, doc in enumerate(docs):
        ids = set(tokenizer(f"{doc.title} {doc.text}".lower(), add_special_tokens=False)["input_ids"])
        rows += [row] * len(ids)
        cols += sorted(ids)
    vectors = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(docs), len(vocabulary)))
    build_sparse_index([d.doc_id for d in docs], vectors, vocabulary, np.ones(len(vocabulary)), tokenizer, out_dir)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    beir = tmp_path_factory.mktemp("beir")
    write_beir(beir, [Document(i, t, x) for i, (t, x) in DOCS.items()], QUERIES, QRELS)
    out = tmp_path_factory.mktemp("stage")
    config = IndexConfig(dataset_dir=str(beir), out_dir=str(out / "indices"), metrics_file=str(out / "index.json"))
    build_index_root(config)
    _binary_sparse_index(BeirDataset(beir), Path(config.out_dir) / "sparse")
    return Path(config.out_dir)


SETTINGS = SearchConfig(
    dense=DenseSettings(prf=RocchioSettings(depth=2, alpha=0.4, beta=0.6)),
    sparse=SparseSettings(prf=SparseRocchioSettings(depth=1, alpha=0.5, beta=0.5, expansion_terms=50)),
    pipelines=PIPELINES,
)


@pytest.fixture(scope="module")
def searcher(root: Path) -> Searcher:
    return Searcher(root, settings=SETTINGS)


def _ids(hits: list) -> list[str]:
    return [h.doc_id for h in hits]


@pytest.mark.jvm
def test_pipelines_are_modes_and_hits_carry_their_score_components(searcher: Searcher) -> None:
    assert searcher.modes == ("bm25", "bm25_rm3", "dense", "sparse", *PIPELINES)
    hits = searcher.search("honey bees in a hive", k=5, mode="hybrid")
    assert hits[0].doc_id == "bees"
    for hit in hits:
        assert [(c.source, c.weight) for c in hit.components] == [("bm25", 0.3), ("dense", 0.7)]
        assert hit.score == pytest.approx(sum(c.weight * c.fused for c in hit.components))
    plain = searcher.search("honey bees in a hive", k=3, mode="dense")
    assert [(c.source, c.score, c.weight) for c in plain[0].components] == [("dense", plain[0].score, 1.0)]


@pytest.mark.jvm
def test_a_pipeline_weighing_one_retriever_alone_ranks_as_it_does(root: Path) -> None:
    settings = replace(SETTINGS, pipelines={"bm25_only": PipelineSpec(["bm25", "dense"], weights=[1.0, 0.0])})
    searcher = Searcher(root, settings=settings)
    for query in ["ocean whale moon leaves", "honey chess dough lava"]:
        bm25 = _ids(searcher.search(query, k=10, mode="bm25"))
        assert len(bm25) >= 3
        # The last BM25 hit normalises to 0 and ties with documents only dense found.
        assert _ids(searcher.search(query, k=len(bm25) - 1, mode="bm25_only")) == bm25[:-1]


@pytest.mark.jvm
def test_dense_prf_is_rocchio_over_the_feedback_documents(searcher: Searcher) -> None:
    dense = searcher._retrievers["dense"]
    query = "sunlight glucose"
    feedback = _ids(searcher.search(query, k=2, mode="dense"))
    expanded = 0.4 * dense._encode([query])[0] + 0.6 * np.mean(
        [dense._cpu_index.reconstruct(dense._rows[d]) for d in feedback], axis=0)
    hits = searcher.search(query, k=3, mode="dense", prf=True)
    for hit in hits:
        doc_vector = dense._cpu_index.reconstruct(dense._rows[hit.doc_id])
        assert hit.score == pytest.approx(float(expanded @ doc_vector), abs=1e-5)
    assert [c.source for c in hits[0].components] == ["dense+prf"]


@pytest.mark.jvm
def test_sparse_prf_adds_the_feedback_documents_terms_without_a_transformer(searcher: Searcher) -> None:
    # "pigment" shares no token with the query; its one link is "chlorophyll", which the top document holds.
    assert "pigment" not in _ids(searcher.search("sunlight glucose", k=10, mode="sparse"))
    sparse = searcher._retrievers["sparse"]
    expanded = sparse.expanded_vector("sunlight glucose", ["photo"])
    query = sparse.query_vector("sunlight glucose")
    photo_tokens = set(sparse._impacts[sparse._rows["photo"]].indices)
    assert set(query) < set(expanded) <= set(query) | photo_tokens
    # A query term also in the feedback gets alpha and beta; an expansion term beta only.
    assert min(expanded[t] for t in query) > max(w for t, w in expanded.items() if t not in query)
    assert "pigment" in _ids(searcher.search("sunlight glucose", k=10, mode="sparse", prf=True))


@pytest.mark.jvm
def test_bm25_prf_is_rm3(searcher: Searcher) -> None:
    query = "ocean animal"
    rm3 = searcher.search(query, k=5, mode="bm25_rm3")
    prf = searcher.search(query, k=5, mode="bm25", prf=True)
    assert [(h.doc_id, h.score) for h in prf] == [(h.doc_id, h.score) for h in rm3]
    assert prf[0].components[0].source == "bm25_rm3"
    with pytest.raises(SearchInputError, match="no pseudo-relevance feedback"):
        searcher.search(query, mode="bm25_rm3", prf=True)


@pytest.mark.jvm
@pytest.mark.parametrize(("mode", "sources"), [
    ("dense_prf_before", ["dense+prf"]), ("dense_prf_both", ["sparse", "dense+prf"]),
    ("hybrid_after", ["sparse+prf", "dense+prf"]),
])
def test_fusion_before_after_and_both(
    root: Path, mode: str, sources: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    searcher = Searcher(root, modes=[mode], settings=SETTINGS)
    assert mode in searcher.modes and "bm25" not in searcher.modes
    dense = searcher._retrievers["dense"]
    seen: list[dict] = []
    original = dense.feedback_search

    def spy(queries: dict, feedback: dict, k: int) -> dict:
        seen.append(feedback)
        return original(queries, feedback, k)

    monkeypatch.setattr(dense, "feedback_search", spy)
    hits = searcher.search("sunlight glucose", k=4, mode=mode)
    assert [c.source for c in hits[0].components] == sources
    fused_first = searcher.search("sunlight glucose", k=100, mode=mode, prf=False)
    own_first = searcher.search("sunlight glucose", k=100, mode="dense")
    expected_feedback = own_first if mode == "hybrid_after" else fused_first
    assert seen and next(iter(seen[0].values()))[:2] == _ids(expected_feedback)[:2]


@pytest.mark.jvm
def test_prf_false_turns_a_pipelines_prf_off_and_true_turns_it_on_everywhere(searcher: Searcher) -> None:
    off = searcher.search("sunlight glucose", k=3, mode="dense_prf_both", prf=False)
    assert [c.source for c in off[0].components] == ["sparse", "dense"]
    on = searcher.search("sunlight glucose", k=3, mode="hybrid", prf=True)
    assert [c.source for c in on[0].components] == ["bm25_rm3", "dense+prf"]
    ad_hoc = searcher.search("sunlight glucose", k=3, mode=PipelineSpec(["bm25", "dense"], weights=[0.3, 0.7]))
    assert ad_hoc == searcher.search("sunlight glucose", k=3, mode="hybrid")


@pytest.mark.jvm
def test_a_pipeline_that_cannot_run_fails_at_load(root: Path) -> None:
    rm3_before = {"p": PipelineSpec(["bm25", "dense"], prf=["bm25"], fusion="before")}
    with pytest.raises(SearchInputError, match="reads only its own top documents"):
        Searcher(root, settings=replace(SETTINGS, pipelines=rm3_before))
    with pytest.raises(SearchInputError, match="are retriever modes already"):
        Searcher(root, settings=replace(SETTINGS, pipelines={"dense": PipelineSpec(["bm25"])}))


@pytest.mark.jvm
def test_pipeline_batch_search_equals_search_and_is_thread_safe(searcher: Searcher) -> None:
    requests = [(q, m) for q in QUERIES.values() for m in PIPELINES] * 3

    def ranked(request: tuple[str, str]) -> list[tuple[str, float]]:
        return [(h.doc_id, h.score) for h in searcher.search(request[0], k=5, mode=request[1])]

    sequential = [ranked(r) for r in requests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(ranked, requests)) == sequential
    batch = searcher.batch_search(QUERIES, k=5, mode="dense_prf_both")
    for qid, text in QUERIES.items():
        one = ranked((text, "dense_prf_both"))  # encoded alone, not padded in a batch: equal up to float noise
        assert [h.doc_id for h in batch[qid]] == [doc_id for doc_id, _ in one]
        assert [h.score for h in batch[qid]] == pytest.approx([score for _, score in one], abs=1e-5)


@pytest.mark.jvm
def test_pipeline_input_is_checked_like_a_retrievers(searcher: Searcher) -> None:
    with pytest.raises(SearchInputError, match="non-empty"):
        searcher.search("  ", mode="hybrid")
    with pytest.raises(SearchInputError, match="query ids must be strings"):
        searcher.batch_search({1: "bees"}, mode="hybrid")  # type: ignore[dict-item]
    with pytest.raises(SearchInputError, match="k must be"):
        searcher.search("bees", k=0, mode="dense_prf_both")


@pytest.mark.jvm
def test_sparse_prf_on_a_folder_built_before_impacts_were_kept_names_the_stage(root: Path, tmp_path: Path) -> None:
    old = tmp_path / "indices"
    shutil.copytree(root, old)
    (old / "sparse" / DOC_IMPACTS_FILE).unlink()
    searcher = Searcher(old, modes=["sparse"], settings=SETTINGS)
    assert searcher.search("sunlight glucose", k=3, mode="sparse")  # plain search still serves
    with pytest.raises(MissingIndexError, match="dvc repro sparse"):
        searcher.search("sunlight glucose", k=3, mode="sparse", prf=True)


@pytest.mark.jvm
def test_evaluate_reports_every_configured_pipeline(root: Path, tmp_path: Path) -> None:
    dataset_dir = tmp_path / "beir"
    write_beir(dataset_dir, [Document(i, t, x) for i, (t, x) in DOCS.items()], QUERIES, QRELS)
    config = EvaluateConfig(dataset_dir=str(dataset_dir), index_root=str(root), runs_dir=str(tmp_path / "runs"),
                            retrievers=["dense", "hybrid", "dense_prf_both"])
    report = judged_report(config, Searcher(root, modes=config.retrievers, settings=SETTINGS))
    assert set(report) == {"dense", "hybrid", "dense_prf_both"}
    assert all(0 < row["nDCG@10"] <= 1 for row in report.values())
    assert (tmp_path / "runs" / "hybrid.trec").is_file()


@pytest.mark.jvm
def test_cli_serves_pipelines_prf_and_prints_why(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from indexing.cli import main as cli_main

    params = tmp_path / "params.yaml"
    params.write_text("search:\n  pipelines:\n    hybrid:\n      modes: [bm25, dense]\n      weights: [0.3, 0.7]\n")
    assert cli_main(["honey bees", "--mode", "hybrid", "--why", "-k", "2", "--index-root", str(root),
                     "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert "bees" in out.splitlines()[0] and "bm25" in out and "weight 0.70" in out
    assert cli_main(["honey bees", "--mode", "dense", "--prf", "--why", "--index-root", str(root)]) == 0
    assert "dense+prf" in capsys.readouterr().out
    assert cli_main(["honey bees", "--mode", "no_such_mode", "--index-root", str(root)]) == 2
    assert "unknown search mode" in capsys.readouterr().err


@pytest.mark.jvm
@pytest.mark.parametrize("mode", ["bm25", "sparse", "dense", "hybrid"])
def test_string_subclasses_such_as_numpy_str_are_served(searcher: Searcher, mode: str) -> None:
    # Ids drawn with numpy (e.g. a random split of query ids) are numpy.str_, which the JVM bridge refuses.
    batch = searcher.batch_search({np.str_("q"): np.str_("honey bees")}, k=3, mode=mode)
    assert [h.doc_id for h in batch["q"]] == [h.doc_id for h in searcher.search("honey bees", k=3, mode=mode)]
