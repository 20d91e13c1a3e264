"""Training and validation data: slices from a manifest, noisy/clean patch
batches with fresh noise every epoch, and a fixed-noise validation set.

Low-dose noise is expensive (a sinogram and a filtered back projection per
realization), so it comes from a *bank*: ``low_dose_bank_slices`` slices each
hold one simulated realization at an I0 drawn log-uniformly from the range,
reconstructed with a filter drawn from ``low_dose_filters`` (sharp to smooth
noise textures); ``low_dose_refresh`` of them are re-simulated (new slice, new
I0, new filter, new Poisson draw) every epoch. Sinograms are cached per slice,
so a refresh costs two FBPs (the noisy one and its noiseless reference with
the same filter).

Kernel texture to keep: with ``textured_fraction`` > 0, that share of the
Gaussian patches takes a bank realization as its *clean target* (a scan with
its own filtered noise) and adds white noise to it, so the network learns to
remove the added noise and keep a kernel's texture, sharp ones included.

For a model with a noise-level input (:mod:`denoise.conditioning`) each
batch also carries every patch's true noise level (the Gaussian sigma, or the
RMS of a low-dose realization's noise), given to ``known_level_fraction`` of
the patches (``known_level_fraction_low_dose`` of the low-dose ones) and
hidden from the others.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from denoise.conditioning import network_input
from denoise.config import NoiseConfig, PatchConfig, ValidationConfig
from denoise.dicom.pixels import load_ct
from denoise.dicom.scan import inspect_file
from denoise.noise import Projection, add_gaussian, low_dose_pair, noisy_line_integrals, project, reconstruct
from denoise.normalize import HUWindow
from denoise.patches import BODY_HU, PatchSource, augment, gaussian_noise, hard_edge_batch


@dataclass
class Slice:
    hu: np.ndarray  # (H, W) float32
    pixel_spacing_mm: float | None
    name: str  # relative label for logs (file name and frame), no patient data


def load_slices(paths: list[Path], *, limit: int = 0, rng: np.random.Generator | None = None) -> list[Slice]:
    """Every frame of every file as a :class:`Slice` (``limit`` > 0 keeps a
    random subset of files, drawn with ``rng``)."""
    paths = list(paths)
    if limit and limit < len(paths):
        rng = rng or np.random.default_rng(0)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), size=limit, replace=False))]
    slices = []
    for path in paths:
        ct = inspect_file(Path(path), PurePosixPath(Path(path).name))
        spacing = float(np.mean(ct.pixel_spacing)) if ct.pixel_spacing else None
        for k, frame in enumerate(load_ct(path).hu):
            slices.append(Slice(frame, spacing, f"{Path(path).name}#{k}"))
    return slices


class LowDoseBank:
    """Simulated low-dose realizations of some training slices (see module doc)."""

    def __init__(self, slices: list[Slice], cfg: NoiseConfig, window: HUWindow, rng: np.random.Generator,
                 *, cache_size: int = 64):
        self.slices = [s for s in slices if s.pixel_spacing_mm is not None]
        if not self.slices:
            raise ValueError("low-dose noise needs PixelSpacing in the training slices")
        self.cfg, self.window, self.rng = cfg, window, rng
        self._projections: OrderedDict[tuple[int, str], tuple[Projection, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        self.entries: list[tuple[int, float, np.ndarray, np.ndarray]] = []  # slice, i0, noisy, clean (HU)
        while len(self.entries) < min(cfg.low_dose_bank_slices, len(self.slices)):
            self.entries.append(self._simulate())

    def _projection(self, k: int, filter_name: str) -> tuple[Projection, np.ndarray]:
        """The slice's sinogram and its noiseless FBP with ``filter_name`` (cached)."""
        key = (k, filter_name)
        if key not in self._projections:
            s = self.slices[k]
            other = next((v for (j, _), v in self._projections.items() if j == k), None)
            proj = other[0] if other is not None else project(s.hu, pixel_spacing_mm=s.pixel_spacing_mm,
                                                              n_views=self.cfg.low_dose_views)
            self._projections[key] = (proj, reconstruct(proj, proj.line_integrals, filter_name=filter_name))
            if len(self._projections) > self._cache_size:
                self._projections.popitem(last=False)
        self._projections.move_to_end(key)
        return self._projections[key]

    def _simulate(self) -> tuple[int, float, np.ndarray, np.ndarray]:
        k = int(self.rng.integers(len(self.slices)))
        lo, hi = np.log(self.cfg.low_dose_i0[0]), np.log(self.cfg.low_dose_i0[1])
        i0 = float(np.exp(self.rng.uniform(lo, hi)))
        filters = self.cfg.low_dose_filters
        filter_name = filters[int(self.rng.integers(len(filters)))] if len(filters) > 1 else filters[0]
        proj, clean = self._projection(k, filter_name)
        noisy = reconstruct(proj, noisy_line_integrals(proj, i0=i0, rng=self.rng), filter_name=filter_name)
        return k, i0, noisy, clean

    def refresh(self) -> None:
        for j in self.rng.choice(len(self.entries), size=min(self.cfg.low_dose_refresh, len(self.entries)),
                                 replace=False):
            self.entries[int(j)] = self._simulate()

    def sources(self, patch: PatchConfig, *, min_i0: float = 0.0) -> list[PatchSource]:
        """Patch sources of the realizations (those of I0 >= ``min_i0``): noisy as inputs, clean as targets."""
        by_shape: dict[tuple, list] = {}
        for _, i0, noisy, clean in self.entries:
            if i0 >= min_i0:
                by_shape.setdefault(clean.shape, []).append((noisy, clean))
        out = []
        for pairs in by_shape.values():
            clean = np.stack([c for _, c in pairs])
            noisy = np.stack([n for n, _ in pairs])
            out.append(PatchSource.build(self.window.to_model(clean), clean > BODY_HU, size=patch.size,
                                         min_body_fraction=patch.min_body_fraction,
                                         inputs=self.window.to_model(noisy)))
        return out


class TrainingPatches:
    """Endless noisy/clean patch batches from training slices."""

    def __init__(self, slices: list[Slice], *, window: HUWindow, noise: NoiseConfig, patches: PatchConfig,
                 rng: np.random.Generator, conditioned: bool = False):
        if not slices:
            raise ValueError("no training slices")
        self.window, self.noise, self.patches, self.rng = window, noise, patches, rng
        self.conditioned = conditioned
        by_shape: dict[tuple, list[np.ndarray]] = {}
        for s in slices:
            by_shape.setdefault(s.hu.shape, []).append(s.hu)
        self.clean_sources = []
        for stack in by_shape.values():
            hu = np.stack(stack)
            self.clean_sources.append(PatchSource.build(window.to_model(hu), hu > BODY_HU, size=patches.size,
                                                        min_body_fraction=patches.min_body_fraction))
        self.sigma_model = tuple(window.sigma_to_model(s) for s in noise.gaussian_sigma_hu)
        self.hard_edge_model = tuple(float(window.to_model(v)) for v in patches.hard_edge_hu)
        self.bank = (LowDoseBank(slices, noise, window, rng) if noise.low_dose_fraction > 0 else None)
        self._bank_sources()

    def _bank_sources(self) -> None:
        self.low_dose_sources = self.bank.sources(self.patches) if self.bank else []
        self.textured_sources = (self.bank.sources(self.patches, min_i0=self.noise.textured_i0_min)
                                 if self.bank and self.noise.textured_fraction > 0 else [])

    def new_epoch(self) -> None:
        """Refresh part of the low-dose bank (Gaussian noise is new every batch)."""
        if self.bank is not None:
            self.bank.refresh()
            self._bank_sources()

    def _draw(self, sources: list[PatchSource], n: int):
        sizes = np.array([len(s) for s in sources], dtype=np.float64)
        counts = self.rng.multinomial(n, sizes / sizes.sum())
        parts = [s.sample(int(c), self.rng) for s, c in zip(sources, counts, strict=True) if c]
        clean = np.concatenate([p[0] for p in parts])
        noisy = np.concatenate([p[1] for p in parts]) if parts[0][1] is not None else None
        return clean, noisy

    def batch(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(input, clean) float32 in model space: clean (n, p, p, 1); input the
        noisy patches (n, p, p, 1), or with ``conditioned`` (n, p, p, 3) with
        their noise level maps (see :mod:`denoise.conditioning`)."""
        n = n or self.patches.batch_size
        n_ld = int(self.rng.binomial(n, self.noise.low_dose_fraction)) if self.low_dose_sources else 0
        n_tex = (int(self.rng.binomial(n - n_ld, self.noise.textured_fraction))
                 if self.textured_sources else 0)
        parts = []  # (noisy, level, clean) in model units
        if n - n_ld - n_tex:
            clean, _ = self._draw(self.clean_sources, n - n_ld - n_tex)
            if self.patches.hard_edge_fraction > 0:
                clean = hard_edge_batch(clean, self.patches.hard_edge_fraction, self.hard_edge_model, self.rng)
            parts.append((*self._gaussian(clean), clean))
        if n_tex:  # a realization with its own texture is the target; white noise on top
            _, textured = self._draw(self.textured_sources, n_tex)
            parts.append((*self._gaussian(textured), textured))
        if n_ld:
            ld_clean, ld_noisy = self._draw(self.low_dose_sources, n_ld)
            parts.append((ld_noisy, np.sqrt(np.mean((ld_noisy - ld_clean) ** 2, axis=(1, 2))), ld_clean))
        noisy = np.concatenate([p[0] for p in parts])
        level = np.concatenate([p[1] for p in parts]).astype(np.float32)
        clean = np.concatenate([p[2] for p in parts])
        share = np.full(n, self.noise.known_level_fraction)
        share[n - n_ld:] = self.noise.known_level_fraction_low_dose  # the low-dose patches come last
        if self.patches.augment:
            noisy, clean = augment([noisy, clean], self.rng)
        # What the network sees in use (HUWindow.apply): both clipped to the input range.
        noisy, clean = self.window.clip(noisy), self.window.clip(clean)
        noisy = np.ascontiguousarray(noisy[..., None], dtype=np.float32)
        if self.conditioned:
            noisy = network_input(noisy, level, known=self.rng.random(n) < share)
        return noisy, np.ascontiguousarray(clean[..., None], dtype=np.float32)

    def _gaussian(self, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return gaussian_noise(clean, self.sigma_model, self.rng, self.noise.gaussian_log_fraction)


@dataclass
class ValidationSet:
    """Full slices with fixed noise: the same inputs every epoch."""

    noisy: list[np.ndarray]  # HU
    clean: list[np.ndarray]  # HU
    labels: list[str]


def make_validation_set(slices: list[Slice], cfg: ValidationConfig) -> ValidationSet:
    rng = np.random.default_rng(cfg.seed)
    chosen = slices
    if len(slices) > cfg.max_slices:  # evenly spread through the series, end slices left out
        # (series ends are often atypical: a reformat's first image here is a
        # burned-in localizer grid of 3071 HU stripes)
        idx = np.linspace(0, len(slices) - 1, cfg.max_slices + 2).round().astype(int)[1:-1]
        chosen = [slices[i] for i in idx]
    noisy, clean, labels = [], [], []
    for s in chosen:
        noisy.append(add_gaussian(s.hu, sigma_hu=cfg.sigma_hu, rng=rng))
        clean.append(s.hu)
        labels.append(f"{s.name} gaussian {cfg.sigma_hu:g} HU")
        if cfg.low_dose_i0 > 0 and s.pixel_spacing_mm:
            ld, ref = low_dose_pair(s.hu, i0=cfg.low_dose_i0, pixel_spacing_mm=s.pixel_spacing_mm, rng=rng)
            noisy.append(ld)
            clean.append(ref)
            labels.append(f"{s.name} low-dose I0 {cfg.low_dose_i0:g}")
    return ValidationSet(noisy, clean, labels)
