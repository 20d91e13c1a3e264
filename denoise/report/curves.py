"""Training curves PNG: loss and validation PSNR per epoch, from log rows."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from denoise.atomic import atomic_path


def _series(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) for rows that have a finite number under ``key``."""
    pairs = []
    for k, row in enumerate(rows):
        value, epoch = row.get(key), row.get("epoch", k + 1)
        try:
            value, epoch = float(value), float(epoch)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and math.isfinite(epoch):
            pairs.append((epoch, value))
    arr = np.array(pairs, dtype=np.float64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def training_curves(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Plot train/val loss and val PSNR (SSIM on a second axis) per epoch to a
    PNG, atomically and without text metadata. Missing or None values are
    skipped, so partial logs still plot."""
    fig = Figure(figsize=(9.0, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, whatever pyplot's backend is
    ax_loss, ax_psnr = fig.subplots(1, 2)
    positive = True
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        x, y = _series(rows, key)
        if len(x):
            ax_loss.plot(x, y, marker="o", markersize=3, label=label)
            positive &= bool((y > 0).all())
    if ax_loss.lines:
        if positive:
            ax_loss.set_yscale("log")
        ax_loss.legend(loc="upper right")
    ax_loss.set(title="loss", xlabel="epoch")
    x, y = _series(rows, "val_psnr")
    if len(x):
        ax_psnr.plot(x, y, marker="o", markersize=3, color="C2", label="val PSNR")
    ax_psnr.set(title="validation", xlabel="epoch", ylabel="PSNR (dB)")
    x, y = _series(rows, "val_ssim")
    has_ssim = bool(len(x))
    if has_ssim:
        ax_ssim = ax_psnr.twinx()
        ax_ssim.plot(x, y, marker="s", markersize=3, color="C3", linestyle="--", label="val SSIM")
        ax_ssim.set_ylabel("SSIM")
        handles = ax_psnr.lines + ax_ssim.lines
        ax_psnr.legend(handles, [h.get_label() for h in handles], loc="lower right")
    for ax in (ax_loss, ax_psnr):
        ax.grid(alpha=0.3)
        if not ax.lines and not (ax is ax_psnr and has_ssim):
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
