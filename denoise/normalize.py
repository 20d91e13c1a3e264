"""The one mapping between Hounsfield units and the model's input space.

``x = (HU - low) / (high - low)``: the HU window ``[low, high]`` maps linearly
onto ``[0, 1]``. The map is affine and *not clipped*, so it is exactly
invertible: air and scanner padding below the window (down to -3024 HU) and
bone or metal above it (up to ~3071 HU) pass through as values outside
``[0, 1]`` and come back with their original HU. The window only sets the
scale the network works at; it should cover the tissue contrast that matters
(default -1000..1000 HU: lung to dense bone).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class HUWindow:
    """Affine HU <-> model-space map; ``low`` -> 0 and ``high`` -> 1."""

    low: float = -1000.0
    high: float = 1000.0

    def __post_init__(self):
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            raise ValueError(f"HU window bounds must be finite, got ({self.low}, {self.high})")
        if self.high <= self.low:
            raise ValueError(f"HU window needs low < high, got ({self.low}, {self.high})")

    @property
    def width(self) -> float:
        return float(self.high - self.low)

    def to_model(self, hu: np.ndarray) -> np.ndarray:
        """HU -> model space (float32, unclipped)."""
        return ((np.asarray(hu, dtype=np.float32) - np.float32(self.low))
                / np.float32(self.width)).astype(np.float32, copy=False)

    def to_hu(self, x: np.ndarray) -> np.ndarray:
        """Model space -> HU (float32); the exact inverse of :meth:`to_model`."""
        return (np.asarray(x, dtype=np.float32) * np.float32(self.width)
                + np.float32(self.low)).astype(np.float32, copy=False)

    def sigma_to_model(self, sigma_hu: float) -> float:
        """A noise level in HU expressed in model-space units."""
        return float(sigma_hu) / self.width

    def to_dict(self) -> dict:
        return {"kind": "affine_window", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> HUWindow:
        kind = data.get("kind", "affine_window")
        if kind != "affine_window":
            raise ValueError(f"unknown normalization kind {kind!r} (expected 'affine_window')")
        return cls(low=float(data["low"]), high=float(data["high"]))
