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

Scan-matched noise (``scanner_fraction``): a second bank holds slices with
noise synthesized from the noise model measured on their own series
(:mod:`denoise.scanner_noise`: its spectrum and SD map), scaled as a dose
reduction; the scan itself, with its own noise, is the target, so the model
learns to bring a low-dose scan back to the scanner's standard dose and
grain.

2.5-D models (``neighbours`` > 0) see each patch with the same patch of the
slice's neighbours (:mod:`denoise.neighbours`), each given its own noise of
the same kind and level (the noise of neighbouring slices is nearly
independent). Slices without neighbours (thick or uneven series, a series'
ends), the physics-simulated patches (simulated for the slice alone) and
``context_dropout`` of the others are shown as a single file is denoised:
the noisy slice stands in for its neighbours.
"""

from __future__ import annotations

import functools
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
    series: str = ""  # SeriesInstanceUID (the key of its noise model)
    context: np.ndarray | None = None  # (2n, H, W) HU: slices k-n..k-1, k+1..k+n; None: none (2-D)


def load_slices(paths: list[Path], *, limit: int = 0, rng: np.random.Generator | None = None,
                neighbours: int = 0) -> list[Slice]:
    """Every frame of every file as a :class:`Slice` (``limit`` > 0 keeps a
    random subset of files, drawn with ``rng``), with its ``neighbours`` slices
    on each side where its series has them (:mod:`denoise.neighbours`)."""
    paths = list(paths)
    if limit and limit < len(paths):
        rng = rng or np.random.default_rng(0)
        paths = [paths[i] for i in sorted(rng.choice(len(paths), size=limit, replace=False))]
    around = _neighbour_paths(paths, neighbours) if neighbours else {}
    read = _reader()
    slices = []
    for path in paths:
        ct = inspect_file(Path(path), PurePosixPath(Path(path).name))
        spacing = float(np.mean(ct.pixel_spacing)) if ct.pixel_spacing else None
        near = around.get(Path(path).resolve(), ())
        context = (np.stack([read(other)[0] for other in near]) if near and None not in near else None)
        for k, frame in enumerate(read(path)):
            slices.append(Slice(frame, spacing, f"{Path(path).name}#{k}", ct.series_uid, context))
    return slices


def _reader():
    """``read(path)`` -> the file's (frames, H, W) HU, each file read once (neighbours are shared)."""
    cache: dict[Path, np.ndarray] = {}

    def read(path) -> np.ndarray:
        key = Path(path).resolve()
        if key not in cache:
            cache[key] = load_ct(key).hu
        return cache[key]
    return read


def _neighbour_paths(paths: list[Path], n: int) -> dict[Path, tuple[Path | None, ...]]:
    """Each file's ``n`` neighbours on each side, from a scan of the folders that hold the files."""
    from denoise.neighbours import neighbourhood

    out = {}
    for folder in sorted({Path(p).resolve().parent for p in paths}):
        for series in _folder_series(folder):
            hood = neighbourhood(series)
            out.update({f.path: hood.of(f.path, n) for f in series.files})
    return out


@functools.lru_cache(maxsize=64)
def _folder_series(folder: Path) -> tuple:
    """The CT series of one folder, scanned once for the neighbours and the noise models both."""
    from denoise.dicom.scan import scan

    return tuple(scan(folder).series)


def measure_noise_models(slices: list[Slice], paths: list[Path]) -> dict[str, dict]:
    """The noise model (:func:`denoise.scanner_noise.measure_series`, as a dict) of every series
    the training files come from, by SeriesInstanceUID; a series it cannot be measured on is left out."""
    from denoise.scanner_noise import measure_series

    wanted = {s.series for s in slices}
    models = {}
    for folder in sorted({Path(p).resolve().parent for p in paths}):
        for series in _folder_series(folder):
            if series.uid in wanted and series.uid not in models:
                try:
                    models[series.uid] = measure_series(series).to_dict()
                except ValueError:
                    continue
    return models


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


class ScannerBank:
    """Training slices with scan-matched noise (see the module docstring), refreshed in part every epoch."""

    def __init__(self, slices: list[Slice], models: dict, cfg: NoiseConfig, window: HUWindow,
                 rng: np.random.Generator, *, channels: int = 0):
        from denoise.scanner_noise import NoiseModel

        self.models = {uid: NoiseModel.from_dict(m) for uid, m in models.items()}
        self.slices = [s for s in slices if s.series in self.models and s.pixel_spacing_mm is not None]
        if not self.slices:
            raise ValueError("scan-matched noise needs a noise model measured on a training series "
                             "(denoise.scanner_noise); none could be measured")
        self.cfg, self.window, self.rng, self.channels = cfg, window, rng, channels
        self.entries: list[tuple[int, np.ndarray, np.ndarray | None]] = []  # slice, noisy, noisy context (HU)
        while len(self.entries) < min(cfg.scanner_bank_slices, len(self.slices)):
            self.entries.append(self._synthesize())

    def _synthesize(self) -> tuple[int, np.ndarray, np.ndarray | None]:
        k = int(self.rng.integers(len(self.slices)))
        s = self.slices[k]
        lo, hi = np.log(self.cfg.scanner_dose[0]), np.log(self.cfg.scanner_dose[1])
        scale = np.float32(np.sqrt(1.0 / np.exp(self.rng.uniform(lo, hi)) - 1.0))
        model, spacing = self.models[s.series], (s.pixel_spacing_mm, s.pixel_spacing_mm)
        noisy = s.hu + scale * model.synthesize(s.hu, self.rng, pixel_spacing=spacing)
        context = None
        if self.channels and s.context is not None:
            context = np.stack([c + scale * model.synthesize(c, self.rng, pixel_spacing=spacing) for c in s.context])
        return k, noisy, context

    def refresh(self) -> None:
        for j in self.rng.choice(len(self.entries), size=min(self.cfg.scanner_refresh, len(self.entries)),
                                 replace=False):
            self.entries[int(j)] = self._synthesize()

    def sources(self, patch: PatchConfig) -> list[PatchSource]:
        """Patch sources of the realizations: noisy (and its noisy neighbours) as inputs, the scan as target."""
        by_shape: dict[tuple, list] = {}
        for k, noisy, context in self.entries:
            key = (noisy.shape, context is not None)
            by_shape.setdefault(key, []).append((noisy, self.slices[k].hu, context))
        out = []
        for (_, has_context), group in by_shape.items():
            clean = np.stack([c for _, c, _ in group])
            noisy = self.window.to_model(np.stack([n for n, _, _ in group]))
            out.append(PatchSource.build(
                self.window.to_model(clean), clean > BODY_HU, size=patch.size,
                min_body_fraction=patch.min_body_fraction, inputs=noisy,
                context=self.window.to_model(np.stack([c for _, _, c in group])) if has_context else None))
        return out


class TrainingPatches:
    """Endless noisy/clean patch batches from training slices."""

    def __init__(self, slices: list[Slice], *, window: HUWindow, noise: NoiseConfig, patches: PatchConfig,
                 rng: np.random.Generator, conditioned: bool = False, neighbours: int = 0,
                 noise_models: dict | None = None):
        if not slices:
            raise ValueError("no training slices")
        self.window, self.noise, self.patches, self.rng = window, noise, patches, rng
        self.conditioned, self.channels = conditioned, 2 * neighbours
        by_shape: dict[tuple, list[Slice]] = {}
        for s in slices:
            by_shape.setdefault((s.hu.shape, self.channels > 0 and s.context is not None), []).append(s)
        self.clean_sources = []
        for (_, has_context), group in by_shape.items():
            hu = np.stack([s.hu for s in group])
            context = window.to_model(np.stack([s.context for s in group])) if has_context else None
            self.clean_sources.append(PatchSource.build(window.to_model(hu), hu > BODY_HU, size=patches.size,
                                                        min_body_fraction=patches.min_body_fraction,
                                                        context=context))
        self.sigma_model = tuple(window.sigma_to_model(s) for s in noise.gaussian_sigma_hu)
        self.hard_edge_model = tuple(float(window.to_model(v)) for v in patches.hard_edge_hu)
        self.bank = (LowDoseBank(slices, noise, window, rng) if noise.low_dose_fraction > 0 else None)
        self.scanner = (ScannerBank(slices, noise_models or {}, noise, window, rng, channels=self.channels)
                        if noise.scanner_fraction > 0 else None)
        self._bank_sources()

    def _bank_sources(self) -> None:
        self.low_dose_sources = self.bank.sources(self.patches) if self.bank else []
        self.textured_sources = (self.bank.sources(self.patches, min_i0=self.noise.textured_i0_min)
                                 if self.bank and self.noise.textured_fraction > 0 else [])
        self.scanner_sources = self.scanner.sources(self.patches) if self.scanner else []

    def new_epoch(self) -> None:
        """Refresh part of the noise banks (Gaussian noise is new every batch)."""
        if self.bank is not None:
            self.bank.refresh()
        if self.scanner is not None:
            self.scanner.refresh()
        if self.bank is not None or self.scanner is not None:
            self._bank_sources()

    def _draw(self, sources: list[PatchSource], n: int):
        """``n`` patches from ``sources`` in proportion to their sizes: clean, noisy (or None) and the
        context (n, C, p, p) with the sources' neighbours, or None for a source without them."""
        sizes = np.array([len(s) for s in sources], dtype=np.float64)
        counts = self.rng.multinomial(n, sizes / sizes.sum())
        parts = [s.sample_with_context(int(c), self.rng) for s, c in zip(sources, counts, strict=True) if c]
        clean = np.concatenate([p[0] for p in parts])
        noisy = np.concatenate([p[1] for p in parts]) if parts[0][1] is not None else None
        if not self.channels:
            return clean, noisy, None
        missing = np.full((len(clean), self.channels) + clean.shape[1:], np.nan, np.float32)  # no neighbours
        context = np.concatenate([p[2] if p[2] is not None else missing[:len(p[0])] for p in parts])
        return clean, noisy, context

    def batch(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(input, clean) float32 in model space: clean (n, p, p, 1); input the
        noisy patches (n, p, p, 1), with their noisy neighbours for a 2.5-D
        model (n, p, p, 1 + 2n), and with ``conditioned`` their noise level
        maps (see :mod:`denoise.conditioning`)."""
        n = n or self.patches.batch_size
        n_ld = int(self.rng.binomial(n, self.noise.low_dose_fraction)) if self.low_dose_sources else 0
        n_tex = (int(self.rng.binomial(n - n_ld, self.noise.textured_fraction))
                 if self.textured_sources else 0)
        n_sc = (int(self.rng.binomial(n - n_ld - n_tex, self.noise.scanner_fraction))
                if self.scanner_sources else 0)
        parts = []  # (noisy, level, clean, noisy context or None) in model units
        if n - n_ld - n_tex - n_sc:
            clean, _, context = self._draw(self.clean_sources, n - n_ld - n_tex - n_sc)
            if self.patches.hard_edge_fraction > 0:
                edited = hard_edge_batch(clean, self.patches.hard_edge_fraction, self.hard_edge_model, self.rng)
                if context is not None:  # the padding a scanner adds lies in every slice alike
                    context = np.where((edited != clean)[:, None], edited[:, None], context)
                clean = edited
            noisy, sigma = self._gaussian(clean)
            if context is not None:
                context = context + sigma.reshape(-1, 1, 1, 1) * self.rng.standard_normal(context.shape,
                                                                                             dtype=np.float32)
            parts.append((noisy, sigma, clean, context))
        if n_tex:  # a realization with its own texture is the target; white noise on top
            _, textured, _ = self._draw(self.textured_sources, n_tex)
            parts.append((*self._gaussian(textured), textured, None))
        if n_sc:
            sc_clean, sc_noisy, sc_context = self._draw(self.scanner_sources, n_sc)
            sc_level = np.sqrt(np.mean((sc_noisy - sc_clean) ** 2, axis=(1, 2)))
            parts.append((sc_noisy, sc_level, sc_clean, sc_context))
        if n_ld:
            ld_clean, ld_noisy, _ = self._draw(self.low_dose_sources, n_ld)
            parts.append((ld_noisy, np.sqrt(np.mean((ld_noisy - ld_clean) ** 2, axis=(1, 2))), ld_clean, None))
        noisy = np.concatenate([p[0] for p in parts])
        level = np.concatenate([p[1] for p in parts]).astype(np.float32)
        clean = np.concatenate([p[2] for p in parts])
        share = np.full(n, self.noise.known_level_fraction)
        share[n - n_ld:] = self.noise.known_level_fraction_low_dose  # the low-dose patches come last
        context = self._context(parts, noisy) if self.channels else None
        if self.patches.augment:
            noisy, clean, *channels = augment([noisy, clean, *(context.transpose(1, 0, 2, 3) if self.channels
                                                               else [])], self.rng)
            context = np.stack(channels, axis=-1) if self.channels else None
        elif self.channels:
            context = context.transpose(0, 2, 3, 1)
        # What the network sees in use (HUWindow.apply): both clipped to the input range.
        noisy, clean = self.window.clip(noisy), self.window.clip(clean)
        noisy = np.ascontiguousarray(noisy[..., None], dtype=np.float32)
        if self.channels:
            noisy = np.concatenate([noisy, self.window.clip(context).astype(np.float32)], axis=-1)
        if self.conditioned:
            noisy = network_input(noisy, level, known=self.rng.random(n) < share)
        return noisy, np.ascontiguousarray(clean[..., None], dtype=np.float32)

    def _context(self, parts, noisy: np.ndarray) -> np.ndarray:
        """The noisy neighbours (n, C, p, p) of the batch: the noisy slice itself stands in where a
        part has none, a patch has none (NaN: its series gives none) and for ``context_dropout``."""
        missing = np.full((len(noisy), self.channels) + noisy.shape[1:], np.nan, np.float32)
        context = np.concatenate([p[3] if p[3] is not None else missing[:len(p[0])] for p in parts])
        alone = np.isnan(context).any(axis=(1, 2, 3)) | (self.rng.random(len(noisy)) < self.noise.context_dropout)
        context[alone] = noisy[alone, None]
        return context

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
