"""Job: adapt a model to one noisy series with no clean reference (``ct-denoise adapt``).

Self-supervised training (:mod:`denoise.adaptation`), starting from the
bundled model (or ``--from``), for ``--minutes`` or ``--epochs``, by one of
three methods:

* ``noise2sim-neighbour-slices`` (the default): slice k -> slice k+-d. It
  needs nothing but the series, and removes all the noise it can tell from
  anatomy, the scan's own included.
* ``recorrupted-low-dose`` (with ``noise_sd`` or ``dose_i0``): the user says
  what noise is to be removed, as the SD in HU that a low-dose protocol adds
  over the standard one (sqrt(SD_low^2 - SD_standard^2), as measured in
  soft tissue or a water phantom), or as the photon count of
  ``ct-denoise noise --dose``. Pairs are recorrupted with fresh realizations
  of that noise (:func:`denoise.noise.low_dose_noise`), so the model removes
  that noise and keeps the texture beneath it; no neighbours are needed, so
  thick slices are accepted too.
* ``recorrupted-measured-noise`` (told nothing, ``method="recorrupted"``):
  the same pairs, with noise synthesized from the noise model measured on
  the series itself (:mod:`denoise.scanner_noise`).

The run folder (``<out>.run`` unless ``run_dir`` is given) is
self-describing and resumable, as ``train`` writes it::

    RUN/config.toml          what was asked: series, budget, seed, patch settings
    RUN/log.csv, log.json    one row per epoch (loss, validation loss, speed, time)
    RUN/checkpoints/last.*   weights + Adam moments + step, time spent, RNG state and log, every epoch
    RUN/progress/epoch_*.npy the middle slice denoised after each epoch
    RUN/progress.gif         that slice before | after, per epoch

It ends by writing the model file ``<out>.npz`` + ``<out>.json``, as
``export-model`` writes one; its metadata records the method, the series
(a digest of its UID, never patient data), the time spent and the model it
started from.

Refused with a one-line reason (UsageError, exit 2) before anything is written:
no CT series, several series without ``series``, fewer than 3 slices,
multi-frame files, slices of different sizes, a ``--from`` model that does
not load; for the neighbour method also unknown, uneven or duplicate slice
positions and slices more than :data:`MAX_SPACING_MM` apart (neighbours no
longer share anatomy: adapt a thinner reconstruction of the same scan, or
state the noise with ``--noise-sd`` and use the recorrupted method); for the
recorrupted one no PixelSpacing, and (``--noise-sd``) no uniform soft tissue
to calibrate the noise on.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pydicom
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator
from scipy import ndimage

from denoise import __version__
from denoise.adaptation import (
    ALPHA,
    NeighbourPairs,
    PairConfig,
    RecorruptedPairs,
    masked_mse_loss,
    neighbour_offsets,
    similarity_mask,
)
from denoise.atomic import write_text
from denoise.batch import UsageError
from denoise.conditioning import blind_input
from denoise.config import describe, options_error, to_toml
from denoise.dicom.pixels import load_ct
from denoise.dicom.reading import lenient
from denoise.dicom.scan import Series, scan
from denoise.hashing import short_hash
from denoise.inference import Denoiser
from denoise.nn import Adam, ModelFileError, save_model
from denoise.nn.serialize import model_paths
from denoise.noise import field_of_view, low_dose_noise
from denoise.quality.noise_level import WINDOW_MM, NoUniformRegion, noise_sd, soft_tissue_centres, window_pixels
from denoise.report import ProgressFrame, progress_gif, training_curves
from denoise.training import Engine, EngineConfig, EpochHooks, LoopState, Schedule, checkpoint

METHOD = "noise2sim-neighbour-slices"
RECORRUPTED = "recorrupted-low-dose"
MEASURED = "recorrupted-measured-noise"
METHOD_CHOICES = ("auto", "neighbours", "recorrupted")
DESCRIPTIONS = {
    METHOD: "self-supervised: slice k -> slice k+-d of the same series (neighbours within 1.6 mm), pixels whose "
            "7x7 local means differ by more than 30 HU left out of the loss (after Noise2Sim)",
    RECORRUPTED: "self-supervised with a stated noise model: y + a*m -> y - m/a for fresh realizations m of the "
                 "low-dose noise to remove (recorrupted-to-recorrupted, a = 0.5); the texture beneath that noise "
                 "is kept",
    MEASURED: "self-supervised with the series' own noise, measured on it (its spectrum and SD map, "
              "denoise.scanner_noise): y + a*m -> y - m/a for fresh realizations m of that noise "
              "(recorrupted-to-recorrupted, a = 0.5); all of the scan's noise is the noise to remove",
}
I0_REFERENCE = 1e5  # photons at which the noise is simulated to calibrate --noise-sd
MAX_SPACING_MM = 3.0
MIN_SLICES = 3
STEPS_PER_EPOCH = 25
LOG_FIELDS = ("epoch", "step", "train_loss", "val_loss", "lr", "grad_norm", "patches_per_s", "epoch_seconds",
              "seconds")
LR = 1e-4  # neighbour pairs, constant
# Recorrupted pairs: targets carry 5x the variance of the noise to remove, so the rate peaks higher and
# decays (cosine over the budget, to 1 % of the peak); measured better than a constant 3e-4
# (docs/design/adaptation.md).
LR_RECORRUPTED = 6e-4
SCHEDULES = {METHOD: "constant", RECORRUPTED: "cosine", MEASURED: "cosine"}
MIN_LR_FRACTION = 0.01
REFRESH = 1 / 8  # recorrupted pairs: share of the slice bank given new noise each epoch
DEFAULT_MINUTES = 5.0
VAL_CROP = 192  # validation pairs: the central 192 x 192 pixels of three slices
FRAME_EVERY = 10  # progress GIF: epochs 1, 2, 4, 8, every 10th and the last


_OPTIONS = {"minutes": ("--minutes", ""), "epochs": ("--epochs", ""), "seed": ("--seed", ""),
            "noise_sd": ("--noise-sd", " HU"), "dose_i0": ("--dose", " photons"), "method": ("--method", "")}


class AdaptOptions(BaseModel):
    """What ``adapt`` is asked for, validated as train's config is (finite numbers,
    bounds, no bool as a number); :meth:`parse` gives one-line errors naming the option."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    minutes: Annotated[float, Strict(), Field(gt=0)] | None = None
    epochs: Annotated[int, Strict(), Field(ge=1)] | None = None
    seed: Annotated[int, Strict(), Field(ge=0)] = 0
    noise_sd: Annotated[float, Strict(), Field(gt=0)] | None = None  # HU: chooses the recorrupted method
    dose_i0: Annotated[float, Strict(), Field(gt=0)] | None = None  # photons: likewise
    # auto: a stated noise -> recorrupted with it; else neighbours where the series allows, else
    # recorrupted with the noise measured on the series (denoise.scanner_noise)
    method: Literal["auto", "neighbours", "recorrupted"] = "auto"

    @model_validator(mode="after")
    def _one_of_each(self):
        if self.minutes is not None and self.epochs is not None:
            raise ValueError("give --minutes or --epochs, not both")
        if self.noise_sd is not None and self.dose_i0 is not None:
            raise ValueError("give --noise-sd or --dose, not both")
        if self.method == "neighbours" and (self.noise_sd is not None or self.dose_i0 is not None):
            raise ValueError("--method neighbours removes the noise it finds: it takes no --noise-sd or --dose")
        return self

    @classmethod
    def parse(cls, **values) -> AdaptOptions:
        """The options, or :class:`UsageError` with one line per problem, e.g.
        ``--noise-sd must be > 0 HU, got -3.0``."""
        values = {k: float(v) if k in ("minutes", "noise_sd", "dose_i0") and isinstance(v, int)
                  and not isinstance(v, bool) else v for k, v in values.items()}
        try:
            return cls(**values)
        except ValidationError as exc:
            raise UsageError(options_error(exc, lambda field: _OPTIONS[field][0],
                                           {field: unit for field, (_, unit) in _OPTIONS.items()})) from None


class AdaptCheckFailed(Exception):
    """The adapted model failed the check on the series (it raised the noise): not exported."""


def noise_check(den: Denoiser, slices: list[np.ndarray], pixel_spacing) -> dict:
    """The noise SD (``qa``'s measure: mode of 6 mm local SDs in uniform soft tissue) of each check
    slice before and after the model, measured at the same windows; ``passed`` is False when the
    model raised it on any slice (it then adds texture, not removes noise)."""
    before, after = [], []
    for hu in slices:
        try:
            centres = soft_tissue_centres(hu, pixel_spacing)
            sd_in = noise_sd(hu, pixel_spacing, centres=centres)
            sd_out = noise_sd(den(hu), pixel_spacing, centres=centres)
        except NoUniformRegion:
            continue
        before.append(round(sd_in, 2))
        after.append(round(sd_out, 2))
    return {"noise_sd_hu_before": before, "noise_sd_hu_after": after,
            "passed": all(b >= a for b, a in zip(before, after, strict=True)),
            "measured": bool(before)}


@dataclass
class AdaptResult:
    model_path: Path
    run_dir: Path
    epochs: int
    seconds: float
    log: list[dict]


def _series_label(series: Series) -> str:
    return short_hash(series.uid)


class NoiseModel(BaseModel):
    """The noise the recorrupted method removes: low-dose noise at ``i0`` photons per bin and view
    (``denoise.noise.low_dose_noise``); ``sd_hu`` is what the user stated, when they stated an SD."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    kind: Literal["low-dose"] = "low-dose"
    i0: Annotated[float, Field(gt=0)]
    sd_hu: Annotated[float, Field(gt=0)] | None = None
    alpha: Annotated[float, Field(gt=0)] = ALPHA

    def realize(self, spacing_mm: float):
        def noise(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return low_dose_noise(hu, i0=self.i0, pixel_spacing_mm=spacing_mm, rng=rng)
        return noise

    def option(self) -> str:
        """The option that states this noise, as ``adapt`` takes it."""
        return f"--noise-sd {self.sd_hu:g}" if self.sd_hu is not None else f"--dose {self.i0:g}"


class MeasuredNoise(BaseModel):
    """The series' own noise, measured on it (:class:`denoise.scanner_noise.NoiseModel`, as a dict):
    all of it is the noise the recorrupted method removes."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    kind: Literal["measured"] = "measured"
    model: dict
    alpha: Annotated[float, Field(gt=0)] = ALPHA

    @field_validator("model")
    @classmethod
    def _no_none(cls, model: dict) -> dict:
        """What was not known (a thickness no header states) is left out: TOML has no null."""
        return {k: v for k, v in model.items() if v is not None}

    def realize(self, spacing_mm: float):
        from denoise.scanner_noise import NoiseModel as ScanNoise

        scan_noise = ScanNoise.from_dict(self.model)

        def noise(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return scan_noise.synthesize(hu, rng, pixel_spacing=(spacing_mm, spacing_mm))
        return noise

    def option(self) -> str:
        return "--method recorrupted"


class AdaptSettings(BaseModel):
    """What a run adapts, from what, and how (the ``[adapt]`` table of its ``config.toml``);
    the defaults are what runs that did not record them used."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    method: Literal["noise2sim-neighbour-slices", "recorrupted-low-dose", "recorrupted-measured-noise"] = METHOD
    series_dir: str
    series: str
    from_model: str
    minutes: Annotated[float, Field(gt=0)] | None = None
    epochs: Annotated[int, Field(ge=1)] | None = None
    seed: Annotated[int, Field(ge=0)] = 0
    lr: Annotated[float, Field(gt=0)] = LR
    schedule: Literal["constant", "cosine"] = "constant"
    steps_per_epoch: Annotated[int, Field(ge=1)] = STEPS_PER_EPOCH
    offsets: tuple[int, ...] | None = None


class AdaptRun(BaseModel):
    """A run's saved config: the settings, the pair sampling and (recorrupted method) the noise model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    adapt: AdaptSettings
    pairs: PairConfig
    noise: Annotated[NoiseModel | MeasuredNoise, Field(discriminator="kind")] | None = None

    def with_budget(self, minutes: float | None, epochs: int | None) -> AdaptRun:
        return self.model_copy(update={"adapt": self.adapt.model_copy(update={"minutes": minutes, "epochs": epochs})})

    def engine_config(self) -> EngineConfig:
        """The engine's settings for this run: the budget, the rate and its schedule, adapt's log columns."""
        a = self.adapt
        return EngineConfig(steps_per_epoch=a.steps_per_epoch, epochs=a.epochs,
                            seconds=None if a.epochs is not None else a.minutes * 60.0,
                            schedule=Schedule(lr=a.lr, kind=a.schedule, min_lr=MIN_LR_FRACTION * a.lr),
                            refresh_first=True, log_fields=LOG_FIELDS, name="adapt epoch")

    def to_toml(self) -> str:
        return to_toml(self.model_dump(mode="json", exclude_none=True))


def _windows(hu: np.ndarray, pixel_spacing) -> np.ndarray:
    """Where ``qa``'s noise measure looks: uniform soft tissue whose whole window lies in the
    field of view the noise model fills."""
    inside = ndimage.minimum_filter(field_of_view(hu.shape).astype(np.uint8), size=window_pixels(
        pixel_spacing, WINDOW_MM), mode="constant").astype(bool)
    return soft_tissue_centres(hu, pixel_spacing) & inside


def _median_noise(slices: list[np.ndarray], pixel_spacing, *, i0: float | None = None,
                  rng: np.random.Generator | None = None) -> float | None:
    """Median over ``slices`` of ``qa``'s noise SD (mode of 6 mm local SDs, Christianson et al.) at
    :func:`_windows`: of the slices themselves, or (``i0``) of low-dose noise made for them. None
    where no slice has uniform soft tissue."""
    spacing = float(np.mean(pixel_spacing))
    measured = []
    for hu in slices:
        try:
            field = hu if i0 is None else low_dose_noise(hu, i0=i0, pixel_spacing_mm=spacing, rng=rng)
            measured.append(noise_sd(field, pixel_spacing, centres=_windows(hu, pixel_spacing)))
        except NoUniformRegion:
            continue
    return float(np.median(measured)) if measured else None


def calibrate_i0(slices: list[np.ndarray], pixel_spacing: tuple[float, float], sd_hu: float,
                 rng: np.random.Generator) -> float:
    """The photon count at which :func:`denoise.noise.low_dose_noise` adds noise of ``sd_hu`` HU to
    these slices, measured as ``qa`` measures noise at their own soft-tissue windows."""
    at_reference = _median_noise(slices, pixel_spacing, i0=I0_REFERENCE, rng=rng)
    if at_reference is None:
        raise UsageError("--noise-sd: no uniform soft tissue in the series to calibrate the noise on; give "
                         "--dose I0 (photons, as ct-denoise noise --dose takes) instead")
    return float(I0_REFERENCE * (at_reference / sd_hu) ** 2)


STATED_MARGIN = 1.1  # the stated noise may exceed the series' measured noise by this factor, no more


def stated_noise(slices: list[np.ndarray], pixel_spacing, *, sd_hu: float | None, i0: float | None,
                 rng: np.random.Generator) -> NoiseModel:
    """The noise model the user stated (``sd_hu`` calibrated to photons, or ``i0``), refused
    (UsageError) when it is more than the series holds, both measured as ``qa`` measures noise:
    recorrupted training then learns to subtract noise that is not there, and the model amplifies
    the texture instead (measured: a 13 HU series told 30 HU came out at 20-24 HU)."""
    model = (NoiseModel(i0=calibrate_i0(slices, pixel_spacing, sd_hu, rng), sd_hu=sd_hu) if sd_hu is not None
             else NoiseModel(i0=float(i0)))
    held = _median_noise(slices, pixel_spacing)
    if held is None:
        return model
    said = sd_hu if sd_hu is not None else _median_noise(slices, pixel_spacing, i0=model.i0, rng=rng)
    if said is not None and said > STATED_MARGIN * held:
        raise UsageError(f"the stated noise ({said:.1f} HU) is more than the series holds ({held:.1f} HU, as qa "
                         "measures noise): state the part of it to remove (sqrt(SD_low^2 - SD_standard^2))")
    return model


def select_series(root: Path, choice: str | None, *, neighbours: bool = True) -> Series:
    """The one series to adapt to, checked for neighbour training (UsageError otherwise)."""
    if not root.exists():
        raise UsageError(f"{root}: no such file or folder")
    result = scan(root)
    if not result.series:
        reasons = "; ".join(f"{s.relpath}: {s.reason}" for s in result.skipped[:3])
        raise UsageError(f"{root}: no CT series to adapt to" + (f" ({reasons})" if reasons else ""))
    if choice is not None:  # its # in `ct-denoise info ROOT` (1-based), its UID in full or as info's table shows
        # it (its tail), or the hash adapt records; a number that is another series' SeriesNumber is ambiguous
        found, choice = result.series, choice.strip()
        picked = [s for k, s in enumerate(found, 1) if choice in (s.uid, str(k), _series_label(s))]
        tail = choice.removeprefix("…")
        picked = picked or [s for s in found if len(tail) >= 6 and s.uid.endswith(tail)]
        if len(picked) != 1:
            raise UsageError(f"{root}: {'no' if not picked else 'more than one'} series {choice!r} (give its number "
                             f"1..{len(found)} in the # column of ct-denoise info, or its SeriesInstanceUID)")
        series = picked[0]
        by_number = choice == str(found.index(series) + 1)  # taken as its # in the listing
        other = [k for k, s in enumerate(found, 1) if by_number and s.number == int(choice) and s is not series]
        if other:
            raise UsageError(f"{root}: --series {choice} is #{choice} in ct-denoise info (series no. {series.number}), "
                             f"but series no. {choice} is #{other[0]}: give the series' UID (as ct-denoise info "
                             "shows it, or series_uid in its --json) to say which")
    elif len(result.series) > 1:
        raise UsageError(f"{root}: {len(result.series)} series found; choose one with --series N "
                         "(1..{0}: the # column of ct-denoise info)".format(len(result.series)))
    else:
        series = result.series[0]
    check_series(series, neighbours=neighbours)
    return series


def check_series(series: Series, *, neighbours: bool = True) -> None:
    if any(f.n_frames > 1 for f in series.files):
        raise UsageError("multi-frame (Enhanced CT) series: adapt needs single-frame slices")
    if len(series.files) < MIN_SLICES:
        what = "neighbour-slice adaptation" if neighbours else "adaptation"
        raise UsageError(f"series has {len(series.files)} slice(s): {what} needs at least {MIN_SLICES}")
    if len({(f.rows, f.columns) for f in series.files}) > 1:
        raise UsageError("slices of different sizes in one series")
    if not neighbours:
        if any(f.pixel_spacing is None for f in series.files):
            raise UsageError("no PixelSpacing: the low-dose noise model needs the pixel size")
        return
    if any(f.position is None for f in series.files):
        raise UsageError("slice positions are unknown (no ImagePositionPatient/ImageOrientationPatient): "
                         "neighbours cannot be found")
    bad = [w for w in series.warnings if "uneven" in w or "duplicate" in w]
    if bad:
        raise UsageError(f"{'; '.join(bad)}: neighbour slices need an even spacing")
    spacing = series.slice_spacing or 0.0
    if spacing > MAX_SPACING_MM:
        raise UsageError(f"slices are {spacing:.3g} mm apart: too far for neighbour similarity (at most "
                         f"{MAX_SPACING_MM:g} mm); adapt a thinner reconstruction of the same scan, or state "
                         "the noise to remove with --noise-sd")


def _saved_run(last: Path) -> AdaptRun:
    """The config a run's checkpoint was saved with (its JSON side; the weights are loaded later)."""
    try:
        return AdaptRun.model_validate(json.loads(model_paths(last)[1].read_text())["metadata"]["config"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = describe(exc) if isinstance(exc, ValidationError) else exc
        raise UsageError(f"{model_paths(last)[1]}: not a readable adapt checkpoint ({reason})") from None


def _pick_told_nothing(root: Path, choice: str | None) -> tuple[Slices, str]:
    """``--method auto`` told no noise: the slices with neighbour pairs where their spacing allows,
    else with the measured noise (read again without the neighbour checks only then)."""
    try:
        return pick_slices(root, choice, neighbours=True), METHOD
    except UsageError as exc:
        if not any(word in str(exc) for word in ("apart", "uneven", "duplicate", "unknown")):
            raise
    return pick_slices(root, choice, neighbours=False), MEASURED


def measured_noise(series: Series) -> MeasuredNoise:
    """The series' own noise model (:func:`denoise.scanner_noise.measure_series`), or UsageError."""
    from denoise.scanner_noise import measure_series

    try:
        return MeasuredNoise(model=measure_series(series).to_dict())
    except ValueError as exc:
        raise UsageError(f"the series' noise could not be measured ({exc}); state it with --noise-sd") from None


@dataclass(frozen=True)
class Slices:
    """What adapt trains on: the slices of a DICOM series or of a NIfTI volume, in order."""

    count: int
    read: Callable[[int], np.ndarray]  # slice k, (H, W) float32 HU
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None
    label: str  # a 12-hex digest naming the series or file, never patient data
    record: Callable[[], dict]  # what the model file records of it
    measure: Callable[[], MeasuredNoise]


def series_slices(series: Series) -> Slices:
    paths = [f.path for f in series.files]
    return Slices(len(paths), lambda k: load_ct(paths[k]).hu[0], series.files[0].pixel_spacing,
                  series.slice_spacing, _series_label(series), lambda: series_record(series),
                  lambda: measured_noise(series))


def volume_slices(path: Path, choice: str | None, *, neighbours: bool) -> Slices:
    """A NIfTI volume's slices (HU after the header's scaling), checked as a series is (UsageError)."""
    from denoise.hashing import sha256_file
    from denoise.nifti import read_nifti
    from denoise.scanner_noise import measure_volume

    if choice is not None:
        raise UsageError("--series chooses among the series of a DICOM folder; a NIfTI file holds one volume")
    try:
        vol = read_nifti(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: {exc}") from None
    z, rows, cols = vol.shape
    if z < MIN_SLICES:
        what = "neighbour-slice adaptation" if neighbours else "adaptation"
        raise UsageError(f"{path}: {z} slice(s): {what} needs at least {MIN_SLICES}")
    spacing = float(vol.spacing_mm[0])
    if neighbours and spacing > MAX_SPACING_MM:
        raise UsageError(f"slices are {spacing:.3g} mm apart: too far for neighbour similarity (at most "
                         f"{MAX_SPACING_MM:g} mm); let adapt measure the noise (--method auto) or state it with "
                         "--noise-sd")

    def measure() -> MeasuredNoise:
        try:
            return MeasuredNoise(model=measure_volume(vol).to_dict())
        except ValueError as exc:
            raise UsageError(f"the volume's noise could not be measured ({exc}); state it with --noise-sd") \
                from None

    record = {"nifti_sha256": short_hash(sha256_file(path)), "slices": z, "slice_spacing_mm": spacing,
              "size": [rows, cols], "kernel": str(vol.source.get("kernel") or "")}
    return Slices(z, lambda k: vol.hu[k], (float(vol.spacing_mm[1]), float(vol.spacing_mm[2])), spacing,
                  record["nifti_sha256"], lambda: record, measure)


def pick_slices(root: Path, choice: str | None, *, neighbours: bool) -> Slices:
    """The slices to adapt to under ``root``: a NIfTI volume, or the one chosen DICOM series."""
    from denoise.nifti import is_nifti_path

    if is_nifti_path(root):
        return volume_slices(root, choice, neighbours=neighbours)
    return series_slices(select_series(root, choice, neighbours=neighbours))


def load_start_model(path) -> Denoiser:
    try:
        return Denoiser.load(path, ensemble=1)
    except (ModelFileError, ValueError, OSError) as exc:
        raise UsageError(f"--from: {exc}") from exc


def series_record(series: Series) -> dict:
    with lenient(series.files[0].path):
        head = pydicom.dcmread(series.files[0].path, stop_before_pixels=True, force=True)
    kernel = head.get("ConvolutionKernel", "")
    kernel = "\\".join(kernel) if isinstance(kernel, list | pydicom.multival.MultiValue) else str(kernel)
    return {"series_uid_sha256": _series_label(series), "slices": len(series.files),
            "slice_spacing_mm": series.slice_spacing, "size": list(series.sizes[0]),
            "manufacturer": str(head.get("Manufacturer", "") or ""), "kernel": kernel}


def _frame_due(epoch: int) -> bool:
    """Epochs whose denoised slice goes into the progress GIF: 1, 2, 4, 8, then every
    ``FRAME_EVERY``th (and the last, written after the loop); a frame costs a whole-slice inference."""
    return epoch & (epoch - 1) == 0 or epoch % FRAME_EVERY == 0


def _centre(image: np.ndarray, size: int = VAL_CROP) -> np.ndarray:
    rows, cols = image.shape
    top, left = max(0, (rows - size) // 2), max(0, (cols - size) // 2)
    return image[top:top + size, left:left + size]


def _validation_slices(n: int) -> list[int]:
    """A quarter, half and three quarters in."""
    return sorted({n // 4, n // 2, (3 * n) // 4})


def _validation(n: int, read, slices: list[np.ndarray], noise=None,
                alpha: float = ALPHA) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Three fixed (input, target, mask) pairs, HU, for the ``slices`` at :func:`_validation_slices`
    of ``n``: neighbour pairs with their masks, or (with ``noise``, the recorrupted method) each slice
    recorrupted with one fixed noise realization; each cropped to its central ``VAL_CROP`` pixels
    (the validation runs every epoch; three whole slices cost a quarter of its steps)."""
    out = []
    rng = np.random.default_rng(20261201)
    for c, a in zip(_validation_slices(n), slices, strict=True):
        if noise is not None:
            m = noise(a, rng)
            pair = (a + alpha * m, a - m / alpha, np.ones_like(a))
        else:
            b = read(c + 1 if c + 1 < n else c - 1)
            pair = (a, b, similarity_mask(a, b))
        out.append(tuple(_centre(image) for image in pair))
    return out


def _val_loss(den: Denoiser, pairs) -> float:
    losses = []
    for a, b, mask in pairs:
        x = den.window.clip(den.window.to_model(a))[None, ..., None]
        pred = np.asarray(den.model.predict(blind_input(den.model, x)))[0, ..., 0]
        target = den.window.clip(den.window.to_model(b))
        losses.append(float(np.mean(mask * (pred - target) ** 2)))
    return float(np.mean(losses))


def run(series_dir, out, *, from_model=None, minutes: float | None = None, epochs: int | None = None,
        seed: int = 0, resume: bool = False, run_dir=None, series: str | None = None,
        show_progress: bool = True, pair_config: PairConfig | None = None, noise_sd: float | None = None,
        dose_i0: float | None = None, method: str = "auto") -> AdaptResult:
    """Adapt to the series under ``series_dir`` and write the model ``out``; see the module docstring.
    ``noise_sd`` (HU) or ``dose_i0`` (photons) choose the recorrupted method with that noise;
    ``method`` (auto, neighbours, recorrupted) as ``--method``."""
    opts = AdaptOptions.parse(minutes=minutes, epochs=epochs, seed=seed, noise_sd=noise_sd, dose_i0=dose_i0,
                              method=method)
    minutes, epochs, seed, noise_sd, dose_i0 = opts.minutes, opts.epochs, opts.seed, opts.noise_sd, opts.dose_i0
    asked = epochs is not None or minutes is not None
    out = model_paths(out)[0].with_suffix("")
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.name + ".run")
    last = run_dir / "checkpoints" / "last"
    if resume and not model_paths(last)[0].is_file():
        raise UsageError(f"{run_dir}: no checkpoint to resume (checkpoints/last.npz missing)")
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise UsageError(f"{run_dir} already holds a run; use --resume to continue it or choose another --out")
    stated = noise_sd is not None or dose_i0 is not None
    saved = _saved_run(last) if resume else None
    model_of_noise = saved.noise if saved is not None else None
    if model_of_noise is not None and stated and (
            not isinstance(model_of_noise, NoiseModel)
            or (noise_sd != model_of_noise.sd_hu if noise_sd is not None else dose_i0 != model_of_noise.i0)):
        raise UsageError(f"{run_dir} was started with {model_of_noise.option()}; resume it with the same (or no) "
                         "noise option")
    if saved is not None:
        method = saved.adapt.method
        other = opts.method != "auto" and (opts.method == "neighbours") != (method == METHOD)
        if other or (stated and method != RECORRUPTED):
            raise UsageError(f"{run_dir} was started with the {method} method; resume it "
                             "with the same noise options or choose another --out")
    elif stated:
        method = RECORRUPTED
    else:
        method = {"neighbours": METHOD, "recorrupted": MEASURED}.get(opts.method, METHOD)
    if method == METHOD and opts.method == "auto" and saved is None:
        picked, method = _pick_told_nothing(Path(series_dir), series)
    else:
        picked = pick_slices(Path(series_dir), series, neighbours=method == METHOD)
    den = load_start_model(from_model)
    start_meta = copy.deepcopy(den.metadata)
    # the measured noise's pairs take the start model's output as the target outside the body, where that
    # noise model does not hold: a frozen copy, as training changes den's weights in place
    frozen_start = copy.deepcopy(den) if method == MEASURED else None
    pcfg = pair_config or PairConfig(offsets=neighbour_offsets(picked.slice_spacing))
    if not asked and not resume:
        minutes = DEFAULT_MINUTES
    read, n_slices = picked.read, picked.count
    check_slices = [read(k) for k in _validation_slices(n_slices)]  # validation, calibration, final check
    if method == RECORRUPTED and model_of_noise is None:
        if picked.pixel_spacing is None:
            raise UsageError("no PixelSpacing: the low-dose noise model needs the pixel size")
        model_of_noise = stated_noise(check_slices, picked.pixel_spacing, sd_hu=noise_sd, i0=dose_i0,
                                      rng=np.random.default_rng([seed, 7]))
    elif method == MEASURED and model_of_noise is None:
        model_of_noise = picked.measure()
    config = AdaptRun(adapt=AdaptSettings(
        method=method, series_dir=str(series_dir), series=picked.label, from_model=den.model_id,
        minutes=minutes, epochs=epochs, seed=seed, lr=LR if method == METHOD else LR_RECORRUPTED,
        schedule=SCHEDULES[method], offsets=pcfg.offsets if method == METHOD else None), pairs=pcfg,
        noise=model_of_noise)
    rng = np.random.default_rng(seed)
    optimizer = Adam(den.model.parameters(), lr=config.adapt.lr)
    state = LoopState()
    if resume:
        try:
            resumed = checkpoint.load(last)
        except checkpoint.CheckpointError as exc:
            raise UsageError(str(exc)) from None
        if saved.adapt.series != picked.label:
            raise UsageError(f"{run_dir} adapted to another series; resume it on that one or choose another --out")
        if frozen_start is not None and saved.adapt.from_model != den.model_id:
            # its pairs take the start model's output outside the body: the same start model, or not resumed
            raise UsageError(f"{run_dir} started from {saved.adapt.from_model}; resume it with the same --from")
        den.model, state = resumed.model, resumed.state
        optimizer = Adam(den.model.parameters(), lr=saved.adapt.lr)
        if resumed.optimizer_state is not None:
            optimizer.load_state_dict(resumed.optimizer_state)
        rng.bit_generator.state = resumed.rng_state
        start_meta = resumed.metadata["start_metadata"]
        # without a new budget, continue to the one the run was started with
        config = saved.with_budget(minutes, epochs) if asked else saved
    if model_of_noise is None:
        pairs = NeighbourPairs(n_slices, read, den.window, config.pairs, rng)
        val_pairs = _validation(n_slices, read, check_slices)
    else:
        noise = model_of_noise.realize(float(np.mean(picked.pixel_spacing)))
        pairs = RecorruptedPairs(n_slices, read, noise, den.window, config.pairs, rng, alpha=model_of_noise.alpha,
                                 refresh=REFRESH, outside=frozen_start)
        val_pairs = _validation(n_slices, read, check_slices, noise, model_of_noise.alpha)
    shown = read(n_slices // 2)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.toml", config.to_toml())
    engine = Engine(den.model, optimizer, pairs, masked_mse_loss, config.engine_config(), run_dir=run_dir, rng=rng,
                    show_progress=show_progress, to_device=lambda a: a)

    def end_epoch(state: LoopState, row: dict) -> bool:
        engine.say(f"epoch {state.epoch}: loss {row['train_loss']:.3e}  val loss {row['val_loss']:.3e}  "
                   f"{row['patches_per_s']:.0f} patches/s  {state.seconds / 60:.1f} min")
        return False

    state = engine.run(state, EpochHooks(
        validate=lambda state: {"val_loss": _val_loss(den, val_pairs)},
        frame=lambda state, last: den(shown) if last or _frame_due(state.epoch) else None,
        checkpoint=lambda state, row: {"normalization": den.window.to_dict(), "config": config.model_dump(mode="json"),
                                       "start_metadata": start_meta},
        end_epoch=end_epoch))
    rows = state.rows
    _render(run_dir, rows, shown)
    spacing = picked.pixel_spacing
    check = noise_check(den, check_slices, spacing) if spacing else {"measured": False, "passed": True}
    write_text(run_dir / "check.json", json.dumps(check, indent=2))
    if not check["passed"]:
        raise AdaptCheckFailed(
            f"the adapted model raised the noise on the check slices (noise SD {check['noise_sd_hu_before']} -> "
            f"{check['noise_sd_hu_after']} HU, as qa measures it): model not written; --resume with more "
            f"--minutes{', or state a smaller --noise-sd' if method != METHOD else ''} (run folder {run_dir})")
    metadata = _model_metadata(out, start_meta, config, picked, rows, state.seconds, config.adapt.seed)
    metadata["adaptation"]["check"] = check
    model_path = save_model(out, den.model, metadata=metadata)
    return AdaptResult(model_path, run_dir, state.epoch, state.seconds, rows)


def adapt_engine(model, optimizer, pairs, seconds: float, schedule: str, lr: float) -> Engine:
    """The training engine as ``adapt`` runs it, for ``seconds`` of wall time with nothing written
    (the benchmarks): :data:`STEPS_PER_EPOCH` steps an epoch on ``pairs`` with the masked loss, the
    rate following ``schedule`` over the budget, the pairs renewed before every epoch but the first."""
    return Engine(model, optimizer, pairs, masked_mse_loss, EngineConfig(
        steps_per_epoch=STEPS_PER_EPOCH, seconds=seconds, schedule=Schedule(
            lr=lr, kind=schedule, min_lr=MIN_LR_FRACTION * lr), refresh_first=True, log_fields=LOG_FIELDS,
        name="adapt epoch"), show_progress=False, to_device=lambda a: a)


def _render(run_dir: Path, rows: list[dict], shown: np.ndarray) -> None:
    frames = []
    for row in rows:
        frame = run_dir / "progress" / f"epoch_{row['epoch']:04d}.npy"
        if frame.is_file():
            denoised = np.load(frame, allow_pickle=False).astype(np.float32)
            frames.append(ProgressFrame(shown, denoised, None, row["epoch"], row["train_loss"], None, None))
    if frames:
        progress_gif(frames, run_dir / "progress.gif", window=(-160.0, 240.0), max_side=256)
    training_curves(rows, run_dir / "curves.png")


def _model_metadata(out: Path, start: dict, config: AdaptRun, series: Slices, rows: list[dict], seconds: float,
                    seed: int) -> dict:
    adapt, noise = config.adapt, config.noise
    options = "" if noise is None else f" {noise.option()}"
    record = {"method": adapt.method, "description": DESCRIPTIONS[adapt.method]}
    if noise is not None:
        record["noise_model"] = noise.model_dump()
    return {
        "name": out.name,
        "kind": "ct-denoise model",
        "package_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "normalization": start["normalization"],
        "noise": {**(start.get("noise") or {}), "blind": True},
        "adaptation": {
            **record,
            "series": series.record(),
            "from_model": adapt.from_model,
            "epochs": rows[-1]["epoch"] if rows else 0,
            "steps": rows[-1]["step"] if rows else 0,
            "seconds": round(seconds, 1),
            "seed": seed,
            "optimizer": {"kind": "adam", "lr": adapt.lr, "schedule": adapt.schedule},
            "final_train_loss": rows[-1]["train_loss"] if rows else None,
            "final_val_loss": rows[-1]["val_loss"] if rows else None,
        },
        "adapted_from": {key: start.get(key) for key in ("name", "training", "validation", "reproduce")
                         if key in start},
        "reproduce": [f"ct-denoise adapt SERIES_DIR --out {out.name} --epochs {rows[-1]['epoch'] if rows else 0} "
                      f"--seed {seed}{options}" + ("" if adapt.from_model.startswith("default_ct@")
                                                    else f" --from {adapt.from_model}")],
    }


def summary(result: AdaptResult) -> str:
    last = result.log[-1] if result.log else {}
    return (f"adapted in {result.seconds / 60:.1f} min, {result.epochs} epochs, final loss "
            f"{last.get('train_loss', float('nan')):.3e} -> {result.model_path} (run folder {result.run_dir})")


