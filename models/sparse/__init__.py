"""The inference-free learned sparse encoder: model (encoder), corpus IDF, the frozen backbone's
states (cache), training queries (data) and its trainer."""
