"""The denoising transform of a batch: which model, tiling, self-ensemble,
strength and noise level (:class:`DenoiseJob`, a picklable recipe built once
per worker), and the derivation that names it in every derived object, so a
different model or setting makes a different derived series and an existing
output of *this* model is recognised as done. ``ct-denoise denoise`` and the
DICOM node (``serve``) both run it through :func:`denoise.batch.run_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.sr.codedict import codes

from denoise.batch import UsageError
from denoise.conditioning import DEFAULT_STRENGTH, strength_level, strength_name
from denoise.dicom.identity import Derivation
from denoise.dicom.scan import CTFile
from denoise.inference import DEFAULT_ENSEMBLE, Denoiser
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
    strength: str | float = DEFAULT_STRENGTH  # low/medium/high or 0..1 (denoise.conditioning.parse_strength)
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
    n = denoiser.model.neighbours
    how += f", with {n} neighbour slice(s) on each side where the series allows" if n else ""
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

    @property
    def context(self) -> int:
        """Neighbour slices on each side the model takes (0: 2-D)."""
        return self.denoiser.model.neighbours

    def __call__(self, hu: np.ndarray, source: CTFile, neighbours=None) -> np.ndarray:
        return self.denoiser.frames(hu, neighbours)


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
