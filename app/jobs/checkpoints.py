"""Which checkpoints are complete. The trainer writes ``checkpoint-N/``; the platform adds a marker file
only once the save has finished, so a kill in the middle of a save never leaves a checkpoint that looks
usable. Shared by the web (listing, resume) and the training child (resume)."""

from __future__ import annotations

from pathlib import Path

COMPLETE_MARKER = "refinery-complete.json"


def complete_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every complete checkpoint, oldest first."""
    found = []
    for path in output_dir.glob("checkpoint-*"):
        if (path / COMPLETE_MARKER).is_file():
            try:
                found.append((int(path.name.split("-", 1)[1]), path))
            except ValueError:
                continue
    return sorted(found)


def latest_complete_checkpoint(output_dir: Path) -> Path | None:
    found = complete_checkpoints(output_dir)
    return found[-1][1] if found else None
