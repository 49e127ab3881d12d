"""The inference-free sparse encoder: a sentence-transformers `SparseEncoder` whose router sends
queries to a static per-token weight table and documents to all-MiniLM-L6-v2 with a masked-LM
head and SPLADE max pooling (log(1 + relu(logits)) maxed over positions).

all-MiniLM-L6-v2 ships no MLM head. Loading it for "fill-mask" gives `BertForMaskedLM` whose
decoder is tied to the word embeddings and whose transform (dense + GELU + LayerNorm) is freshly
random. The decoder starts as a copy of the word embeddings, untied so that training can move it.
We initialise the transform's dense layer to the identity, so a position's logits are
its (normalised) last hidden state against every word embedding: the residual stream keeps each
token close to its own embedding, so a document starts out weighting its own words and their
embedding neighbours (e.g. "sunlight" -> "daylight"). The decoder bias then starts at minus the
`initial_doc_terms`-th largest pooled logit of a sample of documents, so an untrained document
vector keeps about that many terms instead of nearly all 30,522; special tokens get a bias no
logit can pass. The query side starts as the corpus IDF (`models.sparse.idf`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SparseEncoder
from sentence_transformers.base.modules import Router, Transformer
from sentence_transformers.sparse_encoder.modules import SparseStaticEmbedding, SpladePooling

from clickloop.env import PACKAGED_MODEL, model_path, torch_device

QUERY_ROUTE, DOCUMENT_ROUTE = "query", "document"
# Below any logit a 384-dim normalised state can reach against a word embedding.
NEVER = -1.0e4


def new_sparse_encoder(
    idf: np.ndarray, backbone: str = PACKAGED_MODEL, max_seq_length: int = 256, device: str | None = None
) -> SparseEncoder:
    """An untrained inference-free encoder: query weights = `idf` (one per vocabulary token)."""
    with _without_load_report():
        mlm = Transformer(model_path(backbone), transformer_task="fill-mask", max_seq_length=max_seq_length)
    query = SparseStaticEmbedding(tokenizer=mlm.tokenizer, weight=torch.tensor(idf, dtype=torch.float32))
    router = Router.for_query_document([query], [mlm, SpladePooling("max")])
    model = SparseEncoder(modules=[router], similarity_fn_name="dot", device=device or torch_device())
    head = mlm_head(model)
    with torch.no_grad():
        head.transform.dense.weight.copy_(torch.eye(head.transform.dense.in_features))
        head.transform.dense.bias.zero_()
    _untie_decoder(mlm.auto_model, head)
    return model


@contextmanager
def _without_load_report() -> Iterator[None]:
    """Drop transformers' warnings about the MLM head during one load: its load report and its tying check
    find the `cls.predictions` weights missing, which they are by design (all-MiniLM-L6-v2 has no head;
    `new_sparse_encoder` sets it up). Only records that name the head are dropped.

    A filter, not a level: transformers reads this logger's level to decide whether to check its
    tensor-parallel plan, a check that warns on its own about every layer of a model like this one.
    """
    logger = logging.getLogger("transformers.modeling_utils")

    def not_about_the_head(record: logging.LogRecord) -> bool:
        return "cls.predictions" not in record.getMessage()

    logger.addFilter(not_about_the_head)
    try:
        yield
    finally:
        logger.removeFilter(not_about_the_head)


def _untie_decoder(mlm: torch.nn.Module, head: torch.nn.Module) -> None:
    """Give the decoder its own weight and bias, so training can move each token's output vector
    (which documents light up for it) while the frozen backbone's input embeddings stay put. The
    config says so too, or loading the saved folder would tie them again; with ties off, the loader
    fills `decoder.bias` only from its own key, so it must not share the head's `bias` either."""
    mlm.config.tie_word_embeddings = False
    head.decoder.weight = torch.nn.Parameter(head.decoder.weight.detach().clone())
    head.decoder.bias = torch.nn.Parameter(head.decoder.bias.detach().clone())


def calibrate_document_bias(model: SparseEncoder, hidden: Sequence[torch.Tensor], initial_doc_terms: int) -> None:
    """Set the decoder bias so documents with these last hidden states keep ~`initial_doc_terms` terms.

    `hidden`: per document, its (length, dim) last hidden states (`models.sparse.cache`).
    """
    head = mlm_head(model)
    bias = head.decoder.bias
    with torch.no_grad():
        bias.zero_()
        pooled = torch.stack([document_logits(model, h.unsqueeze(0)).amax(dim=1)[0] for h in hidden])
        special = special_token_ids(model)
        pooled[:, special] = NEVER
        k = min(initial_doc_terms, pooled.shape[1] - 1)
        threshold = torch.topk(pooled, k, dim=1).values[:, -1].median()
        bias.fill_(-float(threshold))
        bias[special] = NEVER


def document_logits(model: SparseEncoder, hidden: torch.Tensor, vocab: torch.Tensor | None = None) -> torch.Tensor:
    """MLM logits (batch, length, |vocab|) of last hidden states, over `vocab` token ids (all when None).

    Training scores only the tokens a batch's queries hold plus a sample for the regulariser,
    which is what makes a step cheap on a CPU; the full vocabulary is the encoder's own output.
    """
    head = mlm_head(model)
    # The projection runs in the states' dtype (bfloat16 from the cache): it is nearly all the work.
    states = head.transform(hidden.to(head.transform.dense.weight.dtype)).to(hidden.dtype)
    weight, bias = head.decoder.weight, head.decoder.bias
    if vocab is not None:
        weight, bias = weight[vocab], bias[vocab]
    return torch.nn.functional.linear(states, weight.to(hidden.dtype), bias.to(hidden.dtype))


def splade_pool(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """SPLADE max pooling of (batch, length, vocab) logits with padding beyond each length masked."""
    positions = torch.arange(logits.shape[1], device=logits.device)
    padding = positions.unsqueeze(0) >= lengths.unsqueeze(1)
    # log1p(relu(.)) is monotone, so maxing the logits first gives the same vector with the
    # element-wise work done once per document instead of once per position.
    pooled = logits.masked_fill(padding.unsqueeze(-1), float("-inf")).amax(dim=1)
    return torch.log1p(torch.relu(pooled))


def document_module(model: SparseEncoder) -> Transformer:
    return router(model).sub_modules[DOCUMENT_ROUTE][0]


def query_module(model: SparseEncoder) -> SparseStaticEmbedding:
    return router(model).sub_modules[QUERY_ROUTE][0]


def router(model: SparseEncoder) -> Router:
    return model[0]


def mlm_head(model: SparseEncoder) -> torch.nn.Module:
    return document_module(model).auto_model.cls.predictions


def backbone(model: SparseEncoder) -> torch.nn.Module:
    return document_module(model).auto_model.bert


def special_token_ids(model: SparseEncoder) -> list[int]:
    tokenizer = document_module(model).tokenizer
    unused = [i for token, i in tokenizer.get_vocab().items() if token.startswith("[unused")]
    return sorted({*tokenizer.all_special_ids, *unused})


def query_token_ids(model: SparseEncoder, texts: Sequence[str]) -> list[list[int]]:
    """The distinct vocabulary ids of each query, as the query route sees them (no special tokens)."""
    tokenizer = query_module(model).tokenizer
    encoded = tokenizer(list(texts), add_special_tokens=False, truncation=True, max_length=tokenizer.model_max_length)
    return [sorted(set(ids)) for ids in encoded["input_ids"]]


def save_encoder(model: SparseEncoder, path: str | Path) -> None:
    """Save as a plain sentence-transformers folder, plus `idf.json` (token -> query weight) for
    engines that take an inference-free model with its IDF file (OpenSearch neural sparse)."""
    model.save(str(path))
    query = query_module(model)
    weights = query.weight.detach().cpu().numpy()
    vocab = query.tokenizer.convert_ids_to_tokens(list(range(len(weights))))
    (Path(path) / "idf.json").write_text(json.dumps({t: float(w) for t, w in zip(vocab, weights, strict=True)}))


def load_encoder(path: str | Path, device: str | None = None) -> SparseEncoder:
    return SparseEncoder(str(path), device=device or torch_device())
