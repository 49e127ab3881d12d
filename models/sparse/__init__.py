"""The inference-free learned sparse encoder: model (encoder), corpus IDF, the frozen backbone's
states (cache), and its trainer (its training queries: models.feedback_queries)."""
