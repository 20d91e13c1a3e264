"""Grey-level helpers shared by the renderers: HU window to 8-bit display
values, area shrinking and posterizing."""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_display(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Map HU linearly so ``window`` low -> 0 and high -> 255, clipped and rounded."""
    low, high = float(window[0]), float(window[1])
    if not low < high:
        raise ValueError(f"display window needs low < high, got ({low:g}, {high:g})")
    scaled = (np.asarray(hu, dtype=np.float64) - low) * (255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def shrink(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Area-average a 2-D image so its longer side is at most ``max_side``;
    averaging (not sampling) keeps noise levels honest in small previews."""
    image = np.asarray(image, dtype=np.float32)
    if max_side is None or max(image.shape) <= max_side:
        return image
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    scale = max_side / max(image.shape)
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.asarray(Image.fromarray(image, mode="F").resize(size, Image.Resampling.BOX))


def posterize(image: np.ndarray, levels: int) -> np.ndarray:
    """Reduce uint8 grey values to ``levels`` evenly spaced ones (smaller GIFs)."""
    if not 2 <= levels <= 256:
        raise ValueError(f"grey levels must be in 2..256, got {levels}")
    if levels == 256:
        return image
    step = 255.0 / (levels - 1)
    return (np.rint(np.rint(image / step) * step)).astype(np.uint8)
