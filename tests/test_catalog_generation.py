"""The embedded dataset: deterministic, sized as configured, valid BEIR, with real vocabulary
mismatch, and a BM25 baseline that is neither hopeless nor perfect; plus the dataset stage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clickloop.beir import BeirDataset, BeirFormatError, Document, write_beir
from clickloop.catalog import Catalog, CatalogConfig, generate_catalog
from clickloop.metrics import evaluate
from pipeline.dataset import DatasetConfig, build_dataset

pytestmark = pytest.mark.jvm  # starts Lucene's JVM in this process: see the `test` target in Makefile

SMALL = CatalogConfig(n_items=600, n_train_queries=60, n_test_queries=30)
STOPWORDS = {"a", "an", "and", "the", "to", "for", "in", "of", "on", "my", "i", "at", "with", "without", "by",
             "what", "do", "need", "best", "thing", "something", "how", "who", "wants", "someone", "gift", "while"}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return generate_catalog(CatalogConfig(), seed=13)


def content_words(text: str) -> set[str]:
    """Lower-cased words without stopwords, with a plural 's' stripped (a crude stemmer)."""
    return {w.removesuffix("s") for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS}


def test_generation_is_deterministic_for_a_seed():
    assert generate_catalog(SMALL, seed=5) == generate_catalog(SMALL, seed=5)
    assert generate_catalog(SMALL, seed=5).documents != generate_catalog(SMALL, seed=6).documents


def test_default_sizes_splits_and_judgments(catalog: Catalog):
    assert len(catalog.documents) == 5000 and len({d.doc_id for d in catalog.documents}) == 5000
    assert len(catalog.queries) == 600 and len(set(catalog.queries.values())) == 600  # distinct texts
    train, test = catalog.qrels["train"], catalog.qrels["test"]
    assert (len(train), len(test)) == (400, 200) and not set(train) & set(test)
    assert set(train) | set(test) == set(catalog.queries)
    for qrels in (train, test):
        for docs in qrels.values():
            assert set(docs.values()) <= {1, 2, 3, 4} and 4 in docs.values()


def test_listings_are_varied(catalog: Catalog):
    titles = {d.title for d in catalog.documents}
    texts = {d.text for d in catalog.documents}
    assert len(titles) > 0.95 * len(catalog.documents) and len(texts) == len(catalog.documents)
    title_shapes = {re.sub(r"[A-Za-z0-9%'.-]+", "w", t) for t in titles}  # word-agnostic layout of a title
    assert len(title_shapes) >= 5


def test_many_test_queries_share_no_content_word_with_their_exact_matches(catalog: Catalog):
    docs = {d.doc_id: content_words(f"{d.title} {d.text}") for d in catalog.documents}
    test = catalog.qrels["test"]
    disjoint = 0
    for qid, judged in test.items():
        exact_words = set().union(*(docs[d] for d, grade in judged.items() if grade == 4))
        disjoint += not content_words(catalog.queries[qid]) & exact_words
    share = disjoint / len(test)
    # Vocabulary mismatch is real, yet most queries keep some lexical hook.
    assert 0.2 <= share <= 0.6, share


@pytest.mark.slow
def test_bm25_is_a_reasonable_but_beatable_baseline(tmp_path: Path):
    from indexing.bm25 import BM25BuildConfig, BM25Index

    config = DatasetConfig(out_dir=str(tmp_path / "dataset"),
                           catalog=CatalogConfig(n_items=1000, n_train_queries=20, n_test_queries=100))
    build_dataset(config, seed=13)
    dataset = BeirDataset(tmp_path / "dataset")
    BM25Index.build(dataset, tmp_path / "bm25", BM25BuildConfig())
    index = BM25Index(tmp_path / "bm25")
    queries = dataset.queries("test")
    run = {qid: dict(hits) for qid, hits in index.batch_search(queries, 10).items()}
    ndcg = evaluate(dataset.qrels("test"), run, ["nDCG@10"])["nDCG@10"]
    assert 0.3 <= ndcg <= 0.65, ndcg


def test_dataset_stage_writes_the_embedded_catalog_as_beir(tmp_path: Path):
    out = tmp_path / "dataset"
    summary = build_dataset(DatasetConfig(out_dir=str(out), catalog=SMALL), seed=3)
    dataset = BeirDataset(out)
    assert dataset.splits() == ["test", "train"]
    assert summary["documents"] == 600 and summary["judged_queries"] == {"train": 60, "test": 30}
    expected = generate_catalog(SMALL, seed=3)
    assert list(dataset.corpus()) == expected.documents
    assert dataset.qrels("test") == expected.qrels["test"]


def small_beir(root: Path, splits: tuple[str, ...] = ("train", "test")) -> None:
    docs = [Document("d1", "Title one", "text one"), Document("d2", "", "text two")]
    write_beir(root, docs, {"q1": "first", "q2": "second"}, {s: {"q1": {"d1": 1}, "q2": {"d2": 2}} for s in splits})


def test_dataset_stage_copies_a_beir_folder(tmp_path: Path):
    small_beir(tmp_path / "src")
    summary = build_dataset(DatasetConfig(source=str(tmp_path / "src"), out_dir=str(tmp_path / "out")), seed=1)
    copy = BeirDataset(tmp_path / "out")
    assert [d.doc_id for d in copy.corpus()] == ["d1", "d2"]
    assert copy.qrels("train") == {"q1": {"d1": 1}, "q2": {"d2": 2}}
    assert summary["judgments"] == {"train": 2, "test": 2}


@pytest.mark.parametrize("problem, message", [
    ("no_folder", "neither 'embedded' nor an existing folder"),
    ("empty_test_split", "qrels/test.tsv holds no judgments"),
    ("judged_without_queries", "queries.jsonl is missing"),
    ("unknown_query", "judges 1 queries missing"),
])
def test_dataset_stage_rejects_a_bad_beir_folder_and_keeps_the_old_output(tmp_path: Path, problem: str, message: str):
    out = tmp_path / "out"
    small_beir(tmp_path / "good")
    build_dataset(DatasetConfig(source=str(tmp_path / "good"), out_dir=str(out)), seed=1)
    source = tmp_path / "src"
    if problem == "empty_test_split":
        small_beir(source)
        (source / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    elif problem == "judged_without_queries":
        small_beir(source)
        (source / "queries.jsonl").unlink()
    elif problem == "unknown_query":
        small_beir(source)
        with open(source / "qrels" / "test.tsv", "a", encoding="utf-8") as f:
            f.write("q9\td1\t1\n")
    with pytest.raises(BeirFormatError, match=message):
        build_dataset(DatasetConfig(source=str(source), out_dir=str(out)), seed=1)
    assert BeirDataset(out).qrels("test") == {"q1": {"d1": 1}, "q2": {"d2": 2}}  # the previous output survives


def test_catalog_config_rejects_unknown_query_styles():
    with pytest.raises(ValueError, match="query_style_weights"):
        CatalogConfig(query_style_weights={"listing": 1.0, "slang": 1.0})
