"""SHA-256 of files: manifests (data integrity), model ids and the weights/description pairing."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (hashlib.file_digest: read in chunks; slices and models alike)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
