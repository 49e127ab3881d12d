"""Stage entry points: `python -m pipeline.<stage>` runs one DVC stage from params.yaml."""
