"""Merge the recommender robustness runs into reports/recommender_robustness.{json,md}.

Inputs: one or more Yahoo! R3 run files of bench.recommender_robustness (methods split over
processes) and the semi-synthetic file of bench.recommender_semisynthetic. Every Yahoo! R3 figure
is a mean over (validation split, seed) runs with its spread; a method's margin over naive is
paired: run by run (same split, same seed; a deterministic method's one run per split against
each of naive's runs on that split), the mean difference, its sample std, and its minimum.
"Beats naive beyond the spread" means the mean paired difference exceeds that std.

Run: `.venv/bin/python -m bench.recommender_report --yahoo A.json B.json --semisynthetic S.json`
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from clickloop.atomic import write_json, write_text

METRICS = ("DCG@5", "Recall@5", "MAP@5")
SUBSETS = ("all", "rare")
ORDER = ("naive", "relmf", "relmf_published", "naive_published", "gnolr", "popularity", "item_knn")
LABELS = {
    "naive": "naive (as configured here)",
    "relmf": "Rel-MF as configured here",
    "relmf_published": "Rel-MF as published",
    "naive_published": "naive, published recipe",
    "gnolr": "GNOLR (params default)",
    "popularity": "popularity",
    "item_knn": "item-kNN",
}


def merge_yahoo(paths: list[Path]) -> dict[str, Any]:
    """Every method's selections and runs from all files; for a split (selection) or a (split, seed) run found
    in two files, the first file listed wins."""
    methods: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for path in paths:
        part = json.loads(path.read_text())
        data = part["data"]
        for method, result in part["methods"].items():
            entry = methods.setdefault(method, {"selections": {}, "runs": []})
            for split, selection in result["selections"].items():
                entry["selections"].setdefault(str(split), selection)
            known = {(r["split"], r["seed"]) for r in entry["runs"]}
            entry["runs"] += [r for r in result["runs"] if (r["split"], r["seed"]) not in known]
    return {"data": data, "methods": {m: methods[m] for m in ORDER if m in methods}}


def stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "runs": len(v)}


def paired(method_runs: list[dict[str, Any]], naive_runs: list[dict[str, Any]], subset: str,
           metric: str) -> dict[str, float]:
    by_key = {(r["split"], r["seed"]): r for r in method_runs}
    by_split = {r["split"]: r for r in method_runs}
    diffs = []
    for r in naive_runs:
        own = by_key.get((r["split"], r["seed"])) or by_split.get(r["split"])
        if own is not None:
            diffs.append(own["metrics"][subset][metric] - r["metrics"][subset][metric])
    d = stats(diffs)
    base = float(np.mean([r["metrics"][subset][metric] for r in naive_runs]))
    return {**d, "relative": d["mean"] / base, "beyond_spread": d["mean"] > d["std"] and d["mean"] > 0}


def summarise_yahoo(yahoo: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    naive = yahoo["methods"].get("naive")
    for method, result in yahoo["methods"].items():
        runs = result["runs"]
        entry: dict[str, Any] = {subset: {m: stats([r["metrics"][subset][m] for r in runs]) for m in METRICS}
                                 for subset in SUBSETS}
        if naive is not None and method != "naive":
            entry["vs_naive"] = {subset: {m: paired(runs, naive["runs"], subset, m) for m in METRICS}
                                 for subset in SUBSETS}
        entry["picks"] = {str(split): {"params": s["pick"]["params"], "validation": s["pick"]["mean"],
                                       "se": s["pick"]["se"], "edges": s["edges"], "on_edge": s["on_edge"]}
                          for split, s in result["selections"].items()}
        entry["any_edge"] = any(p["on_edge"] for p in entry["picks"].values())
        out[method] = entry
    return out


def fmt(s: dict[str, float]) -> str:
    return f"{s['mean']:.4f} ± {s['std']:.4f} [{s['min']:.3f}, {s['max']:.3f}]"


def yahoo_markdown(summary: dict[str, Any], data: dict[str, Any]) -> list[str]:
    lines = [f"Yahoo! R3: {data.get('users')} users, {data.get('items')} songs, rare songs {data.get('rare_items')} "
             "(<= 500 training positives). Mean ± sample std [min, max] over the (validation split, seed) runs that "
             "finished (column runs: splits x seeds; popularity and item-kNN are deterministic, one run per split). "
             "No content-aware row: Yahoo! R3 has no song text to build an item tower from.", ""]
    for subset in SUBSETS:
        lines += [f"### {subset} songs", "",
                  "| method | runs | " + " | ".join(METRICS) + " | DCG@5 vs naive (paired) |",
                  "|---" * (len(METRICS) + 3) + "|"]
        for method, entry in summary.items():
            vs = entry.get("vs_naive", {}).get(subset, {}).get("DCG@5")
            gain = "—"
            if vs is not None:
                beyond = " **beyond spread**" if vs["beyond_spread"] else ""
                gain = f"{vs['relative']:+.1%} (diff {vs['mean']:+.4f} ± {vs['std']:.4f}, min {vs['min']:+.4f}){beyond}"
            runs = entry[subset]["DCG@5"]["runs"]
            splits = len(entry["picks"])
            lines.append(f"| {LABELS.get(method, method)} | {runs} ({splits} splits) | "
                         + " | ".join(fmt(entry[subset][m]) for m in METRICS) + f" | {gain} |")
        lines.append("")
    lines += ["### Picked hyper-parameters (IPS-weighted validation DCG@5 ± its standard error; edges)", "",
              "| method | split | pick | validation | edges |", "|---|---|---|---|---|"]
    for method, entry in summary.items():
        for split, pick in entry["picks"].items():
            params = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in pick["params"].items())
            edges = ", ".join(f"{k}: {v}" for k, v in pick["edges"].items()) or "no search"
            lines.append(f"| {LABELS.get(method, method)} | {split} | {params} | {pick['validation']:.4f} ± "
                         f"{pick['se']:.4f} | {edges} |")
    return lines


def semi_markdown(semi: dict[str, Any]) -> list[str]:
    methods = list(semi["sizes"][0]["methods"])
    lines = [f"Embedded default catalog ({semi['items']} items), {semi['users']} logged-in users of the simulator's "
             "pool with 3 interests each; true-preference nDCG@10 (gains 2^grade - 1) over each sampled user's "
             "unclicked items (all) and over the items no log showed (cold; models that cannot score them: a "
             "random order). One seed per log size.", "",
             "| sessions (shown / cold items) | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for size in semi["sizes"]:
        head = f"{size['sessions']} ({size['shown_items']} / {size['cold_items']})"
        for part in ("all", "cold"):
            cells = [f"{size['methods'][m][part]:.4f}" for m in methods]
            lines.append(f"| {head}: {part} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yahoo", type=Path, nargs="+", required=True)
    parser.add_argument("--semisynthetic", type=Path, default=None)
    parser.add_argument("--notes", type=Path, default=None, help="markdown appended as the report's findings")
    parser.add_argument("--out-dir", type=Path, default=Path("reports"))
    args = parser.parse_args()
    yahoo = merge_yahoo(args.yahoo)
    summary = summarise_yahoo(yahoo)
    semi = json.loads(args.semisynthetic.read_text()) if args.semisynthetic else None
    report = {"yahoo_r3": {"data": yahoo["data"], "summary": summary, "methods": yahoo["methods"]},
              "semisynthetic": semi}
    lines = ["# Recommenders: robustness on Yahoo! R3 and on the embedded default", "", "## Yahoo! R3", "",
             *yahoo_markdown(summary, yahoo["data"]), ""]
    if semi:
        lines += ["## Semi-synthetic: the embedded default's users with known preferences", "",
                  *semi_markdown(semi), ""]
    if args.notes:
        lines += [args.notes.read_text().strip(), ""]
    write_json(args.out_dir / "recommender_robustness.json", report)
    write_text(args.out_dir / "recommender_robustness.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
