"""The patient's body in a CT slice: one owner for the mask that metrics,
baselines and the quality measures restrict themselves to. Kept apart from
:mod:`denoise.metrics` so that using it does not import scikit-image."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def body_mask(hu: np.ndarray, *, threshold_hu: float = -500.0) -> np.ndarray:
    """Pixels inside the patient: above ``threshold_hu``, largest connected
    component per slice, holes (lungs, airways) filled. Works on (H, W) or
    (frames, H, W)."""
    hu = np.asarray(hu)
    if hu.ndim == 3:
        return np.stack([body_mask(s, threshold_hu=threshold_hu) for s in hu])
    fg = hu > threshold_hu
    labels, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = ndimage.sum_labels(fg, labels, index=np.arange(1, n + 1))
    body = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(body)
