"""Files in the artifact store. Names are server-chosen UUIDs; user strings never become paths."""

from __future__ import annotations

import errno
import hashlib
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.core.config import get_settings
from app.core.errors import InsufficientStorage, NotFound, TooLarge
from app.core.i18n import _

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    sha256: str


def artifact_path(key: str) -> Path:
    """Resolve a stored key inside the artifact root; anything that escapes it is treated as missing."""
    root = get_settings().artifacts_dir.resolve()
    path = (root / key).resolve()
    if not path.is_relative_to(root) or "\x00" in key:
        raise NotFound(_("No such file."))
    return path


def save_stream(source: BinaryIO, *, limit: int) -> StoredFile:
    """Copy an upload into the store in chunks, under a byte limit; the partial file never survives."""
    key = f"uploads/{uuid.uuid4().hex}"
    final = artifact_path(key)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(final.name + ".partial")
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as out:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(_("The file is larger than the upload limit of %(n)s bytes.", n=f"{limit:,}"))
                digest.update(chunk)
                out.write(chunk)
        partial.rename(final)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise InsufficientStorage(_("The server is out of disk space; nothing was stored.")) from exc
        raise
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return StoredFile(key=key, size=size, sha256=digest.hexdigest())


def discard(*stored: StoredFile) -> None:
    """Remove files stored for a request that was then refused: a refused upload leaves nothing behind."""
    for item in stored:
        artifact_path(item.key).unlink(missing_ok=True)


def remove_tree(key: str) -> None:
    shutil.rmtree(artifact_path(key), ignore_errors=True)
