"""Does the fusion stage's validation rank the candidates as the test judgments do? A diagnostic, never a
selection: every candidate the stage scores for an `auto` pipeline is scored again on the same held-out
training queries (click labels condensed, click labels with unlabelled documents counted 0, the train
qrels of those queries) and on the test judgments, with the rank correlation of each validation with test.

Runs on a built project (after `dvc repro fusion`), from its root:

    python -m bench.fusion_selection_check                 # the default `hybrid`, every candidate
    python -m bench.fusion_selection_check --no-prf        # the weight grid alone (a few minutes on 2 cores)

Writes reports/fusion_selection_<dataset name>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from clickloop.beir import BeirDataset
from clickloop.params import load_params, section
from indexing import SearchConfig, Searcher
from indexing.settings import PipelineSpec
from models.fusion_selection import candidates, query_ndcg
from pipeline.dense_feedback import DenseFeedbackConfig
from pipeline.fusion import judged_labels, selection_queries
from pipeline.sparse import SparseConfig

VALIDATIONS = ("val_clicks_condensed", "val_clicks_zero", "val_train_qrels")


def score(searcher: Searcher, spec: PipelineSpec, queries: dict[str, tuple[str, dict[str, float]]],
          unlabelled: str) -> float:
    hits = searcher.batch_search({q: text for q, (text, _) in queries.items()}, k=spec.depth, mode=spec)
    return float(np.mean([query_ndcg([h.doc_id for h in hits[q]], labels, unlabelled)
                          for q, (_, labels) in queries.items()]))


def check(pipeline: str, no_prf: bool, index_root: str = "data/indices") -> dict[str, Any]:
    seed = int(load_params()["seed"])
    trainers = [section("sparse", SparseConfig), section("dense_feedback", DenseFeedbackConfig)]
    for trainer in trainers:
        trainer.training.seed = seed
    settings = section("search", SearchConfig)
    spec = settings.pipelines[pipeline]
    if no_prf:
        spec = replace(spec, prf=[], fusion="after")
    held_out = selection_queries(trainers, index_root)
    judged = judged_labels(held_out, trainers[0])
    dataset = BeirDataset(Path(trainers[0].dataset_dir))
    test_queries, qrels = dataset.queries("test"), dataset.qrels("test")
    test = {q: (test_queries[q], {d: float(g) for d, g in qrels[q].items()}) for q in qrels if q in test_queries}
    searcher = Searcher(index_root, modes=spec.modes, settings=replace(settings, pipelines={}))
    rows = []
    for candidate in candidates(spec, searcher.has_prf, searcher.prf_reads_own_ranking_only, 0.1):
        run = candidate.spec(spec)
        rows.append({"weights": list(candidate.weights), "prf": list(candidate.prf), "fusion": candidate.fusion,
                     "val_clicks_condensed": score(searcher, run, held_out, "condensed"),
                     "val_clicks_zero": score(searcher, run, held_out, "zero"),
                     "val_train_qrels": score(searcher, run, judged, "zero"),
                     "test_ndcg@10": score(searcher, run, test, "zero")})
        print(rows[-1], flush=True)
    tests = [r["test_ndcg@10"] for r in rows]
    return {"pipeline": pipeline, "modes": spec.modes, "held_out_queries": len(held_out),
            "held_out_with_train_qrels": len(judged), "test_queries": len(test),
            "spearman_with_test": {v: float(spearmanr([r[v] for r in rows], tests).correlation) for v in VALIDATIONS},
            "rows": rows}


def markdown(report: dict[str, Any], name: str) -> str:
    rows = report["rows"]
    lines = [f"# Fusion selection check: {name}, pipeline `{report['pipeline']}` ({' + '.join(report['modes'])})", "",
             f"Held-out training queries (both trainers' validation split): {report['held_out_queries']} "
             f"({report['held_out_with_train_qrels']} with train qrels); test queries: {report['test_queries']}. "
             "Test scores are a diagnostic of the selection, never an input to it.", "",
             "Spearman correlation of each validation with test nDCG@10 over the candidates: " + ", ".join(
                 f"{k} {v:.2f}" for k, v in report["spearman_with_test"].items()), "",
             "| weights | prf | fusion | " + " | ".join(VALIDATIONS) + " | test nDCG@10 |",
             "|---|---|---|" + "---|" * (len(VALIDATIONS) + 1)]
    for r in sorted(rows, key=lambda r: -r["test_ndcg@10"]):
        lines.append(f"| {r['weights']} | {','.join(r['prf']) or '-'} | {r['fusion']} | " + " | ".join(
            f"{r[v]:.4f}" for v in VALIDATIONS) + f" | {r['test_ndcg@10']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", default="hybrid")
    parser.add_argument("--no-prf", action="store_true", help="the weight grid only, no PRF")
    parser.add_argument("--name", default="embedded", help="the report's suffix")
    args = parser.parse_args()
    report = check(args.pipeline, args.no_prf)
    out = Path("reports") / f"fusion_selection_{args.name}"
    out.parent.mkdir(exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report, args.name))
    print(markdown(report, args.name))


if __name__ == "__main__":
    main()
