"""User -> item recommendation from implicit feedback: the interaction matrix with its exposure
propensities, matrix factorisation with the naive, Rel-MF (clipped IPS) and GNOLR losses, and the
ranking metrics of the unbiased-recommendation protocol; `artifact` trains and writes the folder (`layout`)
that `indexing.Recommender` serves."""

from models.recommendation.factorization import METHODS, FactorizationModel, RecommenderConfig, ScoreVectors
from models.recommendation.interactions import (
    InteractionMatrix,
    debiased_popularity,
    interactions_from_results,
    popularity_propensities,
)
from models.recommendation.metrics import mean_metrics, user_metrics

__all__ = [
    "METHODS",
    "FactorizationModel",
    "InteractionMatrix",
    "RecommenderConfig",
    "ScoreVectors",
    "debiased_popularity",
    "interactions_from_results",
    "mean_metrics",
    "popularity_propensities",
    "user_metrics",
]
