"""Training and validation data: slices from a manifest, noisy/clean patch
batches with fresh noise every epoch, and a fixed-noise validation set.

Low-dose noise is expensive (a sinogram and a filtered back projection per
realization), so it comes from a *bank*: ``low_dose_bank_slices`` slices each
hold one simulated realization at an I0 drawn log-uniformly from the range;
``low_dose_refresh`` of them are re-simulated (new slice, new I0, new Poisson
draw) every epoch. Sinograms are cached per slice, so a refresh costs one FBP.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from denoise.config import NoiseConfig, PatchConfig, ValidationConfig
from denoise.dicom.pixels import load_ct
from denoise.dicom.scan import inspect_file
from denoise.noise import Projection, add_gaussian, low_dose_pair, noisy_line_integrals, project, reconstruct
from denoise.normalize import HUWindow
from denoise.patches import BODY_HU, PatchSource, augment, gaussian_batch, hard_edge_batch


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
        self._projections: OrderedDict[int, tuple[Projection, np.ndarray]] = OrderedDict()
        self._cache_size = cache_size
        self.entries: list[tuple[int, float, np.ndarray, np.ndarray]] = []  # slice, i0, noisy, clean (HU)
        while len(self.entries) < min(cfg.low_dose_bank_slices, len(self.slices)):
            self.entries.append(self._simulate())

    def _projection(self, k: int) -> tuple[Projection, np.ndarray]:
        if k not in self._projections:
            s = self.slices[k]
            proj = project(s.hu, pixel_spacing_mm=s.pixel_spacing_mm, n_views=self.cfg.low_dose_views)
            self._projections[k] = (proj, reconstruct(proj, proj.line_integrals))
            if len(self._projections) > self._cache_size:
                self._projections.popitem(last=False)
        self._projections.move_to_end(k)
        return self._projections[k]

    def _simulate(self) -> tuple[int, float, np.ndarray, np.ndarray]:
        k = int(self.rng.integers(len(self.slices)))
        lo, hi = np.log(self.cfg.low_dose_i0[0]), np.log(self.cfg.low_dose_i0[1])
        i0 = float(np.exp(self.rng.uniform(lo, hi)))
        proj, clean = self._projection(k)
        noisy = reconstruct(proj, noisy_line_integrals(proj, i0=i0, rng=self.rng))
        return k, i0, noisy, clean

    def refresh(self) -> None:
        for j in self.rng.choice(len(self.entries), size=min(self.cfg.low_dose_refresh, len(self.entries)),
                                 replace=False):
            self.entries[int(j)] = self._simulate()

    def sources(self, patch: PatchConfig) -> list[PatchSource]:
        by_shape: dict[tuple, list] = {}
        for _, _, noisy, clean in self.entries:
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
                 rng: np.random.Generator):
        if not slices:
            raise ValueError("no training slices")
        self.window, self.noise, self.patches, self.rng = window, noise, patches, rng
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
        self.low_dose_sources = self.bank.sources(patches) if self.bank else []

    def new_epoch(self) -> None:
        """Refresh part of the low-dose bank (Gaussian noise is new every batch)."""
        if self.bank is not None:
            self.bank.refresh()
            self.low_dose_sources = self.bank.sources(self.patches)

    def _draw(self, sources: list[PatchSource], n: int):
        sizes = np.array([len(s) for s in sources], dtype=np.float64)
        counts = self.rng.multinomial(n, sizes / sizes.sum())
        parts = [s.sample(int(c), self.rng) for s, c in zip(sources, counts, strict=True) if c]
        clean = np.concatenate([p[0] for p in parts])
        noisy = np.concatenate([p[1] for p in parts]) if parts[0][1] is not None else None
        return clean, noisy

    def batch(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(noisy, clean), each (n, p, p, 1) float32 in model space."""
        n = n or self.patches.batch_size
        n_ld = int(self.rng.binomial(n, self.noise.low_dose_fraction)) if self.low_dose_sources else 0
        clean, noisy = self._draw(self.clean_sources, n - n_ld) if n - n_ld else (None, None)
        if clean is not None:
            if self.patches.hard_edge_fraction > 0:
                clean = hard_edge_batch(clean, self.patches.hard_edge_fraction, self.hard_edge_model, self.rng)
            noisy = gaussian_batch(clean, self.sigma_model, self.rng, self.noise.gaussian_log_fraction)
        if n_ld:
            ld_clean, ld_noisy = self._draw(self.low_dose_sources, n_ld)
            clean = ld_clean if clean is None else np.concatenate([clean, ld_clean])
            noisy = ld_noisy if noisy is None else np.concatenate([noisy, ld_noisy])
        if self.patches.augment:
            noisy, clean = augment([noisy, clean], self.rng)
        # What the network sees in use (HUWindow.apply): both clipped to the input range.
        noisy, clean = self.window.clip(noisy), self.window.clip(clean)
        return (np.ascontiguousarray(noisy[..., None], dtype=np.float32),
                np.ascontiguousarray(clean[..., None], dtype=np.float32))


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
