"""Animated GIFs: training progress on one validation slice, and a scroll
through a series, noisy beside denoised. Grey frames, loop forever, no
comment or other metadata blocks."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import imageio.v3 as iio
import numpy as np

from denoise.atomic import atomic_path
from denoise.report.display import posterize, shrink
from denoise.report.panels import panel


@dataclass(frozen=True)
class ProgressFrame:
    """One epoch's picture: the fixed noisy and clean slices (HU) and the
    model's output on them, with that epoch's numbers."""

    noisy: np.ndarray
    denoised: np.ndarray
    clean: np.ndarray | None  # None: no clean reference (adapt); two panels
    epoch: int
    loss: float | None
    psnr: float | None
    ssim: float | None


def _num(value: float | None, fmt: str) -> str:
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return format(float(value), fmt)


def _write_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, durations_ms: list[int]) -> None:
    """Write grey uint8 frames (padded right to one width) as a looping GIF."""
    height = max(f.shape[0] for f in frames)
    width = max(f.shape[1] for f in frames)
    stack = np.zeros((len(frames), height, width), dtype=np.uint8)
    for k, f in enumerate(frames):
        stack[k, height - f.shape[0]:, :f.shape[1]] = f
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, stack, extension=".gif", plugin="pillow", is_batch=True, mode="L",
                    duration=durations_ms if len(frames) > 1 else durations_ms[0], loop=0)


def _frame_ms(fps: float) -> int:
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return max(20, round(1000 / fps))  # GIF timing is in 10 ms units; most viewers floor at 20 ms


def progress_gif(frames: Sequence[ProgressFrame], path: str | os.PathLike, window: tuple[float, float],
                 fps: float = 4.0, hold_last_s: float = 2.0, max_side: int | None = None) -> None:
    """GIF of noisy | denoised at epoch k | clean with that epoch's loss, PSNR
    and SSIM; the last frame is held ``hold_last_s`` seconds. Lossless grey."""
    if not frames:
        raise ValueError("progress_gif needs at least one frame")
    images = []
    for f in frames:
        header = f"epoch {f.epoch}  loss {_num(f.loss, '.3g')}"
        if f.clean is not None:
            header += f"  PSNR {_num(f.psnr, '.2f')} dB  SSIM {_num(f.ssim, '.4f')}"
        tiles = [("noisy", shrink(f.noisy, max_side)),
                 (f"denoised (epoch {f.epoch})", shrink(f.denoised, max_side))]
        if f.clean is not None:
            tiles.append(("clean", shrink(f.clean, max_side)))
        images.append(panel(tiles, window=window, header=header)[..., 0])
    step = _frame_ms(fps)
    durations = [step] * (len(images) - 1) + [max(step, round(1000 * hold_last_s))]
    _write_gif(images, path, durations)


def scroll_gif(noisy_slices: np.ndarray, denoised_slices: np.ndarray, path: str | os.PathLike,
               window: tuple[float, float], fps: float = 8.0, max_side: int | None = 256,
               grey_levels: int = 64, *, spacing_mm=None,
               grey_bars: bool = False, titles: tuple[str, str] = ("noisy", "denoised")) -> None:
    """GIF scrolling through a series, noisy beside denoised with the slice
    number; slices are area-shrunk to ``max_side`` and posterized to
    ``grey_levels`` greys (256 keeps every grey) to keep the file small.
    ``spacing_mm`` (the input slices' pixel spacing, row and column mm: one
    pair for all, or a pair or None per slice) adds a mm scale bar and
    ``grey_bars`` a grey-level bar with the window (:func:`denoise.report.panel`)."""
    noisy, denoised = np.asarray(noisy_slices), np.asarray(denoised_slices)
    if noisy.ndim != 3 or noisy.shape != denoised.shape or len(noisy) == 0:
        raise ValueError(f"scroll_gif needs two (slices, rows, cols) stacks of one shape, "
                         f"got {noisy.shape} and {denoised.shape}")
    n = len(noisy)
    per_slice = spacing_mm is not None and len(spacing_mm) == n and not np.isscalar(spacing_mm[0])
    if per_slice is False and spacing_mm is not None and len(spacing_mm) != 2:
        raise ValueError(f"spacing_mm must be one (row, col) pair or one per slice, got {len(spacing_mm)} items")
    images = []
    for k in range(n):
        tiles = [(titles[0], shrink(noisy[k], max_side)), (titles[1], shrink(denoised[k], max_side))]
        given = spacing_mm[k] if per_slice else spacing_mm
        spacing = None
        if given is not None:  # the shrunk pixels are further apart
            spacing = (float(given[0]) * noisy.shape[1] / tiles[0][1].shape[0],
                       float(given[1]) * noisy.shape[2] / tiles[0][1].shape[1])
        frame = panel(tiles, window=window, header=f"slice {k + 1}/{n}", spacing_mm=spacing,
                      grey_bars=grey_bars)[..., 0]
        images.append(posterize(frame, grey_levels))
    _write_gif(images, path, [_frame_ms(fps)] * n)
