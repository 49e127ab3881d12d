"""The BEIR data contract: corpus.jsonl, queries.jsonl, qrels/<split>.tsv, and TREC runs."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

Qrels = dict[str, dict[str, int]]  # query id -> doc id -> graded relevance
Run = dict[str, dict[str, float]]  # query id -> doc id -> score


@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str

    @property
    def contents(self) -> str:
        """What the retrievers index: title and text, as BEIR baselines do."""
        return f"{self.title}\n{self.text}" if self.title else self.text


class BeirFormatError(ValueError):
    """A BEIR folder or file does not follow the format."""


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR folder on disk. Loads lazily; nothing is cached across calls."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        for name in ("corpus.jsonl", "queries.jsonl"):
            if not (self.root / name).is_file():
                raise BeirFormatError(f"{self.root} is not a BEIR folder: {name} is missing")

    def corpus(self) -> Iterator[Document]:
        return read_corpus(self.root / "corpus.jsonl")

    def queries(self, split: str | None = None) -> dict[str, str]:
        """Query id -> text; with `split`, only the queries judged in that split."""
        queries = {}
        for line_no, record in _read_jsonl(self.root / "queries.jsonl"):
            try:
                queries[str(record["_id"])] = str(record["text"])
            except KeyError as e:
                raise BeirFormatError(f"queries.jsonl line {line_no}: missing {e}") from None
        if split is None:
            return queries
        judged = self.qrels(split)
        return {qid: text for qid, text in queries.items() if qid in judged}

    def splits(self) -> list[str]:
        return sorted(p.stem for p in (self.root / "qrels").glob("*.tsv"))

    def qrels(self, split: str) -> Qrels:
        path = self.root / "qrels" / f"{split}.tsv"
        if not path.is_file():
            raise BeirFormatError(f"{self.root} has no qrels for split {split!r} (looked for {path})")
        return read_qrels(path)


def read_corpus(path: str | Path) -> Iterator[Document]:
    """The documents of a BEIR corpus.jsonl (a folder without queries.jsonl still has one to read)."""
    for line_no, record in _read_jsonl(Path(path)):
        try:
            yield Document(str(record["_id"]), str(record.get("title") or ""), str(record.get("text") or ""))
        except KeyError as e:
            raise BeirFormatError(f"corpus.jsonl line {line_no}: missing {e}") from None


def read_qrels(path: str | Path) -> Qrels:
    qrels: Qrels = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None:
            return qrels
        if header[:1] != ["query-id"]:  # headerless qrels are common too
            reader = iter([header, *reader])
        for row in reader:
            if len(row) < 3:
                raise BeirFormatError(f"{path}: qrels row {row!r} has fewer than 3 columns")
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    return qrels


def write_beir(
    root: str | Path, docs: Iterable[Document], queries: Mapping[str, str], qrels: Mapping[str, Qrels]
) -> None:
    """Write a BEIR folder (not atomic by itself: write it inside `atomic_path`)."""
    root = Path(root)
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n")
    with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    for split, split_qrels in qrels.items():
        with open(root / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid, docs_ in split_qrels.items():
                for doc_id, grade in docs_.items():
                    f.write(f"{qid}\t{doc_id}\t{grade}\n")


def write_trec_run(path: str | Path, run: Run, tag: str) -> None:
    """Write a TREC run file (not atomic by itself)."""
    with open(path, "w", encoding="utf-8") as f:
        for qid, scores in run.items():
            ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                f.write(f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n")


def read_trec_run(path: str | Path) -> Run:
    run: Run = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            qid, _, doc_id, _, score, _ = line.split()
            run.setdefault(qid, {})[doc_id] = float(score)
    return run


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise BeirFormatError(f"{path} line {line_no}: not JSON ({e.msg})") from None
