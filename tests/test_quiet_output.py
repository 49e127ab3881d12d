"""Runs print what a user must act on, not the libraries' chatter: Lucene's warnings about its runtime
and Anserini's indexing log, Lightning's banners and tips, transformers' report on the MLM head the
sparse encoder sets up itself. Each run is a fresh interpreter, as a stage is, with its output captured."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from clickloop.env import UNSAFE_ACCESS_OPTION, configure_jvm

LUCENE_RUN = """
    from pathlib import Path
    from clickloop.beir import BeirDataset, Document, write_beir
    from indexing.bm25 import BM25BuildConfig, BM25Index
    root = Path({root!r})
    write_beir(root / "beir", [Document("d1", "Bees", "honey bees"), Document("d2", "Moon", "tides")], {{}}, {{}})
    BM25Index.build(BeirDataset(root / "beir"), root / "bm25", BM25BuildConfig())
    print(BM25Index(root / "bm25").search("honey", 1))
    from pyserini.pyclass import autoclass
    autoclass("org.apache.lucene.util.VectorUtil").dotProduct([1.0], [1.0])  # where Lucene looks for a vector API
"""

TRAINING_RUN = """
    import lightning as L
    import numpy as np
    import torch
    from models.sparse.encoder import new_sparse_encoder
    from models.training import quiet_trainer

    new_sparse_encoder(np.ones(30522, dtype=np.float32), max_seq_length=16, device="cpu")

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def training_step(self, batch, _):
            return self.w(batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    batches = torch.utils.data.DataLoader(torch.ones(4, 2), batch_size=2)
    quiet_trainer(1).fit(Tiny(), batches)
    # A Trainer built as models/sparse/trainer.py builds its own.
    L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False).fit(Tiny(), batches)
    print("trained")
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent, timeout=600, check=False)


@pytest.mark.jvm  # its child process starts Lucene's JVM
def test_lucene_indexes_and_searches_without_runtime_warnings(tmp_path: Path) -> None:
    result = run_python(LUCENE_RUN.format(root=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[('d1',")
    for noise in ("sun.misc.Unsafe", "MMapDirectory", "Java 22", "vector", "WARNING"):
        assert noise not in result.stderr, result.stderr
    assert "INFO" not in result.stdout + result.stderr  # Anserini's indexer settings and counters


@pytest.mark.parametrize(("java", "allowed"), [(21, False), (22, False), (23, True), (25, True)])
def test_unsafe_access_is_allowed_only_where_the_jvm_knows_the_option(java: int, allowed: bool) -> None:
    options: list[str] = ["--add-modules=jdk.incubator.vector"]
    jnius_config = SimpleNamespace(options=options, add_options=lambda *opts: options.extend(opts))
    configure_jvm(jnius_config, java)  # type: ignore[arg-type]
    jnius_config.add_options("-Xmx1g", "--add-modules=jdk.incubator.vector")
    assert options == ([UNSAFE_ACCESS_OPTION] if allowed else []) + ["-Xmx1g"]


def test_training_prints_no_banners_tips_or_head_report() -> None:
    result = run_python(TRAINING_RUN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "trained"
    noise = ("GPU available", "TPU available", "Tip:", "litlogger", "stopped: `max_epochs", "LeafSpec",
             "LOAD REPORT", "cls.predictions", "were not sharded")
    for line in result.stderr.splitlines():
        assert not any(text in line for text in noise), line


IDF_RUN = """
    from transformers import AutoTokenizer
    from clickloop.env import PACKAGED_MODEL, model_path
    from models.sparse.idf import corpus_idf
    tokenizer = AutoTokenizer.from_pretrained(str(model_path(PACKAGED_MODEL)))
    idf = corpus_idf(tokenizer, ["bees " * 600, "short"])  # one document past the model's 512 tokens
    print(int(idf[tokenizer.convert_tokens_to_ids("bees")] < idf[tokenizer.convert_tokens_to_ids("moon")]))
"""


def test_document_frequencies_of_long_documents_raise_no_length_warning() -> None:
    result = run_python(IDF_RUN)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"  # "bees" counted, in its long document
    assert "Token indices sequence length" not in result.stderr, result.stderr
