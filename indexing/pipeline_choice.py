"""The collection's choice for pipelines whose settings are `auto`: written by the `fusion` stage into the
index root as `pipelines.json`, read by the Searcher when it loads.

A weight that suits one collection need not suit another (SciFact's 0.5 / 0.5 put the embedded
catalog's hybrid below its dense retriever alone), so `auto` fields are measured per collection on
held-out training queries. The file records, per pipeline, the settings it was chosen for
(`requested`: params `search.pipelines.<name>`), what was chosen (`chosen`: a full PipelineSpec) and
the validation scores behind it. A pipeline with no `auto` field never reads it: explicit settings win.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from indexing.errors import CorruptIndexError, MissingIndexError
from indexing.settings import PipelineSpec

log = logging.getLogger(__name__)

CHOICES_FILE = "pipelines.json"
FORMAT = 1
STAGE = "fusion"


def requested(spec: PipelineSpec) -> dict[str, Any]:
    """`spec` as the plain data a choice is keyed on (what params.yaml says)."""
    return json.loads(json.dumps(asdict(spec)))


def read_choices(root: Path) -> dict[str, Any]:
    """The choices of `root/pipelines.json` by pipeline name; empty when the file is absent."""
    path = root / CHOICES_FILE
    if not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CorruptIndexError(path, "pipeline choices", STAGE, str(e)) from e
    pipelines = payload.get("pipelines") if isinstance(payload, dict) else None
    if not isinstance(pipelines, dict) or payload.get("format") != FORMAT:
        raise CorruptIndexError(path, "pipeline choices", STAGE, f"not format {FORMAT}")
    return pipelines


def resolve(name: str, spec: PipelineSpec, root: Path, choices: Mapping[str, Any]) -> PipelineSpec:
    """`spec` itself when nothing in it is `auto`, else the spec the fusion stage chose for it."""
    if not spec.auto_fields:
        return spec
    path = root / CHOICES_FILE
    entry = choices.get(name)
    if entry is None:
        raise MissingIndexError(path, f"the choice of pipeline {name!r} ({', '.join(spec.auto_fields)}: auto)", STAGE)
    if entry.get("requested") != requested(spec):
        # The params changed since the stage ran (other modes, another method): its choice answers another question.
        raise CorruptIndexError(path, f"the choice of pipeline {name!r}", STAGE,
                                f"made for {entry.get('requested')}, params now say {requested(spec)}")
    try:
        return PipelineSpec(**entry["chosen"])
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptIndexError(path, f"the choice of pipeline {name!r}", STAGE, str(e)) from e


def resolve_all(root: Path, specs: Mapping[str, PipelineSpec], required: Collection[str]) -> dict[str, PipelineSpec]:
    """Every pipeline of `specs` resolved. One whose choice is missing or stale raises when it is in
    `required` (asked for by name); otherwise it is left out with a warning, so the retrievers and the
    other pipelines still serve before the fusion stage has run."""
    choices = read_choices(root) if any(spec.auto_fields for spec in specs.values()) else {}
    out = {}
    for name, spec in specs.items():
        try:
            out[name] = resolve(name, spec, root, choices)
        except MissingIndexError as e:
            if name in required:
                raise
            log.warning("pipeline %r not served: %s", name, e)
    return out
