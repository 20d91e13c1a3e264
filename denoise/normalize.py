"""The one mapping between Hounsfield units and the model's input space.

``x = (HU - low) / (high - low)``: the HU window ``[low, high]`` maps linearly
onto ``[0, 1]``. The map is affine and *not clipped*, so it is exactly
invertible: air and scanner padding below the window (down to -3024 HU) and
bone or metal above it (up to ~3071 HU) pass through as values outside
``[0, 1]`` and come back with their original HU. The window only sets the
scale the network works at; it should cover the tissue contrast that matters
(default -1000..1000 HU: lung to dense bone).

The network itself only ever sees ``clip(x, -margin, 1 + margin)`` (default
margin 0.25: -1500..1500 HU), in training and in use: scanner padding and
saturated bone or metal (up to 3071 HU) are far outside anything a few
training patches show and made an early model produce 100+ HU errors around
them. Its output is put back as a residual (:meth:`HUWindow.apply`):
``y = x + (f(c) - c)`` with ``c`` the clipped input, so pixels inside the
range get the network's output and pixels outside keep their own value plus
the correction estimated at the clip level: no silent clipping of the output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class HUWindow:
    """Affine HU <-> model-space map; ``low`` -> 0 and ``high`` -> 1."""

    low: float = -1000.0
    high: float = 1000.0
    margin: float = 0.25  # model input range is [-margin, 1 + margin]

    def __post_init__(self):
        if not (np.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"HU window margin must be a finite number >= 0, got {self.margin}")
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

    def clip(self, x: np.ndarray) -> np.ndarray:
        """Model space -> what the network sees: clipped to [-margin, 1 + margin]."""
        return np.clip(x, -self.margin, 1.0 + self.margin)

    def apply(self, predict, x: np.ndarray) -> np.ndarray:
        """Run ``predict`` (model space in and out, any shape) on the clipped
        ``x`` and return ``x + (predict(c) - c)`` (see the module docstring)."""
        c = self.clip(x)
        return x + (predict(c) - c)

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
        return cls(low=float(data["low"]), high=float(data["high"]), margin=float(data.get("margin", 0.25)))
