"""Indices and the Searcher on a tiny BEIR folder, with real Lucene, FAISS and MiniLM.

One index root is built per module (through the `index` stage itself) and shared; the JVM
starts once per test session.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from clickloop.beir import BeirDataset, BeirFormatError, Document, write_beir
from clickloop.env import model_path
from clickloop.fingerprint import content_sha256
from indexing import MissingIndexError, SearchConfig, Searcher, SearchInputError
from indexing import bm25 as bm25_module
from indexing.bm25 import BM25BuildConfig, BM25Index
from indexing.cli import main as cli_main
from indexing.dense import DenseBuildConfig, DenseIndex
from indexing.errors import MAX_K, MAX_QUERY_CHARS
from indexing.retriever import FORMAT_VERSION, known_modes
from indexing.settings import BM25Settings, DenseSettings
from pipeline.index import IndexConfig, run

pytestmark = pytest.mark.jvm  # starts Lucene's JVM in this process: see the `test` target in Makefile

TOPICS = {
    "photo": ("Photosynthesis", "Plants convert sunlight, water and carbon dioxide into glucose using chlorophyll."),
    "volcano": ("Volcanoes", "Magma rises through the crust and erupts as lava, ash and volcanic gas."),
    "jazz": ("Jazz music", "Improvisation, swing rhythm and blue notes define jazz from New Orleans."),
    "chess": ("Chess openings", "The Sicilian defence and the Queen's gambit are popular chess openings."),
    "bread": ("Sourdough bread", "A wild yeast starter ferments the dough before baking a crusty loaf."),
    "moon": ("The Moon", "Earth's natural satellite causes ocean tides and shows phases each month."),
    "python": ("Python snakes", "Pythons are large constricting snakes that swallow their prey whole."),
    "bees": ("Honey bees", "Worker bees collect nectar and pollen and make honey in the hive."),
    "glacier": ("Glaciers", "Slow rivers of ice carve valleys and retreat as the climate warms."),
    "vaccine": ("Vaccines", "A vaccine trains the immune system to recognise a virus with antigens."),
    "tennis": ("Tennis", "Players hit a ball over a net with rackets; Wimbledon is played on grass."),
    "coffee": ("Coffee", "Roasted coffee beans are ground and brewed; caffeine keeps people awake."),
    "bridge": ("Suspension bridges", "Cables hung from tall towers carry the deck of a suspension bridge."),
    "owl": ("Owls", "Nocturnal birds of prey with silent flight that hunt mice at night."),
    "tax": ("Income tax", "Governments levy income tax on wages; brackets set the marginal rate."),
    "rain": ("Rainforests", "Tropical rainforests hold most species on land and get heavy rainfall."),
    "piano": ("Piano", "A keyboard instrument whose hammers strike strings when keys are pressed."),
    "rust": ("Corrosion", "Iron rusts when oxygen and water oxidise the metal surface."),
    "whale": ("Blue whales", "The blue whale is the largest animal and feeds on krill in the ocean."),
    "mars": ("Mars rovers", "Robotic rovers explore the red planet Mars and drill its rocks."),
    "cheese": ("Cheese making", "Milk curdles with rennet; the curds are pressed and aged into cheese."),
    "wind": ("Wind turbines", "Turbine blades turn a generator to produce electricity from wind."),
    "sleep": ("Sleep", "Sleep cycles through REM and deep stages; adults need about eight hours."),
    "ant": ("Ant colonies", "Ants live in colonies with a queen and communicate using pheromones."),
    "origami": ("Origami", "The Japanese art of folding paper into cranes and other figures."),
    "quake": ("Earthquakes", "Tectonic plates slip along faults and send seismic waves through rock."),
    "tea": ("Green tea", "Tea leaves are steamed and dried; green tea is rich in antioxidants."),
    "bike": ("Bicycles", "Pedals drive a chain that turns the rear wheel of a bicycle."),
    "empty": ("", ""),  # no text at all: BM25 cannot index it, the dense index keeps it
}
N_DOCS = len(TOPICS)
MODES = ("bm25", "bm25_rm3", "dense")  # what the index stage builds
# (query, the doc it is obviously about): phrased differently from the doc for the dense retriever.
OBVIOUS = {
    "how do plants make sugar from sunlight chlorophyll": "photo",
    "lava eruption from a volcano": "volcano",
    "honey making insects in a hive": "bees",
    "largest animal in the ocean eats krill": "whale",
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> BeirDataset:
    root = tmp_path_factory.mktemp("beir")
    docs = [Document(doc_id, title, text) for doc_id, (title, text) in TOPICS.items()]
    queries = {f"q{i}": query for i, query in enumerate(OBVIOUS)}
    qrels = {"test": {f"q{i}": {doc_id: 1} for i, doc_id in enumerate(OBVIOUS.values())}}
    write_beir(root, docs, queries, qrels)
    return BeirDataset(root)


@pytest.fixture(scope="module")
def built(dataset: BeirDataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[IndexConfig, dict]:
    out = tmp_path_factory.mktemp("stage")
    config = IndexConfig(
        dataset_dir=str(dataset.root), out_dir=str(out / "indices"), metrics_file=str(out / "metrics" / "index.json")
    )
    return config, run(config)


@pytest.fixture(scope="module")
def searcher(built: tuple[IndexConfig, dict]) -> Searcher:
    return Searcher(built[0].out_dir)


def test_stage_writes_every_artifact_and_its_metrics(built: tuple[IndexConfig, dict]) -> None:
    config, report = built
    root = Path(config.out_dir)
    assert {p.name for p in root.iterdir()} == {"bm25", "dense", "docs.parquet"}
    assert json.loads((root / "bm25" / "retriever.json").read_text()) == {
        "kind": "bm25", "format_version": FORMAT_VERSION, "params": {"threads": 2}, "n_docs": N_DOCS - 1
    }
    manifest = json.loads((root / "dense" / "retriever.json").read_text())
    params = {"model": "all-MiniLM-L6-v2", "index_type": "Flat", "exact_below": 100_000, "approximate": "HNSW32",
              "batch_size": 64, "max_seq_length": 256, "normalize": True}
    assert manifest == {"kind": "dense", "format_version": FORMAT_VERSION, "params": params,
                        "model": "all-MiniLM-L6-v2", "model_sha256": content_sha256(model_path("all-MiniLM-L6-v2")),
                        "dim": 384, "index_type": "Flat", "n_docs": N_DOCS, "normalize": True, "max_seq_length": 256}
    assert json.loads(Path(config.metrics_file).read_text()) == report
    assert report["n_docs"] == N_DOCS
    for artifact in ("bm25", "dense", "docs.parquet"):
        assert report[artifact]["size_bytes"] > 0 and report[artifact]["build_seconds"] >= 0


def test_searcher_loads_every_family_of_the_root(searcher: Searcher) -> None:
    assert searcher.modes == MODES
    assert set(MODES) <= set(known_modes())


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("query", "expected"), OBVIOUS.items())
def test_obviously_matching_doc_ranks_first(searcher: Searcher, mode: str, query: str, expected: str) -> None:
    hits = searcher.search(query, k=5, mode=mode)
    assert hits[0].doc_id == expected
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(a.score >= b.score for a, b in pairwise(hits))
    title, text = TOPICS[expected]
    assert (hits[0].title, hits[0].text) == (title, text)


def test_rm3_expands_the_query_and_changes_scores(searcher: Searcher) -> None:
    query = "honey bees"
    plain = searcher.search(query, k=10, mode="bm25")
    rm3 = searcher.search(query, k=10, mode="bm25_rm3")
    assert plain[0].doc_id == rm3[0].doc_id == "bees"
    assert [(h.doc_id, h.score) for h in plain] != [(h.doc_id, h.score) for h in rm3]
    # Plain BM25 is unaffected by the RM3 searcher living beside it.
    assert [(h.doc_id, h.score) for h in searcher.search(query, k=10, mode="bm25")] == [
        (h.doc_id, h.score) for h in plain
    ]


def test_query_time_settings_need_no_rebuild(built: tuple[IndexConfig, dict], searcher: Searcher) -> None:
    tuned = Searcher(built[0].out_dir, modes=("bm25",), settings=SearchConfig(bm25=BM25Settings(k1=2.0, b=1.0)))
    query = "ocean tides and the moon"
    default_scores = [h.score for h in searcher.search(query, k=5, mode="bm25")]
    assert [h.score for h in tuned.search(query, k=5, mode="bm25")] != pytest.approx(default_scores)


@pytest.mark.parametrize("mode", MODES)
def test_batch_search_equals_search(searcher: Searcher, dataset: BeirDataset, mode: str) -> None:
    queries = dataset.queries()
    batch = searcher.batch_search(queries, k=8, mode=mode)
    assert list(batch) == list(queries)
    for qid, query in queries.items():
        single = searcher.search(query, k=8, mode=mode)
        assert [h.doc_id for h in batch[qid]] == [h.doc_id for h in single]
        assert [h.score for h in batch[qid]] == pytest.approx([h.score for h in single], abs=1e-5)
    assert searcher.batch_search({}, k=8, mode=mode) == {}


def test_k_beyond_the_corpus_is_clamped_and_empty_docs_stay_in_the_dense_index(searcher: Searcher) -> None:
    bm25_hits = searcher.search("the", k=MAX_K, mode="bm25")  # a stopword: nothing to match
    assert bm25_hits == []
    dense_hits = searcher.search("anything at all", k=MAX_K, mode="dense")
    assert len(dense_hits) == N_DOCS and "empty" in {h.doc_id for h in dense_hits}
    assert len(searcher.search("ocean", k=MAX_K, mode="bm25")) < N_DOCS


@pytest.mark.parametrize(
    ("query", "k", "mode", "message"),
    [
        ("", 10, "bm25", "non-empty"),
        ("   \t", 10, "dense", "non-empty"),
        ("bees", 0, "bm25", "between 1 and"),
        ("bees", MAX_K + 1, "dense", "between 1 and"),
        ("bees", 2.5, "bm25_rm3", "integer"),
        ("bees", 10, "splade", "unknown search mode"),
        ("x" * (MAX_QUERY_CHARS + 1), 10, "bm25", "at most"),
    ],
)
def test_bad_input_gets_a_clear_error(searcher: Searcher, query: str, k: int, mode: str, message: str) -> None:
    with pytest.raises(SearchInputError, match=message):
        searcher.search(query, k=k, mode=mode)


@pytest.mark.parametrize("mode", ["bm25", "bm25_rm3"])
def test_long_query_with_more_terms_than_lucenes_default_clause_cap(searcher: Searcher, mode: str) -> None:
    query = " ".join(f"t{i}" for i in range(1500)) + " honey bees"
    assert len(query) <= MAX_QUERY_CHARS
    assert searcher.search(query, k=np.int64(3), mode=mode)[0].doc_id == "bees"


def test_blank_query_in_a_batch_is_named(searcher: Searcher) -> None:
    with pytest.raises(SearchInputError, match="'q-blank'"):
        searcher.batch_search({"q1": "bees", "q-blank": " "}, mode="bm25")


def test_missing_artifacts_name_the_file_and_the_build_command(
    built: tuple[IndexConfig, dict], tmp_path: Path
) -> None:
    with pytest.raises(MissingIndexError, match=r"index root not found .*dvc repro index"):
        Searcher(tmp_path / "nowhere")
    partial_root = tmp_path / "indices"
    partial_root.mkdir()
    source = Path(built[0].out_dir)
    (partial_root / "docs.parquet").write_bytes((source / "docs.parquet").read_bytes())
    with pytest.raises(MissingIndexError, match=r"retriever index not found at .*retriever.json.*dvc repro index"):
        Searcher(partial_root)
    shutil.copytree(source / "bm25", partial_root / "bm25")
    (partial_root / "dense").mkdir()  # a folder without its manifest is not a (complete) index
    assert Searcher(partial_root).modes == ("bm25", "bm25_rm3")  # by default, whatever the root holds
    with pytest.raises(MissingIndexError, match=r"dense index \(modes dense\) not found at .*dense.*dvc repro index"):
        Searcher(partial_root, modes=("bm25", "dense"))


def test_unknown_mode_lists_the_known_ones(built: tuple[IndexConfig, dict]) -> None:
    with pytest.raises(SearchInputError, match=r"unknown search mode 'splade'; choose one of bm25, bm25_rm3, dense"):
        Searcher(built[0].out_dir, modes=("splade",))


def test_a_mode_that_was_not_loaded_says_so(built: tuple[IndexConfig, dict]) -> None:
    bm25_only = Searcher(built[0].out_dir, modes=("bm25",))
    assert bm25_only.modes == ("bm25", "bm25_rm3")
    with pytest.raises(SearchInputError, match="'dense' was not loaded"):
        bm25_only.search("bees", mode="dense")


def test_concurrent_searches_match_sequential_ones(searcher: Searcher) -> None:
    requests = [(query, mode) for query in [*OBVIOUS, "ocean tides", "paper cranes"] for mode in MODES] * 3

    def ranked(request: tuple[str, str]) -> list[tuple[str, float]]:
        query, mode = request
        return [(h.doc_id, h.score) for h in searcher.search(query, k=10, mode=mode)]

    sequential = [ranked(r) for r in requests]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(ranked, requests))
    assert concurrent == sequential


def test_killed_bm25_build_leaves_no_index(
    dataset: BeirDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = bm25_module.run_index_collection

    def killed_after_lucene_wrote(collection_dir: Path, index_dir: Path, *args: object, **flags: bool) -> object:
        real_run(collection_dir, index_dir, *args, **flags)
        assert any(index_dir.iterdir())  # Lucene really wrote segment files before the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(bm25_module, "run_index_collection", killed_after_lucene_wrote)
    with pytest.raises(KeyboardInterrupt):
        BM25Index.build(dataset, tmp_path / "bm25", BM25BuildConfig())
    assert list(tmp_path.iterdir()) == []


def test_failed_dense_build_leaves_no_index(dataset: BeirDataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot be trained on 29 documents"):
        DenseIndex.build(dataset, tmp_path / "dense", DenseBuildConfig(index_type="IVF256,Flat"))
    assert list(tmp_path.iterdir()) == []


def test_bad_faiss_index_type_is_rejected(dataset: BeirDataset, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="index_factory"):
        DenseIndex.build(dataset, tmp_path / "dense", DenseBuildConfig(index_type="NoSuchIndex"))


def test_hnsw_index_finds_the_same_top_hits(dataset: BeirDataset, searcher: Searcher, tmp_path: Path) -> None:
    DenseIndex.build(dataset, tmp_path / "dense", DenseBuildConfig(index_type="HNSW32"))
    hnsw = DenseIndex(tmp_path / "dense", DenseSettings(search_params="efSearch=64"))
    for query, expected in OBVIOUS.items():
        ranking = hnsw.search(query, k=3)
        assert ranking[0][0] == expected
        assert [doc_id for doc_id, _ in ranking] == [h.doc_id for h in searcher.search(query, k=3, mode="dense")]


def test_duplicate_document_ids_are_rejected(tmp_path: Path) -> None:
    write_beir(tmp_path / "beir", [Document("d1", "a", "x"), Document("d1", "b", "y")], {"q": "x"}, {})
    with pytest.raises(BeirFormatError, match="'d1' appears twice"):
        BM25Index.build(BeirDataset(tmp_path / "beir"), tmp_path / "bm25", BM25BuildConfig())
    assert not (tmp_path / "bm25").exists()


def test_cli_prints_ranked_hits(
    built: tuple[IndexConfig, dict], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["volcanic ash and the ocean", "--mode", "bm25", "-k", "2", "--index-root", built[0].out_dir]
    assert cli_main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["1", "volcano"] and lines[0].endswith("Volcanoes")
    params = tmp_path / "params.yaml"
    params.write_text("search:\n  bm25: {k1: 2.0, b: 1.0}\n")
    assert cli_main([*args, "--params", str(params)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[2] != lines[0].split()[2]  # another score
    with pytest.raises(SystemExit):
        cli_main([*args, "--params", str(tmp_path / "missing.yaml")])
    assert "no such file" in capsys.readouterr().err
    assert cli_main(["  ", "--index-root", built[0].out_dir]) == 2
    assert "non-empty" in capsys.readouterr().err

