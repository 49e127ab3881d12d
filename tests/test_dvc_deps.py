"""dvc.yaml's code deps cover every project module each stage imports, so editing one reruns the stage.

Each `python -m pipeline.X` stage module is imported in a fresh interpreter; the project files
among the loaded modules (sys.modules -> __file__) must each lie under one of the stage's deps
(a file, or a folder prefix). The project modules the stage's own code imports inside functions
(e.g. BM25 in simulate, kept lazy so importing the stage starts no JVM) are imported as well:
they load when the stage runs; so are the modules of the registered retriever families when the
stage imports the Searcher, which loads them by name. Other lazy imports inside library code
(indexing's recommender) are not followed: a stage that does not call them never loads them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PIPELINE_STAGES = {
    name: match.group(1)
    for name, stage in STAGES.items()
    if (match := re.fullmatch(r"python -m (pipeline\.\w+)", stage["cmd"]))
}

# Run in the child: import the stage module and its own project imports, print the loaded project files.
LOADED_PROJECT_FILES = r"""
import ast, importlib, importlib.util, json, sys
from pathlib import Path

repo, venv = Path.cwd().resolve(), Path(sys.prefix).resolve()
packages = {p.name for p in repo.iterdir() if (p / "__init__.py").is_file()}


def load(name):
    if name.split(".")[0] in packages:
        importlib.import_module(name)


stage = importlib.import_module(sys.argv[1])
for node in ast.walk(ast.parse(Path(stage.__file__).read_text())):
    if isinstance(node, ast.Import):
        for alias in node.names:
            load(alias.name)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        load(node.module)
        parent = sys.modules.get(node.module)
        for alias in node.names:  # `from package import submodule` loads the submodule too
            if hasattr(parent, "__path__") and importlib.util.find_spec(f"{node.module}.{alias.name}"):
                load(f"{node.module}.{alias.name}")
            if alias.name == "Searcher":  # it imports each registered family's module by name
                for family in importlib.import_module("indexing.retriever").FAMILIES.values():
                    load(family.loader.partition(":")[0])
files = set()
for module in list(sys.modules.values()):
    path = Path(getattr(module, "__file__", None) or "/")  # a few extension modules name a bare file
    if path.is_absolute() and path.resolve().is_relative_to(repo) and not path.resolve().is_relative_to(venv):
        path = path.resolve()
        files.add(path.relative_to(repo).as_posix())
print(json.dumps({"files": sorted(files), "jvm_started": "jnius" in sys.modules}))
"""


def test_every_stage_is_a_pipeline_module() -> None:
    assert PIPELINE_STAGES and set(PIPELINE_STAGES) == set(STAGES)


@pytest.mark.parametrize("stage", sorted(PIPELINE_STAGES))
def test_stage_deps_cover_every_project_module_it_imports(stage: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOADED_PROJECT_FILES, PIPELINE_STAGES[stage]],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert not loaded["jvm_started"], f"importing {PIPELINE_STAGES[stage]} loads pyserini's JVM bridge"
    deps = [dep.rstrip("/") for dep in STAGES[stage]["deps"]]
    uncovered = [f for f in loaded["files"] if not any(f == dep or f.startswith(f"{dep}/") for dep in deps)]
    assert f"{PIPELINE_STAGES[stage].replace('.', '/')}.py" in loaded["files"]
    assert not uncovered, f"stage {stage} imports {uncovered}, which none of its deps {deps} covers"
