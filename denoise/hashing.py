"""SHA-256 of files: manifests (data integrity), model ids and the weights/description pairing."""

from __future__ import annotations

import hashlib
import os


def short_hash(text: str, n: int = 12) -> str:
    """A short stable name for a UID: the first ``n`` hex digits of its SHA-256
    (folders, logs and model metadata name series this way, never by the UID)."""
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (hashlib.file_digest: read in chunks; slices and models alike)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
