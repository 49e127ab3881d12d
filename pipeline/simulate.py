"""Stage `simulate`: simulated users on the dataset's train queries, logged as UBI 1.3.

The logging ranker is BM25 over `data/indices/bm25`; each distinct query is ranked once and the
simulator replays those pages. Logs go to `data/simulated_logs/<YYYY-MM-DD>/`, the hidden truth
to `data/simulated_truth/`.

With `simulate.enabled: false` (production) both folders are written holding only a README that
says so: DVC stages cannot be conditional, and ingest reads the empty log root as no logs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clickloop.atomic import atomic_path
from clickloop.beir import BeirDataset
from clickloop.params import load_params, section
from clickloop.simulation import Simulator, SimulatorConfig, write_simulation

log = logging.getLogger(__name__)

DISABLED_README = """Simulation is off (params.yaml `simulate.enabled: false`): this folder is empty on purpose.
The pipeline learns from the UBI logs in feedback_logs/ alone.
"""


def bm25_rankings(index_dir: str | Path, queries: Mapping[str, str], k: int) -> dict[str, Sequence[str]]:
    """The top `k` doc ids BM25 returns for each query."""
    from indexing.bm25 import BM25Index  # starts a JVM: only when a real ranking is needed

    hits = BM25Index(Path(index_dir)).batch_search(dict(queries), k)
    return {qid: [doc_id for doc_id, _ in hits.get(qid, [])] for qid in queries}


def run_simulation(config: SimulatorConfig, seed: int) -> dict[str, Any]:
    """Rank the split's queries with BM25, simulate, write logs and truth; return the counts.
    Disabled, write both folders empty (but for a README) and return zero counts."""
    if not config.enabled:
        return write_disabled(config)
    dataset = BeirDataset(Path(config.dataset_dir))
    if config.split not in dataset.splits():
        raise ValueError(
            f"{config.dataset_dir} has no judgments for split {config.split!r}, and the simulator draws its clicks "
            "from judged relevance: give the source qrels (test judgments alone suffice: the dataset stage then "
            "derives a train split) or set simulate.enabled: false to learn from feedback_logs/ alone"
        )
    queries = dataset.queries(config.split)
    if not queries:
        raise ValueError(f"{config.dataset_dir}: split {config.split!r} has no judged queries to simulate")
    rankings = bm25_rankings(config.bm25_dir, queries, config.top_k)
    empty = sum(1 for ranked in rankings.values() if not ranked)
    if empty:
        log.warning("BM25 returned nothing for %d of %d queries; they are logged with empty pages", empty, len(queries))
    simulator = Simulator(config, queries, rankings, dataset.qrels(config.split), seed)
    return write_simulation(simulator, config.out_dir, config.truth_dir)


def write_disabled(config: SimulatorConfig) -> dict[str, Any]:
    """The outputs of a disabled simulation: both folders, each holding only a README (ingest skips a README
    at a log root)."""
    for folder in (config.out_dir, config.truth_dir):
        with atomic_path(folder) as staged:
            staged.mkdir()
            (staged / "README.md").write_text(DISABLED_README, encoding="utf-8")
    log.info("simulation is off (simulate.enabled: false): %s holds no logs", config.out_dir)
    return {"enabled": False, "totals": {"sessions": 0, "queries": 0, "clicks": 0}, "days": {}}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = run_simulation(section("simulate", SimulatorConfig), int(load_params()["seed"]))
    print(json.dumps(summary["totals"], indent=2))


if __name__ == "__main__":
    main()
