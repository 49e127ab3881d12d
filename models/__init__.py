"""The learning code of clickloop: feedback models (position-bias propensities, unbiased
relevance labels, ordinal and reward models), retrievers and the query policy."""
