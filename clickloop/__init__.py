"""clickloop: a search and recommendation pipeline that learns from implicit feedback.

This package holds the foundations every stage shares: the runtime environment
(`clickloop.env`), atomic writes (`clickloop.atomic`), the BEIR data contract
(`clickloop.beir`), typed configuration (`clickloop.params`), the UBI log contract,
the simulator and the metrics.
"""
