"""The recommender artifact folder (`data/feedback/recommender/`): its file names, defined once for
the writer (models/recommendation/artifact.py) and the reader (indexing.recommender.Recommender).

- `recommender.json`: user and item ids (row order), the training config and summary;
- `vectors.npz`: user vectors, per-user score offsets, the debiased item popularity (the
  cold-start ranking) and each user's seen items (CSR: `seen_indptr`, `seen_indices`);
- `items.faiss`: the item vectors in an exact inner-product index (always a CPU index on disk);
- `model/`: the trained torch model (`FactorizationModel.load`), for inspection or retraining.

A user's score for an item is sigmoid(<user vector, item vector> + user offset), the model's
probability that the item is relevant (reaches the first feedback level) for that user.
"""

MANIFEST_FILE = "recommender.json"
VECTORS_FILE = "vectors.npz"
INDEX_FILE = "items.faiss"
MODEL_DIR = "model"
