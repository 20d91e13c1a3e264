"""Real CT sample files that ship with the dependencies (pydicom and the
pydicom-data package), for the quick start, tests and evaluation.

Looked up locally only (``download=False``): nothing is fetched at run time.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.data import get_testdata_file

# One entry per distinct CT image (the 693_* files are one head slice stored
# four ways; only the uncompressed copy counts as an evaluation image).
EVALUATION_CT = (
    "CT_small.dcm",  # 128x128 CT, pydicom
    "693_UNCI.dcm",  # 512x512 head CT (CQ500), pydicom-data
    "bad_sequence.dcm",  # 512x512 CT, JPEG lossless, pydicom-data
    "explicit_VR-UN.dcm",  # 512x512 abdominal CT (Pancreas-CT), pydicom-data
    "J2K_pixelrep_mismatch.dcm",  # 512x512 CT, JPEG 2000 lossless, pydicom-data
)
# Other encodings of the same images, used for I/O round-trip tests.
ENCODING_VARIANTS = ("693_J2KR.dcm", "693_J2KI.dcm", "693_UNCR.dcm")


def sample_path(name: str) -> Path | None:
    """Local path of a pydicom/pydicom-data test file, or None if absent."""
    found = get_testdata_file(name, download=False)
    return Path(found) if found else None


def sample_ct_files(names: tuple[str, ...] = EVALUATION_CT) -> list[Path]:
    """Paths of the named sample files that are installed here."""
    return [p for p in (sample_path(n) for n in names) if p is not None]
