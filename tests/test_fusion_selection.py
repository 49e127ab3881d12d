"""Per-collection choice of a pipeline's `auto` settings (models/fusion_selection.py, pipeline/fusion.py) and
the Searcher running that choice (indexing/pipeline_choice.py).

The selection is checked on toy rankings whose right answer is known: a useless retriever gets weight 0,
two retrievers that each find half of what matters get an interior weight. The stage and the Searcher
run for real on a tiny index root (Lucene BM25, FAISS over MiniLM) with hand-made feedback labels.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from clickloop.beir import Document, write_beir
from clickloop.params import from_dict
from indexing import CorruptIndexError, MissingIndexError, SearchConfig, Searcher, SearchInputError
from indexing.fusion import fuse
from indexing.pipeline_choice import CHOICES_FILE, FORMAT, requested, resolve
from indexing.settings import AUTO, PipelineSpec
from models.fusion_selection import (
    Candidate,
    SelectionConfig,
    candidates,
    query_ndcg,
    select,
    simplex_grid,
)
from tests.test_search_pipelines import DOCS

# --- the selection on toy rankings -------------------------------------------------------------


def _toy_rank(rankings: dict[str, dict[str, list[tuple[str, float]]]]):
    """A rank function over fixed per-mode rankings, fused as the Searcher fuses them."""
    def rank(spec: PipelineSpec) -> dict[str, list[str]]:
        weights = spec.mode_weights()
        queries = next(iter(rankings.values()))
        return {q: [d.doc_id for d in fuse({m: rankings[m][q] for m in spec.modes}, weights, 100)] for q in queries}
    return rank


def _no_prf(mode: str) -> bool:
    return False


def _scores(docs: list[str]) -> list[tuple[str, float]]:
    return [(d, 1.0 - i / len(docs)) for i, d in enumerate(docs)]


def test_the_grid_covers_the_simplex_with_its_corners() -> None:
    grid = simplex_grid(2, 0.1)
    assert len(grid) == 11 and (1.0, 0.0) in grid and (0.0, 1.0) in grid and (0.5, 0.5) in grid
    assert len(simplex_grid(3, 0.25)) == 15 and all(math.isclose(sum(w), 1) for w in simplex_grid(3, 0.25))
    with pytest.raises(ValueError, match="divide 1"):
        SelectionConfig(weight_step=0.3)


def test_candidates_skip_what_changes_nothing_and_rm3_before_a_fusion() -> None:
    spec = PipelineSpec(["bm25", "dense"], weights=AUTO, prf=AUTO, fusion=AUTO)
    found = set(candidates(spec, lambda m: True, lambda m: m == "bm25", 0.5))
    # A corner runs one retriever: its PRF on or off, placement moot.
    assert {c for c in found if c.weights == (1.0, 0.0)} == {Candidate((1.0, 0.0), (), "after"),
                                                            Candidate((1.0, 0.0), ("bm25",), "after")}
    middle = {c for c in found if c.weights == (0.5, 0.5)}
    # RM3 reads only BM25's own ranking: with it, only fusion after.
    assert Candidate((0.5, 0.5), ("bm25",), "before") not in middle
    assert Candidate((0.5, 0.5), ("dense",), "both") in middle and Candidate((0.5, 0.5), (), "after") in middle
    assert len(middle) == 1 + 1 + 3 + 1  # none; bm25 after; dense x3; both modes after
    explicit = PipelineSpec(["bm25", "dense"], weights=[1, 3], prf=[], fusion="after")
    assert candidates(explicit, lambda m: True, _no_prf, 0.1) == [Candidate((0.25, 0.75), (), "after")]


def test_condensed_lists_drop_unlabelled_documents_and_zero_counts_them_irrelevant() -> None:
    labels = {"a": 1.0, "b": 0.0, "c": math.nan}
    assert query_ndcg(["x", "c", "a"], labels, "condensed") == pytest.approx(1.0)
    assert query_ndcg(["x", "c", "a"], labels, "zero") == pytest.approx(1 / math.log2(4))
    assert query_ndcg(["b", "a"], labels, "condensed") == pytest.approx(1 / math.log2(3))


def test_a_useless_retriever_gets_weight_zero() -> None:
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(50)]
    good, noise, labels = {}, {}, {}
    for q in range(30):
        relevant = docs[q % 50]
        others = [d for d in docs if d != relevant]
        good[f"q{q}"] = _scores([relevant, *others])
        noise[f"q{q}"] = _scores(list(rng.permutation(docs)))
        labels[f"q{q}"] = {relevant: 1.0, **{d: 0.0 for d in others[:9]}}
    spec = PipelineSpec(["good", "noise"], weights=AUTO)
    selection = select(spec, _toy_rank({"good": good, "noise": noise}), labels, _no_prf, _no_prf,
                       SelectionConfig(unlabelled="zero"))
    assert selection.chosen.candidate.weights == (1.0, 0.0)
    assert selection.chosen.candidate.spec(spec).modes == ["good"]
    assert selection.chosen.mean == pytest.approx(1.0)


def test_two_retrievers_that_each_find_half_get_an_interior_weight() -> None:
    fillers = [f"f{i}" for i in range(60)]
    left, right, labels = {}, {}, {}
    for q in range(30):
        a, b = f"a{q}", f"b{q}"
        # Each ranks its own relevant document first and the other's half-way down, above its noise.
        left[f"q{q}"] = _scores([a, *fillers[:20], b, *fillers[20:40]])
        right[f"q{q}"] = _scores([b, *fillers[40:60], a, *fillers[:20]])
        labels[f"q{q}"] = {a: 1.0, b: 1.0}
    selection = select(PipelineSpec(["left", "right"], weights=AUTO), _toy_rank({"left": left, "right": right}),
                       labels, _no_prf, _no_prf, SelectionConfig(unlabelled="zero"))
    weights = selection.chosen.candidate.weights
    assert 0 < weights[0] < 1 and selection.chosen.mean == pytest.approx(1.0)
    corner = next(s for s in selection.scored if s.candidate.weights == (1.0, 0.0))
    assert corner.mean < 0.9


def test_the_simpler_pipeline_wins_within_one_standard_error() -> None:
    # Fusing gains on a few queries and loses on others: no better beyond noise, so one retriever.
    fillers = [f"f{i}" for i in range(40)]
    left, right, labels = {}, {}, {}
    for q in range(20):
        a = f"a{q}"
        left[f"q{q}"] = _scores([a, *fillers])
        swap = 2 if q % 2 else 0  # right finds a at rank 1 or 3
        right[f"q{q}"] = _scores([*fillers[:swap], a, *fillers[swap:]])
        labels[f"q{q}"] = {a: 1.0}
    for q in range(3):  # on three queries right would help left a little
        left[f"q{q}"] = _scores([*fillers[:1], f"a{q}", *fillers[1:]])
    selection = select(PipelineSpec(["left", "right"], weights=AUTO), _toy_rank({"left": left, "right": right}),
                       labels, _no_prf, _no_prf, SelectionConfig(unlabelled="zero", simpler_within=1.0))
    assert sum(w > 0 for w in selection.chosen.candidate.weights) == 1
    greedy = select(PipelineSpec(["left", "right"], weights=AUTO), _toy_rank({"left": left, "right": right}),
                    labels, _no_prf, _no_prf, SelectionConfig(unlabelled="zero", simpler_within=0.0))
    assert greedy.chosen.mean >= selection.chosen.mean


# --- the choice as the Searcher reads it --------------------------------------------------------

AUTO_HYBRID = PipelineSpec(["bm25", "dense"], weights=AUTO)


def _choice_file(root: Path, chosen: dict, spec: PipelineSpec = AUTO_HYBRID) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / CHOICES_FILE).write_text(json.dumps(
        {"format": FORMAT, "pipelines": {"hybrid": {"requested": requested(spec), "chosen": chosen}}}))


def test_auto_comes_from_params_and_nothing_else_does() -> None:
    config = from_dict(SearchConfig, {"pipelines": {"hybrid": {"modes": ["bm25", "dense"], "weights": "auto",
                                                               "prf": "auto", "fusion": "auto"}}}, "search")
    assert config.pipelines["hybrid"].auto_fields == ["weights", "prf", "fusion"]
    with pytest.raises(ValueError, match="weights must be a list or 'auto'"):
        PipelineSpec(["bm25"], weights="equal")
    with pytest.raises(ValueError, match="resolve them first"):
        AUTO_HYBRID.mode_weights()


def test_resolve_reads_the_choice_and_explicit_settings_win(tmp_path: Path) -> None:
    chosen = {"modes": ["dense"], "weights": [1.0], "prf": [], "fusion": "after"}
    with pytest.raises(MissingIndexError, match="dvc repro fusion"):
        resolve("hybrid", AUTO_HYBRID, tmp_path, {})
    _choice_file(tmp_path, chosen)
    choices = json.loads((tmp_path / CHOICES_FILE).read_text())["pipelines"]
    assert resolve("hybrid", AUTO_HYBRID, tmp_path, choices) == PipelineSpec(["dense"], weights=[1.0])
    explicit = PipelineSpec(["bm25", "dense"], weights=[0.3, 0.7])
    assert resolve("hybrid", explicit, tmp_path, choices) is explicit
    with pytest.raises(CorruptIndexError, match="params now say"):  # chosen for other modes: stale
        resolve("hybrid", replace(AUTO_HYBRID, modes=["bm25", "sparse"]), tmp_path, choices)


# --- the stage and the Searcher on a real index root ---------------------------------------------

# The corpus of the search-pipeline tests: eight documents on unrelated topics.
TRAIN = {  # a logged query -> the document its clicks favour
    "plants and sunlight": "photo", "green leaves": "pigment", "lava eruption": "volcano", "honey": "bees",
    "big sea animal": "whale", "tides": "moon", "chess openings": "chess", "baking bread": "bread",
    "glucose from light": "photo", "hive insects": "bees", "krill eater": "whale", "yeast dough": "bread",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.index import IndexConfig
    from pipeline.index import run as build_index_root

    project = tmp_path_factory.mktemp("project")
    write_beir(project / "beir", [Document(i, t, x) for i, (t, x) in DOCS.items()], {"t1": "honey"},
               {"test": {"t1": {"bees": 1}}})
    build_index_root(IndexConfig(dataset_dir=str(project / "beir"), out_dir=str(project / "indices"),
                                 metrics_file=str(project / "index.json")))
    rows = []
    for query, clicked in TRAIN.items():
        for doc in DOCS:
            relevant = doc == clicked
            rows.append({"query": query, "doc_id": doc, "posterior_relevance": 0.9 if relevant else 0.1,
                         "posterior_sd": 0.05})
    pl.DataFrame(rows).write_parquet(project / "labels.parquet")
    return project


def _trainers(project: Path) -> list:
    from pipeline.dense_feedback import DenseFeedbackConfig
    from pipeline.sparse import SparseConfig

    paths = {"dataset_dir": str(project / "beir"), "labels_file": str(project / "labels.parquet"),
             "index_root": str(project / "indices")}
    return [SparseConfig(teacher_depth=5, **paths), DenseFeedbackConfig(teacher_depth=5, **paths)]


@pytest.mark.jvm
def test_the_stage_chooses_on_the_trainers_held_out_queries_and_the_searcher_runs_it(project: Path) -> None:
    from models.feedback_queries import click_label_queries, searcher_teachers, split_queries, with_teachers
    from pipeline.fusion import FusionConfig, run, selection_queries

    root = project / "indices"
    trainers = _trainers(project)
    held_out = selection_queries(trainers, str(root))
    # Exactly the trainers' validation split: with_teachers then split_queries, share and seed as they use them.
    labelled = click_label_queries(pl.read_parquet(project / "labels.parquet"))
    searcher = Searcher(root, modes=["bm25", "dense"])
    teachers = searcher_teachers(searcher, ["bm25", "dense"])
    queries = with_teachers(labelled, {d: i for i, d in enumerate(DOCS)}, teachers, 5, ["bm25", "dense", "clicks"])
    _, validation = split_queries(queries, 0.1, trainers[0].training.seed)
    assert sorted(text for text, _ in held_out.values()) == sorted(q.text for q in validation)

    settings = SearchConfig(pipelines={"hybrid": replace(AUTO_HYBRID, prf=AUTO, fusion=AUTO),
                                       "fixed": PipelineSpec(["bm25", "dense"], weights=[0.3, 0.7])})
    config = FusionConfig(index_root=str(root), out_file=str(root / CHOICES_FILE),
                          metrics_file=str(project / "fusion.json"))
    metrics = run(config, settings, trainers)
    assert set(metrics) == {"hybrid"}  # an explicit pipeline needs no choice
    written = json.loads((root / CHOICES_FILE).read_text())["pipelines"]["hybrid"]
    assert written["validation"]["queries"] == len(validation)
    assert all({"weights", "prf", "fusion", "ndcg@10", "se"} <= set(row) for row in written["grid"])
    assert {tuple(row["weights"]) for row in written["grid"]} >= {(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)}

    served = Searcher(root, settings=settings)
    assert served.pipeline_spec("hybrid") == PipelineSpec(**written["chosen"])
    assert served.pipeline_spec("fixed").weights == [0.3, 0.7]  # explicit weights win
    hits = served.search("honey bees", k=3, mode="hybrid")
    sources = [c.source.removesuffix("+prf") for c in hits[0].components]
    assert sorted(set(sources)) == sorted(written["chosen"]["modes"])
    with pytest.raises(SearchInputError, match="ad hoc pipeline needs explicit"):
        served.search("honey", mode=AUTO_HYBRID)


@pytest.mark.jvm
def test_a_searcher_without_the_choice_serves_the_rest_or_names_the_stage(project: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "indices"
    shutil.copytree(project / "indices", root)
    (root / CHOICES_FILE).unlink(missing_ok=True)
    settings = SearchConfig(pipelines={"hybrid": AUTO_HYBRID})
    searcher = Searcher(root, settings=settings)
    assert "hybrid" not in searcher.modes and "dense" in searcher.modes
    with pytest.raises(MissingIndexError, match="dvc repro fusion"):
        Searcher(root, modes=["hybrid"], settings=settings)


def test_judged_labels_are_the_train_qrels_of_the_same_held_out_queries(tmp_path: Path) -> None:
    from pipeline.fusion import judged_labels
    from pipeline.sparse import SparseConfig

    write_beir(tmp_path, [Document(i, t, x) for i, (t, x) in DOCS.items()],
               {"r1": "honey", "r2": "tides", "r3": "chess openings"},
               {"train": {"r1": {"bees": 2, "bread": 0}, "r2": {"moon": 0}}})
    held_out = {"v0": ("honey", {"bees": 0.9}), "v1": ("tides", {"moon": 0.9}), "v2": ("unjudged", {"x": 1.0})}
    judged = judged_labels(held_out, SparseConfig(dataset_dir=str(tmp_path)))
    assert judged == {"v0": ("honey", {"bees": 2.0, "bread": 0.0})}  # no positive judgment: left out
