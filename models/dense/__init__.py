"""The dense encoder fine-tuned from the feedback: the encoder (a plain sentence-transformers model,
all-MiniLM-L6-v2 by default) and its trainer (its training queries: models.feedback_queries).

For a benchmark: `train_dense_encoder(new_dense_encoder(), doc_texts, queries, DenseTrainingConfig())`
trains in place on a list of `TrainingQuery` whose candidates are rows of `doc_texts`;
`save_dense_encoder` writes a folder `SentenceTransformer(path)` loads and `indexing.dense` indexes.
"""

from models.dense.encoder import new_dense_encoder, save_dense_encoder
from models.dense.trainer import DenseTrainingConfig, DenseTrainingResult, train_dense_encoder

__all__ = ["DenseTrainingConfig", "DenseTrainingResult", "new_dense_encoder", "save_dense_encoder",
           "train_dense_encoder"]
