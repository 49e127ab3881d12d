"""Query an index root from the shell: `python -m indexing.cli "query" --mode dense -k 5 [--prf]`.

`--mode` takes a retriever mode or a pipeline of the params' `search.pipelines`; with `--why`, each
hit is followed by its score components (which ranking, its own score, the fused value and weight).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from clickloop.params import PARAMS_FILE, section
from indexing.errors import MissingIndexError, SearchInputError
from indexing.retriever import known_modes
from indexing.searcher import Hit, Searcher
from indexing.settings import SearchConfig

SNIPPET_CHARS = 80


def format_hits(hits: Sequence[Hit], snippet_chars: int = SNIPPET_CHARS, why: bool = False) -> str:
    """One line per hit: rank, doc id, score and the start of the title (or of the text when untitled);
    with `why`, an indented line per score component."""
    lines = []
    for hit in hits:
        snippet = " ".join((hit.title or hit.text).split())
        if len(snippet) > snippet_chars:
            snippet = snippet[: snippet_chars - 1] + "…"
        lines.append(f"{hit.rank:>4}  {hit.doc_id:<20}  {hit.score:10.4f}  {snippet}")
        if why:
            lines += [f"{'':6}{c.source:<20}  score {'-' if c.score is None else f'{c.score:.4f}'}  fused "
                      f"{c.fused:.4f}  weight {c.weight:.2f}" for c in hit.components]
    return "\n".join(lines)


def search_settings(params: Path | None) -> SearchConfig:
    """The `search` section of `params`, else of ./params.yaml when there is one, else the defaults."""
    if params is None:
        if not PARAMS_FILE.is_file():
            return SearchConfig()
        params = PARAMS_FILE
    return section("search", SearchConfig, params)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("query")
    parser.add_argument("--mode", default="bm25",
                        help=f"{', '.join(known_modes())}, or a pipeline of search.pipelines (default bm25)")
    parser.add_argument("--prf", action=argparse.BooleanOptionalAction, default=None,
                        help="run the mode's pseudo-relevance feedback (--no-prf: turn a pipeline's off)")
    parser.add_argument("--why", action="store_true", help="print each hit's score components")
    parser.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    parser.add_argument("--index-root", default="data/indices")
    parser.add_argument("--params", type=Path, help="params file whose `search` section sets the query-time settings"
                        " (default: ./params.yaml when present, else the built-in defaults)")
    args = parser.parse_args(argv)
    if args.params is not None and not args.params.is_file():
        parser.error(f"--params {args.params}: no such file")
    try:
        settings = search_settings(args.params)
    except (TypeError, ValueError) as e:  # what params sections raise for unknown keys and bad values
        parser.error(str(e))
    try:
        searcher = Searcher(args.index_root, modes=(args.mode,), settings=settings)
        hits = searcher.search(args.query, k=args.k, mode=args.mode, prf=args.prf)
    except (SearchInputError, MissingIndexError) as e:  # MissingIndexError covers CorruptIndexError
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_hits(hits, why=args.why) if hits else "no hits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
