"""The one place that decides which array module (NumPy or CuPy) the model uses.

Layers never hard-code ``numpy`` for arrays that live on the device: they ask
:func:`get_array_module` for the module of their input, so the same code runs
on NumPy arrays (CPU) and CuPy arrays (GPU). Host-side code (DICOM, metrics,
reports) keeps using NumPy and calls :func:`to_numpy` on model outputs.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

DEVICES = ("cpu", "gpu")


class DeviceError(RuntimeError):
    """The requested compute device cannot be used here."""


def _cupy() -> ModuleType:
    try:
        import cupy  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - depends on the machine
        raise DeviceError(
            "--device gpu needs CuPy: install it with `pip install .[gpu]` "
            "(CUDA 12) and make sure an NVIDIA GPU is visible"
        ) from exc
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:  # pragma: no cover
            raise DeviceError("--device gpu: CuPy is installed but no CUDA GPU is visible")
    except cupy.cuda.runtime.CUDARuntimeError as exc:  # pragma: no cover
        raise DeviceError(f"--device gpu: CUDA is not usable here ({exc})") from exc
    return cupy


def array_module(device: str = "cpu") -> ModuleType:
    """Return the array module for ``device`` ('cpu' -> numpy, 'gpu' -> cupy)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    return np if device == "cpu" else _cupy()


def get_array_module(x) -> ModuleType:
    """Return numpy or cupy, whichever owns array ``x``."""
    if type(x).__module__.startswith("cupy"):
        return _cupy()
    return np


def to_numpy(x) -> np.ndarray:
    """Copy a device array to the host (no copy for NumPy arrays)."""
    if type(x).__module__.startswith("cupy"):
        return x.get()
    return np.asarray(x)
