"""A tiny catalog with a vocabulary gap that feedback can teach, shared by the retriever training tests.

Queries name a category by a word no document holds, and the held-out (test) queries pair those
words with colours never trained on, so only what training taught about the word can find them.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import product
from pathlib import Path

from clickloop.beir import BeirDataset, Document, write_beir

COLOURS = ["red", "blue", "green", "black", "white", "yellow", "purple", "orange"]
HELD_OUT_COLOURS = COLOURS[-2:]
MATERIALS = ["steel", "wooden", "plastic", "leather", "glass"]


def write_vocabulary_gap(folder: Path, category_query_words: Mapping[str, str]) -> BeirDataset:
    """The catalog as a BEIR folder: one document per (category, colour, material), one query per
    (category word, colour) judging its category's documents of that colour relevant."""
    docs = [Document(f"{cat}-{colour}-{material}", f"{colour} {material} {cat}", f"A {material} {cat} in {colour}.")
            for cat, colour, material in product(category_query_words, COLOURS, MATERIALS)]
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, dict[str, int]]] = {"train": {}, "test": {}}
    for i, ((cat, word), colour) in enumerate(product(category_query_words.items(), COLOURS)):
        queries[f"q{i}"] = f"{word} {colour}"
        split = "test" if colour in HELD_OUT_COLOURS else "train"
        qrels[split][f"q{i}"] = {f"{cat}-{colour}-{material}": 1 for material in MATERIALS}
    write_beir(folder, docs, queries, qrels)
    return BeirDataset(folder)
