"""Data-set manifests: which slice files, their checksums, and a split into
train/val/test made by patient (falling back to study, then series).

A manifest never holds a patient identifier: patients are recorded as a
salted SHA-256 hash (the salt is random per build and not stored unless the
caller supplies one), which is enough to keep a patient on one side of the
split. File paths are stored relative to the *base* folder: the parent of the
folder holding the manifest (for ``data_manifests/X.json`` that is the repo
root, so shared data appears as ``../shared/data/ct/...``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from denoise.atomic import write_json
from denoise.dicom.reading import lenient
from denoise.dicom.scan import CTFile, scan
from denoise.hashing import sha256_file

FORMAT = "ct-denoise-manifest/1"
SPLITS = ("train", "val", "test")


class ManifestError(ValueError):
    """A manifest is malformed, stale (checksums) or leaks patients across splits."""


def _salted(salt: str, value: str) -> str:
    return hashlib.sha256(f"{salt}\0{value}".encode()).hexdigest()[:16]


def _group_key(ct: CTFile, salt: str) -> tuple[str, str]:
    """(kind, salted hash) of the unit the split is made by for this file."""
    with lenient(ct.path):
        ds = pydicom.dcmread(ct.path, stop_before_pixels=True, specific_tags=["PatientID"])
    patient = str(ds.get("PatientID", "") or "").strip()
    if patient:
        return "patient", _salted(salt, patient)
    if ct.study_uid:
        return "study", _salted(salt, ct.study_uid)
    return "series", _salted(salt, ct.series_uid)


def assign_splits(groups: list[str], *, val: float, test: float, seed: int) -> dict[str, str]:
    """Shuffle groups with ``seed`` and cut them into test, val, train by the
    given fractions of the number of groups (at least one group for a
    non-zero fraction while a training group remains)."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(f"--val and --test must be fractions in [0, 1) with sum < 1, got {val}, {test}")
    order = list(groups)
    np.random.default_rng(seed).shuffle(order)
    n = len(order)

    def count(frac):
        return 0 if frac == 0 else max(1, round(frac * n))

    n_test = min(count(test), max(n - 1, 0))
    n_val = min(count(val), max(n - 1 - n_test, 0))
    split = {}
    for k, g in enumerate(order):
        split[g] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return split


def _forced_splits(entries: list[dict], holdout: dict, base: Path) -> dict[str, str]:
    """group -> split for the groups with a file under a ``holdout`` folder
    ({folder: "val" | "test"}); a group held out to both is an error."""
    forced: dict[str, str] = {}
    for folder, side in holdout.items():
        if side not in ("val", "test"):
            raise ValueError(f"a held-out folder goes to val or test, got {side!r} for {folder}")
        prefix = Path(os.path.relpath(Path(folder).resolve(), base)).as_posix().rstrip("/") + "/"
        groups = {e["group"] for e in entries if e["path"].startswith(prefix)}
        if not groups:
            raise ValueError(f"--{side}-from {folder}: no CT image of the scanned folders lies under it")
        for g in groups:
            if forced.setdefault(g, side) != side:
                raise ValueError(f"--{side}-from {folder}: a patient there is also held out for "
                                 f"{forced[g]} by another folder")
    return forced


def build_manifest(folders: list[str | os.PathLike], out_path: str | os.PathLike, *,
                   val: float = 0.15, test: float = 0.15, seed: int = 0,
                   salt: str | None = None, holdout: dict | None = None) -> dict:
    """Scan ``folders`` and return a manifest dict (see module docstring).

    ``holdout`` ({folder: "val" | "test"}) puts every patient with a file
    under such a folder (all of that patient's files, wherever they are) into
    that split; the fractions ``val`` and ``test`` then split the other
    patients."""
    out_path = Path(out_path)
    base = out_path.resolve().parent.parent
    salt = salt or secrets.token_hex(16)
    entries, series_rows, skipped = [], [], 0
    for folder in folders:
        result = scan(folder)
        skipped += len(result.skipped)
        for series in result.series:
            series_rows.append({"uid": series.uid, "description": series.description,
                                "n_files": len(series.files), "n_slices": series.n_slices})
            for index, ct in enumerate(series.files):
                kind, key = _group_key(ct, salt)
                entries.append({
                    "path": Path(os.path.relpath(ct.path, base)).as_posix(),
                    "sha256": sha256_file(ct.path),
                    "series_uid": series.uid,
                    "slice_index": index,
                    "n_frames": ct.n_frames,
                    "group": f"{kind}:{key}",
                })
    if not entries:
        raise ManifestError(f"no CT images found in {', '.join(map(str, folders))}")
    # Order groups deterministically by their first file path, not by their
    # (randomly salted) hash, so the split depends on the seed alone.
    first_path: dict[str, str] = {}
    for e in entries:
        first_path.setdefault(e["group"], e["path"])
    groups = sorted(first_path, key=first_path.get)
    forced = _forced_splits(entries, holdout or {}, base)
    split = assign_splits([g for g in groups if g not in forced], val=val, test=test, seed=seed)
    split.update(forced)
    for e in entries:
        e["split"] = split[e["group"]]
    series_split = {e["series_uid"]: e["split"] for e in entries}
    for row in series_rows:
        row["split"] = series_split[row["uid"]]
    kinds = sorted({g.split(":")[0] for g in groups})
    return {
        "format": FORMAT,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "paths_relative_to": "the parent of the folder holding this manifest",
        "split_by": kinds[0] if len(kinds) == 1 else "+".join(kinds),
        "split_settings": {"val": val, "test": test, "seed": seed,
                           "held_out": {Path(os.path.relpath(Path(f).resolve(), base)).as_posix(): side
                                        for f, side in (holdout or {}).items()}},
        "counts": {s: {"groups": sum(split[g] == s for g in groups),
                       "files": sum(e["split"] == s for e in entries)} for s in SPLITS},
        "skipped_files": skipped,
        "series": series_rows,
        "files": entries,
    }


def save_manifest(manifest: dict, path: str | os.PathLike) -> None:
    write_json(path, manifest)


@dataclass(frozen=True)
class ManifestFile:
    path: Path  # absolute
    series_uid: str
    slice_index: int
    group: str
    split: str


def load_manifest(path: str | os.PathLike, *, verify: bool = True) -> list[ManifestFile]:
    """Read a manifest, check its split keeps every patient on one side and
    (with ``verify``) that every file exists with the recorded SHA-256."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ManifestError(f"{path}: not a ct-denoise manifest (format {FORMAT!r} expected)")
    base = path.resolve().parent.parent
    files, sides = [], {}
    for e in data.get("files", []):
        try:
            item = ManifestFile((base / e["path"]).resolve(), e["series_uid"], int(e["slice_index"]),
                                e["group"], e["split"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{path}: malformed file entry ({exc})") from exc
        if item.split not in SPLITS:
            raise ManifestError(f"{path}: unknown split {item.split!r} for {e['path']}")
        sides.setdefault(item.group, set()).add(item.split)
        if verify:
            if not item.path.is_file():
                raise ManifestError(f"{path}: listed file {e['path']} is missing")
            if sha256_file(item.path) != e.get("sha256"):
                raise ManifestError(f"{path}: checksum mismatch for {e['path']} (file changed)")
        files.append(item)
    leaks = sorted(g for g, s in sides.items() if len(s) > 1)
    if leaks:
        raise ManifestError(f"{path}: {len(leaks)} patient group(s) appear in more than one split "
                            f"({', '.join(sorted(sides[leaks[0]]))}); rebuild the manifest")
    if not files:
        raise ManifestError(f"{path}: manifest lists no files")
    return files


def split_files(files: list[ManifestFile], split: str) -> list[ManifestFile]:
    return [f for f in files if f.split == split]
