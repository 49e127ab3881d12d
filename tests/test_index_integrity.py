"""Clear errors at the Searcher API on real Lucene and FAISS: invalid Unicode and non-string batch
input, damaged index files, manifests of an older format, and an encoder that is not the one that
built the dense index. Each is a SearchInputError or a MissingIndexError / CorruptIndexError that
names the artifact and the `dvc repro` stage that (re)builds it, never a Java exception."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from clickloop.beir import BeirDataset, Document, write_beir
from clickloop.env import PACKAGED_MODEL, model_path
from indexing import CorruptIndexError, MissingIndexError, Searcher, SearchInputError
from indexing.cli import main as cli_main
from indexing.dense import DenseBuildConfig, DenseIndex
from indexing.docstore import DOCS_FILE, write_doc_store
from indexing.retriever import FORMAT_VERSION, MANIFEST_FILE, write_manifest
from pipeline.index import IndexConfig, run

pytestmark = pytest.mark.jvm  # starts Lucene's JVM in this process: see the `test` target in Makefile

DOCS = {
    "bees": ("Honey bees", "Worker bees collect nectar and pollen and make honey in the hive."),
    "moon": ("The Moon", "Earth's natural satellite causes ocean tides and shows phases each month."),
    "tea": ("Green tea", "Tea leaves are steamed and dried; green tea is rich in antioxidants."),
    "owl": ("Owls", "Nocturnal birds of prey with silent flight that hunt mice at night."),
}
MODES = ("bm25", "bm25_rm3", "dense")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> BeirDataset:
    root = tmp_path_factory.mktemp("beir")
    write_beir(root, [Document(doc_id, *doc) for doc_id, doc in DOCS.items()], {"q": "honey"}, {})
    return BeirDataset(root)


@pytest.fixture(scope="module")
def index_root(dataset: BeirDataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stage")
    run(IndexConfig(dataset_dir=str(dataset.root), out_dir=str(out / "indices"), metrics_file=str(out / "m.json")))
    return out / "indices"


@pytest.fixture(scope="module")
def searcher(index_root: Path) -> Searcher:
    return Searcher(index_root)


@pytest.mark.parametrize("mode", MODES)
def test_invalid_unicode_is_bad_input(searcher: Searcher, mode: str) -> None:
    with pytest.raises(SearchInputError, match=r"query is not valid Unicode: '\\ud800' at character 5"):
        searcher.search("bees \ud800", k=3, mode=mode)
    with pytest.raises(SearchInputError, match=r"query 'q1' is not valid Unicode: '\\udfff' at character 1"):
        searcher.batch_search({"q0": "bees", "q1": "a\udfff"}, k=3, mode=mode)
    with pytest.raises(SearchInputError, match="query id is not valid Unicode"):
        searcher.batch_search({"q\ud800": "bees"}, k=3, mode=mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("queries", "message"),
    [
        ({1: "bees"}, r"query ids must be strings, got 1 \(int\)"),
        ({"q": 5}, r"query must be a non-empty string \(query id 'q'\), got 5"),
        ({"q": b"bees"}, "non-empty string"),
        (["bees"], "queries must be a mapping of query id to query text, got list"),
    ],
)
def test_batch_search_takes_string_ids_and_texts_only(searcher: Searcher, mode: str, queries: object,
                                                       message: str) -> None:
    with pytest.raises(SearchInputError, match=message):
        searcher.batch_search(queries, k=3, mode=mode)  # type: ignore[arg-type]


def test_manifests_record_format_version_params_and_encoder(index_root: Path) -> None:
    bm25 = json.loads((index_root / "bm25" / MANIFEST_FILE).read_text())
    assert bm25["format_version"] == FORMAT_VERSION and bm25["params"] == {"threads": 2}
    dense = json.loads((index_root / "dense" / MANIFEST_FILE).read_text())
    assert dense["format_version"] == FORMAT_VERSION
    assert dense["params"] == {"model": PACKAGED_MODEL, "index_type": "Flat", "exact_below": 100_000,
                               "approximate": "HNSW32", "batch_size": 64, "max_seq_length": 256, "normalize": True}
    assert dense["model"] == PACKAGED_MODEL and len(dense["model_sha256"]) == 64


def garble(path: Path) -> None:
    path.write_bytes(b"garbage!" * 16)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def each(pattern: str, damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """Damage every file of the copied index root matching `pattern` (segment names vary by Lucene codec)."""

    def apply(root: Path) -> None:
        files = sorted(root.glob(pattern))
        assert files, pattern
        for file in files:
            damage(file)

    return apply


DAMAGES = {
    "faiss garbage": ("dense", each("dense/index.faiss", garble), r"FAISS index file is unusable .*index.faiss"),
    "faiss truncated": ("dense", each("dense/index.faiss", truncate), r"FAISS index file is unusable .*read error"),
    "doc ids garbage": ("dense", each("dense/doc_ids.json", garble), r"dense doc ids is unusable .*JSONDecodeError"),
    "doc ids short": ("dense", lambda root: (root / "dense" / "doc_ids.json").write_text('["bees"]'),
                      r"FAISS index file is unusable .*4 vectors of dimension 384; the folder has 1 doc ids"),
    "lucene segment info garbage": ("bm25", each("bm25/*.si", garble), r"BM25 Lucene index is unusable .*Corrupt"),
    "lucene segments_N truncated": ("bm25", each("bm25/segments_*", truncate), r"BM25 Lucene index is unusable"),
    "lucene terms garbage": ("bm25_rm3", each("bm25/*.tim", garble), r"BM25 Lucene index is unusable .*header"),
    "lucene postings truncated": ("bm25", each("bm25/*.doc", truncate), r"BM25 Lucene index is unusable"),
    "docs.parquet garbage": ("bm25", each("docs.parquet", garble), r"document store is unusable .*docs.parquet"),
    "manifest not JSON": ("bm25", lambda root: (root / "bm25" / MANIFEST_FILE).write_text("{kind: bm25"),
                          r"retriever manifest is unusable .*bm25/retriever.json \(JSONDecodeError"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_index_files_say_what_to_rebuild(index_root: Path, tmp_path: Path, damage: str) -> None:
    mode, apply, problem = DAMAGES[damage]
    damaged = tmp_path / "indices"
    shutil.copytree(index_root, damaged)
    apply(damaged)
    with pytest.raises(CorruptIndexError, match=rf"{problem}.*rebuild it with `dvc repro index`"):
        Searcher(damaged, modes=(mode,)).search("honey bees", k=3, mode=mode)


def test_an_index_and_a_document_store_of_different_corpora(index_root: Path, tmp_path: Path) -> None:
    mixed = tmp_path / "indices"
    shutil.copytree(index_root, mixed)
    write_beir(tmp_path / "other", [Document("moon", *DOCS["moon"])], {}, {})
    (mixed / DOCS_FILE).unlink()
    write_doc_store(BeirDataset(tmp_path / "other"), mixed / DOCS_FILE)
    searcher = Searcher(mixed, modes=("bm25",))
    assert searcher.search("ocean tides", k=1)[0].doc_id == "moon"
    stale = r"bm25 index is unusable at .*bm25 \(it returns document 'bees', which docs.parquet does not hold\)"
    with pytest.raises(CorruptIndexError, match=rf"{stale}; rebuild it with `dvc repro index`"):
        searcher.search("honey bees", k=1)


def test_a_dense_index_from_before_encoder_hashes_loads_with_a_warning(
    index_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = tmp_path / "indices"
    shutil.copytree(index_root, old)
    manifest = json.loads((old / "dense" / MANIFEST_FILE).read_text())
    del manifest["format_version"], manifest["model_sha256"], manifest["params"]
    (old / "dense" / MANIFEST_FILE).write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING):
        searcher = Searcher(old, modes=("dense",))
    assert "built before encoder hashes were recorded" in caplog.text and "dvc repro index" in caplog.text
    assert searcher.search("honey", k=1, mode="dense")[0].doc_id == "bees"
    (old / "dense" / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 2}))
    with pytest.raises(CorruptIndexError, match=r"dense index is unusable .*format version 2; .*`dvc repro index`"):
        Searcher(old, modes=("dense",))


def test_cli_prints_one_line_errors(index_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    damaged = tmp_path / "indices"
    shutil.copytree(index_root, damaged)
    each("bm25/*.si", garble)(damaged)
    assert cli_main(["honey", "--index-root", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: BM25 Lucene index is unusable") and err.count("\n") == 1
    assert err.rstrip().endswith("rebuild it with `dvc repro index`")
    assert cli_main(["bees \udc80", "--index-root", str(index_root)]) == 2  # an undecodable byte in argv
    assert capsys.readouterr().err.startswith("error: query is not valid Unicode")
    params = tmp_path / "params.yaml"
    params.write_text("search:\n  bm25: {k1: -1}\n")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["honey", "--index-root", str(index_root), "--params", str(params)])
    assert exit_info.value.code == 2 and "BM25 needs k1 >= 0" in capsys.readouterr().err


def test_sparse_artifacts_name_the_sparse_stage(index_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "indices"
    shutil.copytree(index_root, root)
    (root / "sparse").mkdir()
    write_manifest(root / "sparse", "sparse", {"n_docs": len(DOCS)}, {"impact_scale": 100.0, "threads": 1})
    with pytest.raises(MissingIndexError, match=r"sparse query weights not found .*`dvc repro sparse`"):
        Searcher(root, modes=("sparse",))
    (root / "sparse" / "query_weights.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(CorruptIndexError, match=r"sparse query weights is unusable .*`dvc repro sparse`"):
        Searcher(root, modes=("sparse",))


def linked_copy(source: Path, target: Path) -> Path:
    """A copy of a model folder made of hard links (cheap); replace a file before changing it."""
    shutil.copytree(source, target, copy_function=os.link)
    return target


def same_size_encoder(folder: Path) -> None:
    """CLS pooling instead of mean pooling: the same 384 dimensions, other vectors."""
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    pooling.unlink()
    pooling.write_text(json.dumps({**config, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))


def other_size_encoder(folder: Path) -> None:
    """A Dense layer down to 128 dimensions after the pooling."""
    from sentence_transformers.models import Dense

    (folder / "2_Dense").mkdir()
    Dense(384, 128).save(str(folder / "2_Dense"))
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").unlink()
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))


@pytest.mark.parametrize("change", [same_size_encoder, other_size_encoder])
def test_an_index_fails_to_load_with_another_encoder_than_the_one_that_built_it(
    dataset: BeirDataset, tmp_path: Path, change: Callable[[Path], None]
) -> None:
    encoder = linked_copy(Path(model_path(PACKAGED_MODEL)), tmp_path / "encoder")
    DenseIndex.build(dataset, tmp_path / "dense", DenseBuildConfig(model=str(encoder)))
    assert DenseIndex(tmp_path / "dense").search("honey", k=1)[0][0] == "bees"
    change(encoder)
    with pytest.raises(CorruptIndexError, match=rf"dense index is unusable .*built with encoder '{encoder}' whose "
                                                r"files had sha256 .*`dvc repro index`"):
        DenseIndex(tmp_path / "dense")
    if change is other_size_encoder:  # a manifest without the hash still catches this one, at load
        manifest_file = tmp_path / "dense" / MANIFEST_FILE
        legacy = {k: v for k, v in json.loads(manifest_file.read_text()).items() if k != "model_sha256"}
        manifest_file.write_text(json.dumps(legacy))
        with pytest.raises(CorruptIndexError, match=r"its vectors have dimension 384, its encoder .* now gives 128"):
            DenseIndex(tmp_path / "dense")
    shutil.rmtree(encoder)
    with pytest.raises(CorruptIndexError, match=r"dense index is unusable .*its encoder is gone"):
        DenseIndex(tmp_path / "dense")
