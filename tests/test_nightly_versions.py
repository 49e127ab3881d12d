"""A version carries its own copy of the encoder its dense index loads (dense_feedback's, retrained every
night in the workspace): it keeps serving when the workspace encoder changes, and the folder can move."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clickloop.beir import Document, write_beir
from clickloop.env import PACKAGED_MODEL, model_path
from indexing import CorruptIndexError, Searcher
from indexing.dense import DenseBuildConfig, DenseIndex
from indexing.docstore import write_doc_store
from indexing.serving import INDICES_DIR, VERSION_MANIFEST, ServingSearcher
from nightly.versions import Challenger, VersionStore

DOCS = [Document("d1", "Insulated bottle", "Keeps coffee hot for 12 hours"),
        Document("d2", "Running shoes", "Light shoes for road running"),
        Document("d3", "Wool jacket", "A warm jacket for winter walks")]


@pytest.mark.slow
def test_a_version_serves_its_own_copy_of_a_local_encoder(tmp_path: Path) -> None:
    from clickloop.beir import BeirDataset

    write_beir(tmp_path / "dataset", DOCS, {}, {})
    dataset = BeirDataset(tmp_path / "dataset")
    encoder = tmp_path / "work" / "dense" / "model"
    shutil.copytree(model_path(PACKAGED_MODEL), encoder)
    indices = tmp_path / "work" / "indices"
    DenseIndex.build(dataset, indices / "dense_feedback", DenseBuildConfig(model=str(encoder)), kind="dense_feedback")
    write_doc_store(dataset, indices / "docs.parquet")

    store = VersionStore(tmp_path / "serving", keep=2)
    version = store.promote(Challenger(indices), {"day": "2026-11-01"})
    manifest = store.manifest(version)
    copied = manifest["encoders"]["dense_feedback"]
    assert copied["served_from"] == "models/dense_feedback" and len(copied["model_sha256"]) == 64
    assert manifest["components"]["models/dense_feedback"] == copied["model_sha256"]

    (encoder / "retrained.txt").write_text("the next night's encoder")  # the workspace moves on
    with pytest.raises(CorruptIndexError, match="another encoder"):
        Searcher(indices, modes=("dense_feedback",))
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "serving", moved)  # a version locates its encoder from its own folders
    with ServingSearcher(moved, modes=("dense_feedback",), poll_seconds=None) as serving:
        assert serving.search("hot coffee", k=1, mode="dense_feedback")[0].doc_id == "d1"
    folder = moved / "versions" / version
    served = json.loads((folder / INDICES_DIR / "dense_feedback" / "retriever.json").read_text())
    assert served["model_path"] == "../../models/dense_feedback" and served["model_sha256"] == copied["model_sha256"]
    assert (folder / VERSION_MANIFEST).is_file()


def test_the_nightly_command_is_installed_as_a_console_script() -> None:
    import subprocess
    import sys
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "clickloop-nightly"]
    assert script.value == "nightly.__main__:main"
    done = subprocess.run([str(Path(sys.executable).parent / "clickloop-nightly"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "rollback" in done.stdout and "status" in done.stdout
