"""ct-denoise: denoise CT DICOM with a convolutional autoencoder written in NumPy.

The Python API (docs/api.md), importable from here::

    import denoise as ctd
    vol = ctd.read("series_folder/")          # or a .nii/.nii.gz: a Volume
    out = ctd.denoise(vol, strength="medium")  # Volume in, Volume out (or a 2-D/3-D HU array)
    ctd.write(out, "out_folder/", like=vol)    # a derived DICOM series, or NIfTI by suffix
    report = ctd.qa(vol, out)                  # the qa measures: report.to_dict()

They are loaded on first use, so ``import denoise`` (and the CLI) stays quick.
"""

from importlib import import_module

__version__ = "0.1.0"

_API = {"read": "denoise.api", "denoise": "denoise.api", "write": "denoise.api", "qa": "denoise.api",
        "QAReport": "denoise.api", "Volume": "denoise.volume"}
__all__ = ["QAReport", "Volume", "__version__", "denoise", "qa", "read", "write"]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'denoise' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
