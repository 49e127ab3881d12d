"""Foundations every stage relies on: typed params, atomic writes, the BEIR contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clickloop.atomic import atomic_path, write_json
from clickloop.beir import BeirDataset, BeirFormatError, Document, read_trec_run, write_beir, write_trec_run
from clickloop.params import from_dict, section


@dataclass
class Inner:
    rate: float = 0.5


@dataclass
class Outer:
    name: str = "x"
    sizes: tuple[int, ...] = (1, 2)
    inner: Inner = field(default_factory=Inner)


def test_params_fill_nested_dataclasses_and_coerce_types():
    config = from_dict(Outer, {"sizes": [3, 4], "inner": {"rate": 1}})
    assert config == Outer(name="x", sizes=(3, 4), inner=Inner(rate=1.0))
    assert isinstance(config.inner.rate, float)


def test_params_reject_unknown_keys_with_their_location():
    with pytest.raises(ValueError, match=r"inner.*unknown key.*'rte'"):
        from_dict(Outer, {"inner": {"rte": 2}})


def test_params_section_reads_yaml(tmp_path: Path):
    params = tmp_path / "params.yaml"
    params.write_text("other: 1\nmine:\n  name: y\n")
    assert section("mine", Outer, params) == Outer(name="y")
    assert section("absent", Outer, params) == Outer()


def test_atomic_path_replaces_a_directory_whole(tmp_path: Path):
    target = tmp_path / "artifact"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]  # no temporaries left


def test_atomic_path_leaves_target_untouched_when_the_writer_fails(tmp_path: Path):
    target = tmp_path / "metrics.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"v": 2')  # half-written
        raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_beir_round_trip_and_split_filtering(tmp_path: Path):
    docs = [Document("d1", "Title one", "text one"), Document("d2", "", "text two")]
    write_beir(tmp_path, docs, {"q1": "first", "q2": "second"}, {"test": {"q2": {"d2": 1}}})
    dataset = BeirDataset(tmp_path)
    assert list(dataset.corpus()) == docs
    assert docs[0].contents == "Title one\ntext one" and docs[1].contents == "text two"
    assert dataset.queries("test") == {"q2": "second"}
    assert dataset.splits() == ["test"]
    with pytest.raises(BeirFormatError, match="split 'train'"):
        dataset.qrels("train")


def test_beir_reports_missing_files_and_bad_lines(tmp_path: Path):
    with pytest.raises(BeirFormatError, match=r"corpus\.jsonl is missing"):
        BeirDataset(tmp_path)
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "ok"}\n{"_id": "d2", "te\n')
    (tmp_path / "queries.jsonl").write_text("")
    with pytest.raises(BeirFormatError, match="line 2"):
        list(BeirDataset(tmp_path).corpus())


def test_trec_run_round_trip_sorts_by_score(tmp_path: Path):
    path = tmp_path / "run.trec"
    write_trec_run(path, {"q": {"a": 0.5, "b": 2.0}}, tag="t")
    assert path.read_text().splitlines()[0].split()[:4] == ["q", "Q0", "b", "1"]
    assert read_trec_run(path) == {"q": {"b": 2.0, "a": 0.5}}
