"""Job: build a data-set manifest from folders of CT (``ct-denoise manifest build``).

The manifest (:mod:`denoise.manifest`) lists the files with their SHA-256
and series and splits them into train/val/test by patient, never by slice.
"""

from __future__ import annotations

import os
from pathlib import Path

from denoise.manifest import build_manifest, save_manifest


def run(folders: list[str | os.PathLike], out_path: str | os.PathLike, *, val: float = 0.15, test: float = 0.15,
        seed: int = 0, val_from: list[str | os.PathLike] | None = None,
        test_from: list[str | os.PathLike] | None = None) -> dict:
    """Scan ``folders``, split them and write the manifest to ``out_path``; returns it.

    Every patient with a file under a ``val_from`` (``test_from``) folder goes
    to validation (testing); ``val`` and ``test`` split the others at random.
    A path that is not a folder is a ValueError; nothing to split is a
    :class:`denoise.manifest.ManifestError`."""
    holdout = {**{f: "val" for f in val_from or []}, **{f: "test" for f in test_from or []}}
    for folder in [*folders, *holdout]:
        if not Path(folder).is_dir():
            raise ValueError(f"{folder}: not a folder")
    manifest = build_manifest(folders, out_path, val=val, test=test, seed=seed, holdout=holdout)
    save_manifest(manifest, out_path)
    return manifest
