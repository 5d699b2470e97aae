"""People's names for the PII step, found by a Hugging Face token-classification model the administrator
installed (REFINERY_NER_MODEL; safetensors weights only). Long texts are read in overlapping windows, so a
name late in a long answer is found too; tokens labelled as a person (PER, B-PER, I-PER, PERSON…) that touch
or are separated by spaces make one name."""

from __future__ import annotations

from pathlib import Path

WINDOW = 256
STRIDE = 32


def person_label(label: str) -> tuple[bool, bool]:
    """(is a person, begins a new entity) for a label such as B-PER, I-PER, PER or S-PERSON."""
    prefix, _, entity = label.rpartition("-")
    return entity.upper() in ("PER", "PERSON"), prefix.upper() in ("B", "S")


class NameFinder:
    def __init__(self, path: Path, batch_size: int = 16) -> None:
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if not self.tokenizer.is_fast:
            raise ValueError("the NER model needs a fast tokenizer (tokenizer.json) to map tokens back to text")
        self.model = AutoModelForTokenClassification.from_pretrained(path, use_safetensors=True).eval()
        self.labels = {int(k): person_label(v) for k, v in self.model.config.id2label.items()}
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        found: list[list[tuple[int, int, bool]]] = [[] for _ in texts]
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            for k, spans in enumerate(self._windows(chunk)):
                found[start + k].extend(spans)
        return [_merge(spans, text) for spans, text in zip(found, texts, strict=True)]

    def _windows(self, texts: list[str]) -> list[list[tuple[int, int, bool]]]:
        torch = self.torch
        batch = self.tokenizer(
            texts,
            truncation=True,
            max_length=WINDOW,
            stride=STRIDE,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=True,
            return_tensors="pt",
        )
        owners = batch.pop("overflow_to_sample_mapping").tolist()
        offsets = batch.pop("offset_mapping").tolist()
        with torch.inference_mode():
            predicted = self.model(**batch).logits.argmax(-1).tolist()
        out: list[list[tuple[int, int, bool]]] = [[] for _ in texts]
        for owner, labels, places, mask in zip(
            owners, predicted, offsets, batch["attention_mask"].tolist(), strict=True
        ):
            for label, (a, b), real in zip(labels, places, mask, strict=True):
                person, begins = self.labels.get(label, (False, False))
                if real and person and b > a:
                    out[owner].append((a, b, begins))
        return out


def _merge(tokens: list[tuple[int, int, bool]], text: str) -> list[tuple[int, int]]:
    """Person tokens into names: one name while the next token touches it or follows after spaces, unless
    the model marks it as beginning another; windows overlap, so the same token may come twice."""
    names: list[list[int]] = []
    for a, b, begins in sorted(set(tokens)):
        if names and a <= names[-1][1]:
            names[-1][1] = max(names[-1][1], b)
        elif names and not begins and not text[names[-1][1] : a].strip():
            names[-1][1] = b
        else:
            names.append([a, b])
    return [(a, b) for a, b in names]
