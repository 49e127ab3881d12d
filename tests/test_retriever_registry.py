"""The retriever registry and the Searcher's dispatch by mode, through a toy family registered the
way a new one (e.g. sparse) is: no JVM and no model, so it runs with the DuckDB tests."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from clickloop.beir import BeirDataset, Document, write_beir
from indexing import MissingIndexError, SearchConfig, Searcher, SearchInputError
from indexing.docstore import write_doc_store
from indexing.errors import CorruptIndexError, check_k, check_queries, check_query
from indexing.retriever import (
    FAMILIES,
    FORMAT_VERSION,
    MANIFEST_FILE,
    Family,
    Ranking,
    Retriever,
    family_of,
    known_modes,
    read_manifest,
    register,
    write_manifest,
)

DOCS = {"apple": "Apple pie", "pear": "Pear tart", "plum": "Plum jam"}


class ToyRetriever:
    """Scores each document by how often its id occurs in the query, times `weight`."""

    def __init__(self, doc_ids: list[str], weight: float) -> None:
        self.doc_ids, self.weight = doc_ids, weight
        self.num_docs = len(doc_ids)

    def search(self, query: str, k: int) -> Ranking:
        check_query(query)
        scored = [(doc_id, self.weight * query.split().count(doc_id)) for doc_id in self.doc_ids]
        return sorted((hit for hit in scored if hit[1] > 0), key=lambda hit: -hit[1])[: check_k(k)]

    def batch_search(self, queries: Mapping[str, str], k: int) -> dict[str, Ranking]:
        return {qid: self.search(query, k) for qid, query in check_queries(queries).items()}


def load_toy(folder: Path, settings: SearchConfig) -> dict[str, Retriever]:
    doc_ids = read_manifest(folder)["doc_ids"]
    return {"toy": ToyRetriever(doc_ids, 1.0), "toy_x2": ToyRetriever(doc_ids, 2.0)}


def load_wrong_modes(folder: Path, settings: SearchConfig) -> dict[str, Retriever]:
    return {"toy": ToyRetriever([], 1.0)}


@pytest.fixture
def toy() -> Iterator[Family]:
    family = Family("toy", ("toy", "toy_x2"), f"{__name__}:load_toy", stage="toy")
    register(family)
    yield family
    del FAMILIES[family.kind]


@pytest.fixture
def root(tmp_path: Path, toy: Family) -> Path:
    write_beir(tmp_path / "beir", [Document(doc_id, title, "") for doc_id, title in DOCS.items()], {}, {})
    root = tmp_path / "indices"
    write_doc_store(BeirDataset(tmp_path / "beir"), root / "docs.parquet")
    (root / "toy").mkdir()
    write_manifest(root / "toy", "toy", {"doc_ids": list(DOCS)}, {"weights": [1.0, 2.0]})
    return root


def test_the_registry_lists_every_mode_once_per_family(toy: Family) -> None:
    assert {"bm25", "bm25_rm3", "dense"} <= set(known_modes())
    assert known_modes()[-2:] == ("toy", "toy_x2")  # in registration order
    assert family_of("bm25_rm3").kind == "bm25" and family_of("toy_x2") is toy
    with pytest.raises(SearchInputError, match=r"unknown search mode 'nope'; choose one of bm25, .*toy_x2"):
        family_of("nope")
    with pytest.raises(ValueError, match="registered already"):
        register(Family("toy2", ("dense",), f"{__name__}:load_toy"))
    with pytest.raises(ValueError, match="registered already"):
        register(Family("toy", ("toy3",), f"{__name__}:load_toy"))


def test_searcher_dispatches_by_mode_to_the_registered_family(root: Path) -> None:
    searcher = Searcher(root)
    assert searcher.modes == ("toy", "toy_x2")
    hits = searcher.search("plum pear plum", k=5, mode="toy_x2")
    assert [(h.doc_id, h.score, h.rank, h.title) for h in hits] == [("plum", 4.0, 1, "Plum jam"),
                                                                    ("pear", 2.0, 2, "Pear tart")]
    batch = searcher.batch_search({"q1": "apple", "q2": "pear pear"}, k=1, mode="toy")
    assert {qid: [(h.doc_id, h.score) for h in found] for qid, found in batch.items()} == {
        "q1": [("apple", 1.0)], "q2": [("pear", 2.0)]
    }


def test_missing_family_names_the_stage_that_builds_it(root: Path) -> None:
    with pytest.raises(MissingIndexError, match=r"bm25 index \(modes bm25, bm25_rm3\) not found .*dvc repro index"):
        Searcher(root, modes=("toy", "bm25"))
    (root / "toy" / "retriever.json").unlink()
    with pytest.raises(MissingIndexError, match=r"toy index .* not found at .*toy/retriever.json.*dvc repro toy"):
        Searcher(root, modes=("toy",))


def test_discovery_skips_staging_folders_and_unknown_kinds(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name, kind in ((".toy.old", "toy"), ("future", "toy")):
        (root / name).mkdir()
        (root / name / "retriever.json").write_text(f'{{"kind": "{kind}"}}')
    with pytest.raises(ValueError, match="future/ and toy/ are both 'toy' indices"):
        Searcher(root)
    (root / "future" / "retriever.json").write_text('{"kind": "hologram"}')
    with caplog.at_level(logging.WARNING):
        assert Searcher(root).modes == ("toy", "toy_x2")
    assert "'hologram' is not registered" in caplog.text


def test_a_loader_must_serve_the_modes_its_family_declares(root: Path, toy: Family) -> None:
    del FAMILIES[toy.kind]
    register(Family("toy", toy.modes, f"{__name__}:load_wrong_modes"))
    with pytest.raises(RuntimeError, match=r"loaded modes \['toy'\]; family 'toy' declares \['toy', 'toy_x2'\]"):
        Searcher(root)


def test_only_registered_kinds_get_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'sparkle' is not a registered retriever family"):
        write_manifest(tmp_path, "sparkle", {}, {})


def test_the_manifest_records_its_format_version_and_build_params(root: Path) -> None:
    manifest = read_manifest(root / "toy", "toy")
    assert manifest == {"kind": "toy", "format_version": FORMAT_VERSION, "params": {"weights": [1.0, 2.0]},
                        "doc_ids": list(DOCS)}
    with pytest.raises(CorruptIndexError, match=r"kind 'toy', not 'dense'.*rebuild it with `dvc repro index`"):
        read_manifest(root / "toy", "dense")
    # Written before format versions were recorded: the same layout, still served.
    (root / "toy" / MANIFEST_FILE).write_text(json.dumps({"kind": "toy", "doc_ids": list(DOCS)}))
    assert Searcher(root).search("pear", mode="toy")[0].doc_id == "pear"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", r"retriever manifest is unusable at .*toy/retriever.json \(JSONDecodeError"),
        ("[1, 2]", r"retriever manifest is unusable .*\(not a JSON object\)"),
        ('{"kind": "toy", "format_version": 99}', r"toy index is unusable .*format version 99; this clickloop reads "
                                                  r"versions 0, 1"),
    ],
)
def test_an_unusable_manifest_names_the_stage_that_rebuilds_the_folder(root: Path, text: str, problem: str) -> None:
    (root / "toy" / MANIFEST_FILE).write_text(text)
    with pytest.raises(CorruptIndexError, match=rf"{problem}.*rebuild it with `dvc repro toy`"):
        Searcher(root, modes=("toy",))
