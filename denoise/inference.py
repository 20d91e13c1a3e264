"""Denoise HU slices with a trained model: whole-slice (the model is fully
convolutional) or tiled with overlap and Gaussian-weighted blending, which
bounds memory on very large images; averaged over flipped/transposed copies
(geometric self-ensemble, as in EDSR); and the strength, the share of the
network's correction applied.

Why the self-ensemble: a denoiser's output is its input minus a noise
estimate, and the network's errors at a given structure depend on the
structure's orientation, while CT noise does not. Averaging the outputs for
the flipped copies cancels part of those errors. Each view is one more pass:
the default is 2 (the slice and its mirror image), 4 the flips, 8 adds the
transposes. On NumPy the views run one per worker thread, each pass whole on
its core. What each size gains and costs: docs/design/inference.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from denoise.backend import get_array_module, to_numpy
from denoise.conditioning import DEFAULT_STRENGTH, STRENGTHS, limit_correction, network_input, parse_strength
from denoise.hashing import sha256_file
from denoise.nn import ConvAutoencoder, ModelFileError, get_num_threads, load_model
from denoise.nn.threads import run_shards
from denoise.normalize import HUWindow

BUNDLED_MODEL = Path(__file__).resolve().parent / "models" / "default_ct"
# Whole-slice inference up to this many pixels (1024 x 1024); larger images are
# tiled automatically so activations stay within a few hundred MB.
MAX_WHOLE_PIXELS = 1024 * 1024
AUTO_TILE = 512
DEFAULT_ENSEMBLE = 2  # 4 views cost 0.83 s per 512x512 slice on a 2-core Xeon: over the 0.6 s target


def _t(a):
    """The transpose of the first two axes (rows, columns; channels stay last)."""
    return np.swapaxes(a, 0, 1)


# (view, its inverse) on (H, W) or (H, W, C) arrays: identity, the three flips, then the four transposed ones.
VIEWS = (
    (lambda a: a, lambda a: a),
    (lambda a: a[:, ::-1], lambda a: a[:, ::-1]),
    (lambda a: a[::-1], lambda a: a[::-1]),
    (lambda a: a[::-1, ::-1], lambda a: a[::-1, ::-1]),
    (_t, _t),
    (lambda a: _t(a)[:, ::-1], lambda a: _t(a[:, ::-1])),
    (lambda a: _t(a)[::-1], lambda a: _t(a[::-1])),
    (lambda a: _t(a)[::-1, ::-1], lambda a: _t(a[::-1, ::-1])),
)
ENSEMBLE_SIZES = (1, 2, 4, 8)
def check_ensemble(views: int) -> int:
    if views not in ENSEMBLE_SIZES:
        raise ValueError(f"--ensemble must be one of {', '.join(map(str, ENSEMBLE_SIZES))}, got {views!r}")
    return views


def self_ensemble(predict, x: np.ndarray, views: int, *, threads: int = 1) -> np.ndarray:
    """Mean of ``inverse(predict(view(x)))`` over the first ``views`` of :data:`VIEWS`
    (``predict``: (H, W) or (H, W, C) array -> (H, W), safe to call from several threads
    when ``threads`` > 1: the views are then dealt round-robin to that many
    worker threads)."""
    check_ensemble(views)

    def partial_sum(i: int, step: int) -> np.ndarray:
        return sum(inverse(predict(np.ascontiguousarray(view(x)))) for view, inverse in VIEWS[i:views:step])

    n = max(1, min(threads, views))
    total = sum(run_shards(lambda i: partial_sum(i, n), n))
    return (total / np.float32(views)).astype(np.float32, copy=False)


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets covering [0, length) with tiles of ``tile``; the last
    tile ends exactly at ``length``."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def blend_weights(tile: int) -> np.ndarray:
    """A separable Gaussian bump (sigma = tile/4), so each pixel is decided
    mostly by tiles where it lies near the centre, away from padded borders."""
    x = np.arange(tile, dtype=np.float64) - (tile - 1) / 2
    g = np.exp(-0.5 * (x / (tile / 4)) ** 2)
    return np.maximum(np.outer(g, g), 1e-3).astype(np.float32)


def tiled(predict, x: np.ndarray, *, tile: int, overlap: float, batch: int = 4) -> np.ndarray:
    """Apply ``predict`` ((N, t, t, C) -> (N, t, t, 1)) over overlapping tiles of
    ``x`` ((H, W) or (H, W, C)) and blend the tiles with Gaussian weights; (H, W)."""
    if tile < 8:
        raise ValueError(f"--tile must be >= 8 pixels, got {tile}")
    if not 0 <= overlap < 1:
        raise ValueError(f"--overlap must be in [0, 1), got {overlap}")
    h, w = x.shape[:2]
    th, tw = min(tile, h), min(tile, w)
    stride_h = max(1, int(round(th * (1 - overlap))))
    stride_w = max(1, int(round(tw * (1 - overlap))))
    corners = [(r, c) for r in tile_starts(h, th, stride_h) for c in tile_starts(w, tw, stride_w)]
    weight = blend_weights(max(th, tw))[:th, :tw]
    acc = np.zeros((h, w), np.float32)
    norm = np.zeros((h, w), np.float32)
    for i in range(0, len(corners), batch):
        group = corners[i:i + batch]
        tiles = np.stack([x[r:r + th, c:c + tw] for r, c in group])
        tiles = tiles[..., None] if tiles.ndim == 3 else tiles
        out = to_numpy(predict(tiles))[..., 0]
        for (r, c), t in zip(group, out, strict=True):
            acc[r:r + th, c:c + tw] += t * weight
            norm[r:r + th, c:c + tw] += weight
    return acc / norm


@dataclass
class Denoiser:
    """A loaded model and its HU normalization: HU in, HU out."""

    model: ConvAutoencoder
    window: HUWindow
    metadata: dict
    model_id: str  # "<name>@<sha256 prefix>" of the weights file
    tile: int | None = None
    overlap: float = 0.25
    ensemble: int = DEFAULT_ENSEMBLE  # geometric self-ensemble views: 1, 2, 4 or 8
    strength: float = STRENGTHS[DEFAULT_STRENGTH]  # share of the correction applied, 0..1
    noise_sd_hu: float | None = None  # noise to remove, given; None: the network judges (blind)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, device: str = "cpu", tile: int | None = None,
             overlap: float = 0.25, ensemble: int = DEFAULT_ENSEMBLE, strength=DEFAULT_STRENGTH,
             noise_sd_hu: float | None = None) -> Denoiser:
        """Load a model file (``None``: the bundled default model). ``strength``
        and ``noise_sd_hu`` as for ``ct-denoise denoise --strength --noise-sd``;
        a noise SD needs a model with a noise-level input (ValueError)."""
        check_ensemble(ensemble)
        strength = parse_strength(strength)
        if noise_sd_hu is not None and not (np.isfinite(noise_sd_hu) and noise_sd_hu >= 0):
            raise ValueError(f"--noise-sd must be a number of HU >= 0, got {noise_sd_hu}")
        base = Path(path) if path is not None else BUNDLED_MODEL
        npz = base if base.suffix == ".npz" else base.with_name(base.name + ".npz")
        if path is None and not npz.is_file():
            raise ModelFileError(f"{npz}: the bundled default model is not installed; pass --model")
        model, metadata, _ = load_model(base, device=device)
        try:
            window = HUWindow.from_dict(metadata["normalization"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{npz}: metadata has no valid 'normalization' ({exc})") from exc
        if tile is not None and tile < 8:
            raise ValueError(f"--tile must be >= 8 pixels, got {tile}")
        if noise_sd_hu is not None and not model.conditioned:
            raise ValueError(f"--noise-sd needs a model with a noise-level input; {npz} has none "
                             "(architecture noise_level_input = false)")
        return cls(model, window, metadata, f"{npz.stem}@{sha256_file(npz)[:16]}", tile, overlap, ensemble,
                   strength, noise_sd_hu)

    def network_input(self, x):
        """Model-space images (N, H, W, 1 + 2n) as the network takes them (with the level maps if conditioned)."""
        if not self.model.conditioned:
            return x
        level = None if self.noise_sd_hu is None else self.window.sigma_to_model(self.noise_sd_hu)
        return network_input(x, level)

    def stack(self, hu: np.ndarray, neighbours=None) -> np.ndarray:
        """The slice and the neighbours the model takes, (H, W, 1 + 2n) HU: ``neighbours`` in
        slice order without the slice itself (k-n .. k-1, k+1 .. k+n); None where one is missing
        (the slice itself stands in for it: 2-D)."""
        n = self.model.neighbours
        if n == 0:
            return hu[..., None]
        given = [None] * (2 * n) if neighbours is None else list(neighbours)
        if len(given) != 2 * n:
            raise ValueError(f"the model takes {n} neighbour slice(s) on each side: give {2 * n}, got {len(given)}")
        for other in given:
            if other is not None and np.shape(other) != hu.shape:
                raise ValueError(f"a neighbour slice is {np.shape(other)}, the slice {hu.shape}: not of one series")
        return np.stack([hu, *(hu if other is None else other for other in given)], axis=-1)

    def __call__(self, hu: np.ndarray, neighbours=None) -> np.ndarray:
        """Denoise one (H, W) slice in HU; returns float32 HU. A 2.5-D model also takes the
        ``neighbours`` of :meth:`stack`; without them it denoises the slice alone."""
        x = self.window.to_model(self.stack(np.asarray(hu, np.float32), neighbours))
        tile = self.tile
        if tile is None and x[..., 0].size > MAX_WHOLE_PIXELS:
            tile = AUTO_TILE
        if tile is not None and (tile < x.shape[0] or tile < x.shape[1]):
            def predict(c):
                return tiled(lambda t: self.model.predict(self.network_input(t)), c, tile=tile, overlap=self.overlap)
        else:
            def predict(c):
                return to_numpy(self.model.predict(self.network_input(c[None])))[0, ..., 0]
        # model.predict caches nothing (cache=False), so the views can share the model.
        on_host = get_array_module(next(iter(self.model.parameters().values()))) is np
        threads = get_num_threads() if on_host else 1
        clipped = self.window.clip(x)  # as HUWindow.apply, with the neighbours as context only
        y = x[..., 0] + (self_ensemble(predict, clipped, self.ensemble, threads=threads) - clipped[..., 0])
        x = x[..., 0]
        if self.noise_sd_hu is not None:  # a stated level: never remove more than that
            y = x - limit_correction(x - y, self.window.sigma_to_model(self.noise_sd_hu))
        if self.strength != 1.0:
            y = x + np.float32(self.strength) * (y - x)
        return self.window.to_hu(y)

    def frames(self, hu: np.ndarray, neighbours=None) -> np.ndarray:
        """Denoise a (frames, H, W) stack frame by frame (the frames of one file, each alone); a
        single frame may have its ``neighbours`` (:meth:`stack`)."""
        if neighbours is not None and len(hu) == 1:
            return self(hu[0], neighbours)[None]
        return np.stack([self(frame) for frame in hu])

    def volume(self, hu: np.ndarray) -> np.ndarray:
        """Denoise a (Z, H, W) volume of evenly spaced slices, each with its neighbours in the
        volume (2.5-D models; at the ends the slice itself stands in for a missing one)."""
        n, z = self.model.neighbours, len(hu)
        around = [k for k in range(-n, n + 1) if k]
        return np.stack([self(hu[k], [hu[k + d] if 0 <= k + d < z else None for d in around]) for k in range(z)])
