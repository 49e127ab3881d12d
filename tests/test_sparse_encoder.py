"""The inference-free sparse encoder as a sentence-transformers model, without the JVM: the router
saves and loads with plain sentence-transformers, the query side is a weight lookup, and the
training path's cached encoding is the model's own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SparseEncoder
from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding

from models.sparse.cache import document_states, encode_documents, load_states, save_states
from models.sparse.encoder import (
    backbone,
    calibrate_document_bias,
    document_module,
    mlm_head,
    new_sparse_encoder,
    query_module,
    router,
    save_encoder,
)
from models.sparse.idf import corpus_idf

TEXTS = [
    "Chlorophyll lets plants turn sunlight, water and carbon dioxide into glucose.",
    "The blue whale is the largest animal and feeds on krill in the ocean.",
    "Magma rises through the crust and erupts as lava, ash and volcanic gas.",
    "A wild yeast starter ferments the dough before baking a crusty sourdough loaf.",
]


@pytest.fixture(scope="module")
def encoder() -> SparseEncoder:
    model = new_sparse_encoder(np.ones(1), max_seq_length=64, device="cpu")
    idf = corpus_idf(document_module(model).tokenizer, TEXTS)
    model = new_sparse_encoder(idf, max_seq_length=64, device="cpu")
    states = document_states(model, TEXTS)
    calibrate_document_bias(model, [states[i] for i in range(len(states))], initial_doc_terms=40)
    return model


def test_idf_ranks_rare_tokens_above_common_ones(encoder: SparseEncoder) -> None:
    tokenizer = document_module(encoder).tokenizer
    idf = corpus_idf(tokenizer, TEXTS)
    the, whale, unseen = tokenizer.convert_tokens_to_ids(["the", "whale", "piano"])
    assert idf[the] < idf[whale] < idf[unseen]  # "the" in three texts, "whale" in one, "piano" in none


def test_untrained_document_keeps_its_own_words_and_few_terms(encoder: SparseEncoder) -> None:
    vector = encoder.encode_document([TEXTS[1]], convert_to_tensor=True).to_dense()[0]
    tokenizer = document_module(encoder).tokenizer
    top = set(tokenizer.convert_ids_to_tokens(torch.topk(vector, 15).indices.tolist()))
    assert {"whale", "##rill", "ocean"} <= top  # krill is "k" + "##rill" in this vocabulary
    assert 10 <= int((vector > 0).sum()) <= 400  # the calibrated bias, not ~30,000 terms
    assert vector[tokenizer.all_special_ids].abs().sum() == 0


def test_router_saves_and_loads_with_plain_sentence_transformers(encoder: SparseEncoder, tmp_path: Path) -> None:
    with torch.no_grad():  # make the head differ from any fresh initialisation
        mlm_head(encoder).transform.dense.weight.mul_(1.1)
        mlm_head(encoder).decoder.weight[2000:2100] *= 1.5
        query_module(encoder).weight[1000:1010] = 7.0
    save_encoder(encoder, tmp_path / "model")
    loaded = SparseEncoder(str(tmp_path / "model"), device="cpu")
    for encode in ("encode_query", "encode_document"):
        before = getattr(encoder, encode)(TEXTS, convert_to_tensor=True).to_dense()
        after = getattr(loaded, encode)(TEXTS, convert_to_tensor=True).to_dense()
        assert torch.allclose(before, after, atol=1e-5), encode
    decoder = mlm_head(loaded).decoder.weight
    assert torch.equal(decoder, mlm_head(encoder).decoder.weight)
    assert not torch.equal(decoder, backbone(loaded).embeddings.word_embeddings.weight)
    idf = json.loads((tmp_path / "model" / "idf.json").read_text())
    weights = query_module(loaded).weight.detach().numpy()
    token = document_module(loaded).tokenizer.convert_ids_to_tokens(1005)
    assert idf[token] == pytest.approx(7.0) == pytest.approx(float(weights[1005]))


def test_query_encoding_is_a_weight_lookup(encoder: SparseEncoder) -> None:
    query = router(encoder).sub_modules["query"]
    assert len(query) == 1 and isinstance(query[0], SparseStaticEmbedding)
    text = "largest ocean animal"
    vector = encoder.encode_query([text], convert_to_tensor=True).to_dense()[0]
    ids = document_module(encoder).tokenizer(text, add_special_tokens=False)["input_ids"]
    expected = torch.zeros_like(vector)
    expected[ids] = query_module(encoder).weight.detach()[ids]
    assert torch.equal(vector, expected)


def test_cached_encoding_matches_the_model(encoder: SparseEncoder, tmp_path: Path) -> None:
    save_states(document_states(encoder, TEXTS), tmp_path / "states.pt")
    cached = encode_documents(encoder, load_states(tmp_path / "states.pt")).toarray()
    direct = encoder.encode_document(TEXTS, convert_to_tensor=True).to_dense().numpy()
    # The cache holds bfloat16 states: the same terms, weights within bfloat16 rounding.
    for row_cached, row_direct in zip(cached, direct, strict=True):
        cosine = row_cached @ row_direct / np.linalg.norm(row_cached) / np.linalg.norm(row_direct)
        assert cosine > 0.98
        strong = row_direct > 0.5
        assert (row_cached[strong] > 0).all()
