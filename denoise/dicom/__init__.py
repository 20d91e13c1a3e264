"""DICOM CT in and out: scanning folders, HU conversion, derived-object writing."""

from pydicom import config as _config

# Scanner files often carry slightly non-conformant values (hash-like UIDs,
# long strings). We never rely on pydicom's per-value validation and must copy
# such values unchanged into derived objects, so its warnings are only noise.
_config.settings.reading_validation_mode = _config.IGNORE

from denoise.dicom.pixels import CTImage, PixelDataError, hu_to_stored, load_ct  # noqa: E402  (after the reading mode is set)
from denoise.dicom.scan import CTFile, ScanResult, Series, Skipped, scan  # noqa: E402  (after the reading mode is set)
from denoise.dicom.write import Derivation, derive_dataset, output_path, write_atomic  # noqa: E402  (after the reading mode is set)

__all__ = [
    "CTFile", "CTImage", "Derivation", "PixelDataError", "ScanResult", "Series", "Skipped",
    "derive_dataset", "hu_to_stored", "load_ct", "output_path", "scan", "write_atomic",
]
