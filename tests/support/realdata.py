"""Where the tests find real public checkpoint metadata: ``tests/data/models``.

Every file there is a verbatim copy of a public repository's file; the ``SOURCE.txt`` beside it
names the repository, path, commit and git blob id (``tests/test_data_provenance.py`` holds each
copy to its blob id). Importable from any test module as ``import realdata`` (pytest's
``pythonpath`` setting puts ``tests/support`` on ``sys.path``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODELS = Path(__file__).resolve().parents[1] / "data" / "models"
ADAPTERS = MODELS / "adapters"
MS_SWIFT = MODELS / "ms-swift"


def model_dirs() -> list[Path]:
    """The folders holding a real ``config.json`` + ``model.safetensors.index.json`` pair."""
    return sorted(p for p in MODELS.iterdir() if (p / "model.safetensors.index.json").is_file())


def model_dir(suffix: str) -> Path:
    """The one model folder whose name ends with ``suffix`` (e.g. ``"_qwen3"``)."""
    hits = [d for d in model_dirs() if d.name.endswith(suffix)]
    if len(hits) != 1:
        raise LookupError(f"{len(hits)} folders under {MODELS} end with {suffix!r}")
    return hits[0]


def load(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# Output trees of real training-framework runs (tests/frameworks: how they were made, and
# each tree's VERSIONS.txt: framework, torch and transformers versions, command lines).
FRAMEWORKS = Path(__file__).resolve().parents[1] / "frameworks" / "data"
