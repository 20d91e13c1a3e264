"""DICOM CT in and out: scanning folders, HU conversion, derived-object writing."""

# pydicom's value validation is switched off only inside our own reads and writes
# (denoise.dicom.reading.lenient), never globally.
from denoise.dicom.identity import Derivation
from denoise.dicom.pixels import CTImage, PixelDataError, hu_to_stored, load_ct
from denoise.dicom.scan import CTFile, ScanResult, Series, Skipped, scan
from denoise.dicom.write import derive_dataset, output_path, write_atomic

__all__ = [
    "CTFile", "CTImage", "Derivation", "PixelDataError", "ScanResult", "Series", "Skipped",
    "derive_dataset", "hu_to_stored", "load_ct", "output_path", "scan", "write_atomic",
]
