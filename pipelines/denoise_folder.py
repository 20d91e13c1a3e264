"""Job: denoise a DICOM file or folder with a trained model (``ct-denoise denoise``).

Every batch rule of :mod:`denoise.batch` holds (mirror paths, atomic writes,
resume, one-line reasons, exit codes). The derivation key names the model's
weights hash and the tiling, so a different model or tiling makes a different
derived series, and an existing output of *this* model is recognised as done.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.sr.codedict import codes

from denoise.batch import BatchReport, UsageError, check_paths, run_batch
from denoise.dicom.scan import CTFile
from denoise.dicom.write import Derivation
from denoise.inference import DEFAULT_ENSEMBLE, DEFAULT_STRENGTH, Denoiser, strength_level, strength_name
from denoise.nn import ModelFileError


@dataclass(frozen=True)
class DenoiseJob:
    """Picklable recipe: which model, tiling and device; built once per worker."""

    model_path: str | None = None  # None: the bundled default model
    tile: int | None = None
    overlap: float = 0.25
    device: str = "cpu"
    threads: int | None = None  # convolution threads in this process (None: one per core)
    ensemble: int = DEFAULT_ENSEMBLE  # geometric self-ensemble views (denoise.inference)
    strength: str | float = DEFAULT_STRENGTH  # low/medium/high or 0..1 (denoise.inference.parse_strength)
    noise_sd_hu: float | None = None  # noise to remove; None: the network judges it (blind)

    def build(self) -> DenoiseTransform:
        if self.threads is not None:
            from denoise.nn import set_num_threads

            set_num_threads(self.threads)
        denoiser = Denoiser.load(self.model_path, device=self.device, tile=self.tile, overlap=self.overlap,
                                 ensemble=self.ensemble, strength=self.strength, noise_sd_hu=self.noise_sd_hu)
        return DenoiseTransform(denoiser, derivation_for(denoiser))


def derivation_for(denoiser: Denoiser) -> Derivation:
    """What was done, from the loaded denoiser's own settings (model, tiling, views, strength, noise level)."""
    tile, overlap = denoiser.tile, denoiser.overlap
    how = "whole slice" if tile is None else f"tiles {tile} px, overlap {overlap:g}"
    how += f", mean of {denoiser.ensemble} flipped views" if denoiser.ensemble > 1 else ""
    level = ("noise SD judged by the network" if denoiser.noise_sd_hu is None
             else f"noise SD {denoiser.noise_sd_hu:g} HU given")
    how += f", strength {strength_name(denoiser.strength)}, {level}"
    short = f"denoised {strength_level(denoiser.strength) or format(denoiser.strength, '.3g')}"
    short += f", SD {denoiser.noise_sd_hu:g} HU" if denoiser.noise_sd_hu is not None else ""
    short += f", {denoiser.ensemble}v" + ("" if tile is None else f", tiles {tile}")
    short += f", {denoiser.model_id.rsplit('@', 1)[-1][:8]}"
    return Derivation(
        key=f"ct-denoise denoise model={denoiser.model_id} tile={tile} overlap={overlap:g} "
            f"ensemble={denoiser.ensemble} strength={denoiser.strength:.6g} noise_sd={denoiser.noise_sd_hu}",
        description=f"Denoised by ct-denoise (NumPy convolutional autoencoder {denoiser.model_id}, {how})",
        series_suffix=short, code=codes.DCM.Smoothing, software_versions=(denoiser.model_id,))


@dataclass
class DenoiseTransform:
    denoiser: Denoiser
    derivation: Derivation

    def __call__(self, hu: np.ndarray, source: CTFile) -> np.ndarray:
        return self.denoiser.frames(hu)


@dataclass(frozen=True)
class Prebuilt:
    """A factory holding an already built transform (in-process runs load the model once)."""

    transform: DenoiseTransform

    def build(self) -> DenoiseTransform:
        return self.transform


def build_checked(job: DenoiseJob) -> DenoiseTransform:
    """Load the model in the driver so a bad model path is a usage error, not N failures."""
    try:
        return job.build()
    except (ModelFileError, ValueError, OSError) as exc:
        raise UsageError(str(exc)) from exc


def run(input_path, output_root, *, model_path=None, tile: int | None = None, overlap: float = 0.25,
        device: str = "cpu", force: bool = False, workers: int = 1, scheduler: str | None = None,
        on_outcome=None, on_plan=None, ensemble: int = DEFAULT_ENSEMBLE, strength=DEFAULT_STRENGTH,
        noise_sd_hu: float | None = None, allow_non_hu: bool = False, on_scan=None) -> BatchReport:
    """Denoise every CT file under ``input_path`` into ``output_root``."""
    if tile is not None and tile < 8:
        raise UsageError(f"--tile must be >= 8 pixels, got {tile}")
    if not 0 <= overlap < 1:
        raise UsageError(f"--overlap must be in [0, 1), got {overlap}")
    check_paths(Path(input_path), Path(output_root))  # an unwritable output fails before the model loads
    job = DenoiseJob(None if model_path is None else str(model_path), tile, overlap, device,
                     threads=1 if workers > 1 or scheduler else None, ensemble=ensemble, strength=strength,
                     noise_sd_hu=noise_sd_hu)
    built = build_checked(dataclasses.replace(job, threads=None))  # a bad --ensemble is a usage error here
    in_process = workers == 1 and scheduler is None
    return run_batch(input_path, output_root, Prebuilt(built) if in_process else job, force=force,
                     workers=workers, scheduler=scheduler,
                     on_outcome=on_outcome, on_plan=on_plan, allow_non_hu=allow_non_hu, on_scan=on_scan)
