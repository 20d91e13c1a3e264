"""Job: write noisy copies of CT files (``ct-denoise noise``).

Gaussian (``--sigma``), simulated low dose (``--dose``: Poisson noise on a
parallel-beam sinogram, FBP) or scan-matched (``--matched F``: what a scan
of the same scanner at the fraction F of its dose would add, synthesized
from the noise model measured on the series itself, its spectrum and SD map:
:mod:`denoise.scanner_noise`).

Each image gets its own random stream, derived from the seed and the
source's SOP Instance UID (its relative path when it has none), so results do
not depend on file order, folder layout or worker count. The stream's name is
part of the output's SOP Instance UID.

A NIfTI INPUT (``.nii``/``.nii.gz``, values HU after the header's scaling) is
one volume (:func:`run_nifti`): each slice z gets the stream of (seed, the
file's name, z); the noisy volume keeps the input's affine and header, its
``descrip`` saying what was added.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.sr.codedict import codes

from denoise.batch import BatchReport, UsageError, VolumeReport, check_paths, run_batch
from denoise.dicom.identity import Derivation
from denoise.dicom.scan import CTFile
from denoise.noise import DEFAULT_VIEWS, add_gaussian, noisy_line_integrals, project, reconstruct

log = logging.getLogger(__name__)


def file_rng(seed: int, key: str) -> np.random.Generator:
    """A generator for one file: independent of processing order."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest])


def stream_name(source: CTFile) -> str:
    """What names an image's noise stream: its SOP Instance UID, else its relative path."""
    return source.sop_uid or str(source.relpath)


@dataclass(frozen=True)
class NoiseJob:
    """Gaussian (``sigma_hu``), low-dose (``i0``) or scan-matched (``matched``, a dose
    fraction, with the measured noise ``models`` of the series as (SeriesInstanceUID,
    JSON) pairs) noise; exactly one is set.

    With ``clean=True`` (low-dose only) the job emits the pair's clean
    reference instead: the FBP of the noiseless sinogram.
    """

    sigma_hu: float | None = None
    i0: float | None = None
    seed: int = 0
    n_views: int = DEFAULT_VIEWS
    clean: bool = False
    matched: float | None = None
    models: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if sum(v is not None for v in (self.sigma_hu, self.i0, self.matched)) != 1:
            raise ValueError("give exactly one of --sigma (Gaussian, HU), --dose (low-dose I0) or --matched "
                             "(scan-matched, a dose fraction)")
        if self.matched is not None and not 0 < self.matched < 1:
            raise ValueError(f"--matched must be a dose fraction between 0 and 1 (0.25: quarter dose), "
                             f"got {self.matched}")
        if self.sigma_hu is not None and not self.sigma_hu > 0:
            raise ValueError(f"--sigma must be > 0 HU, got {self.sigma_hu}")
        if self.i0 is not None and not self.i0 > 0:
            raise ValueError(f"--dose must be > 0 photons, got {self.i0}")
        if self.clean and self.i0 is None:
            raise ValueError("a clean reference exists only for low-dose noise (--dose)")

    @property
    def derivation(self) -> Derivation:
        if self.matched is not None:
            what = f"matched dose={self.matched:g}"
            text = (f"Scan-matched noise: what a scan at {self.matched:g} of this one's dose adds, synthesized "
                    f"from the noise spectrum and SD map measured on its series, seed {self.seed}")
            short = f"matched dose {self.matched:g} seed {self.seed}"
        elif self.sigma_hu is not None:
            what = f"gaussian sigma={self.sigma_hu:g} HU"
            text = f"Gaussian noise, sigma {self.sigma_hu:g} HU, seed {self.seed}"
            short = f"noise {self.sigma_hu:g} HU seed {self.seed}"
        else:
            what = f"low-dose I0={self.i0:g} views={self.n_views}"
            text = (f"Simulated low-dose CT: Poisson noise at I0 {self.i0:g} photons per bin, "
                    f"{self.n_views} parallel-beam views, FBP (ramp), seed {self.seed}")
            short = f"low dose I0 {self.i0:g} {self.n_views}v seed {self.seed}"
        if self.clean:
            return Derivation(key=f"ct-denoise noise-reference {what}",
                              description=f"Noiseless reference (FBP of the noiseless sinogram) "
                              f"for: {text}; by ct-denoise",
                              series_suffix=f"FBP reference I0 {self.i0:g} {self.n_views}v",
                              code=codes.DCM.ImageProcessing)
        # Gaussian noise is added pixel by pixel (CID 7203); a low-dose simulation re-reconstructs the slice.
        code = codes.DCM.ImageProcessing if self.i0 is not None else codes.DCM.PixelByPixelAddition
        return Derivation(key=f"ct-denoise noise {what} seed={self.seed}",
                          description=f"{text}; added by ct-denoise", series_suffix=short, code=code)

    def build(self) -> NoiseJob:
        return self

    def uid_entropy(self, source: CTFile) -> str:
        """The name of this image's noise stream (see :func:`file_rng`)."""
        return f"stream {stream_name(source)}"

    def __call__(self, hu: np.ndarray, source: CTFile) -> np.ndarray:
        rng = file_rng(self.seed, stream_name(source))
        if self.sigma_hu is not None:
            return add_gaussian(hu, sigma_hu=self.sigma_hu, rng=rng)
        if self.matched is not None:
            return self._matched(hu, source, rng)
        if source.pixel_spacing is None:
            raise ValueError("low-dose noise needs PixelSpacing, which this file lacks")
        spacing = float(np.mean(source.pixel_spacing))
        return np.stack([self._dose(frame, spacing, rng) for frame in hu])

    def _matched(self, hu: np.ndarray, source: CTFile, rng: np.random.Generator) -> np.ndarray:
        from denoise.scanner_noise import NoiseModel

        found = dict(self.models).get(source.series_uid)
        if found is None:
            raise ValueError("no noise model could be measured on this file's series (scan-matched noise needs "
                             "evenly spaced neighbouring slices)")
        model = NoiseModel.from_dict(json.loads(found))
        scale = np.float32(np.sqrt(1.0 / self.matched - 1.0))
        return np.stack([frame + scale * model.synthesize(frame, rng, pixel_spacing=source.pixel_spacing)
                         for frame in hu])

    def _dose(self, frame: np.ndarray, spacing: float, rng: np.random.Generator) -> np.ndarray:
        """One reconstruction per frame: the noisy FBP, or with ``clean`` the noiseless one
        (as denoise.noise.low_dose_pair makes the pair, without the half not asked for)."""
        proj = project(frame, pixel_spacing_mm=spacing, n_views=self.n_views)
        if self.clean:
            return reconstruct(proj, proj.line_integrals)
        return reconstruct(proj, noisy_line_integrals(proj, i0=self.i0, rng=rng))


def run(input_path, output_root, *, sigma_hu: float | None = None, i0: float | None = None,
        seed: int = 0, n_views: int = DEFAULT_VIEWS, clean: bool = False, force: bool = False,
        workers: int = 1, on_outcome=None, on_plan=None, allow_non_hu: bool = False,
        on_scan=None, matched: float | None = None) -> BatchReport | VolumeReport:
    """Write noisy copies of every CT file under ``input_path`` to
    ``output_root`` (or, with ``clean``, the low-dose pair's clean reference);
    a NIfTI volume goes to :func:`run_nifti`."""
    from denoise.nifti import is_nifti_path

    if is_nifti_path(input_path):
        return run_nifti(input_path, output_root, sigma_hu=sigma_hu, i0=i0, seed=seed, n_views=n_views, clean=clean,
                         force=force, matched=matched)
    job = NoiseJob(sigma_hu=sigma_hu, i0=i0, seed=seed, n_views=n_views, clean=clean, matched=matched)
    if matched is not None:
        job = dataclasses.replace(job, models=measured_models(Path(input_path), allow_non_hu=allow_non_hu))
    return run_batch(input_path, output_root, job, force=force, workers=workers,
                     on_outcome=on_outcome, on_plan=on_plan, allow_non_hu=allow_non_hu, on_scan=on_scan)


def measured_models(root: Path, *, allow_non_hu: bool = False) -> tuple[tuple[str, str], ...]:
    """The noise model of every series under ``root`` that one can be measured on (as JSON)."""
    from denoise.dicom.scan import scan
    from denoise.scanner_noise import measure_series

    if not root.exists():
        return ()  # run_batch says what is wrong with the input
    models = []
    for series in scan(root, allow_non_hu=allow_non_hu).series:
        try:
            models.append((series.uid, json.dumps(measure_series(series).to_dict())))
        except ValueError as exc:
            log.warning("%s: no noise model (%s); its files are not given matched noise", series.description
                        or "a series", exc)
    return tuple(models)


def targets(input_path, output_root, clean_root=None, *, workers: int = 1,
            allow_non_hu: bool = False) -> dict[str, Path]:
    """Where ``ct-denoise noise`` writes, by run: ``noisy`` (the noisy copies)
    and, with ``clean_root``, ``clean`` (the low-dose pair's clean reference).
    The clean folder is checked (:func:`denoise.batch.check_paths`) here, so a
    bad one is refused before the first run writes anything; so are options
    that mean nothing for a NIfTI volume (UsageError)."""
    from denoise.nifti import is_nifti_path

    given = [name for name, on in (("--workers", workers != 1), ("--allow-non-hu", allow_non_hu)) if on]
    if is_nifti_path(input_path) and given:
        raise UsageError(f"{' and '.join(given)}: not with NIfTI (a volume is processed in this process, in HU)")
    if clean_root is None:
        return {"noisy": Path(output_root)}
    if not is_nifti_path(input_path):  # a NIfTI volume's outputs are checked by run_nifti
        check_paths(Path(input_path), Path(clean_root))
    return {"noisy": Path(output_root), "clean": Path(clean_root)}


def noise_volume(volume, job: NoiseJob, *, model=None):
    """``volume`` with ``job``'s noise (or, with ``job.clean``, its clean reference), slice by slice, each
    slice z from the stream of (seed, the file's name, z); ``model``: the noise model of ``--matched``."""
    from denoise.volume import Volume

    name = Path(volume.source.get("file") or "volume").name
    pixel = tuple(volume.spacing_mm[1:])
    out = []
    for z, frame in enumerate(volume.hu):
        rng = file_rng(job.seed, f"{name} z={z}")
        if job.sigma_hu is not None:
            out.append(add_gaussian(frame[None], sigma_hu=job.sigma_hu, rng=rng)[0])
        elif job.matched is not None:
            scale = np.float32(np.sqrt(1.0 / job.matched - 1.0))
            out.append(frame + scale * model.synthesize(frame, rng, pixel_spacing=pixel))
        else:
            out.append(job._dose(frame, float(np.mean(pixel)), rng))
    return Volume(np.stack(out), volume.spacing_mm, volume.affine, dict(volume.source),
                  derivation=job.derivation, header=volume.header)


def run_nifti(input_path, output, *, sigma_hu: float | None = None, i0: float | None = None, seed: int = 0,
              n_views: int = DEFAULT_VIEWS, clean: bool = False, force: bool = False,
              matched: float | None = None):
    """:func:`run` for a NIfTI volume: written to ``output`` when it ends in ``.nii``/``.nii.gz``,
    else to ``output``/<input's name>; UsageError (one line) for a bad input or an existing output."""
    from denoise.batch import UsageError
    from denoise.nifti import is_nifti_path, read_nifti, write_nifti
    from denoise.scanner_noise import measure_volume
    from denoise.text import one_line

    input_path, output = Path(input_path), Path(output)
    try:
        job = NoiseJob(sigma_hu=sigma_hu, i0=i0, seed=seed, n_views=n_views, clean=clean, matched=matched)
        volume = read_nifti(input_path)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    target = output if is_nifti_path(output) else output / input_path.name
    if target.resolve() == input_path.resolve():
        raise UsageError(f"{target}: writing there would overwrite the input file {input_path}")
    if target.is_dir() or (target.exists() and not force):
        raise UsageError(f"{target} exists; use --force to overwrite it")
    report = VolumeReport(str(input_path), str(output), command="noise")
    report.settings = {"sigma_hu": sigma_hu, "dose_i0": i0, "views": n_views if i0 is not None else None,
                       "matched": matched, "seed": seed, "clean_reference": clean,
                       "derivation": job.derivation.description}
    entry = {"input": str(input_path), "slices": volume.shape[0]}
    try:
        model = measure_volume(volume) if matched is not None else None
        write_nifti(noise_volume(volume, job, model=model), target, like=volume, force=force)
        entry["output"] = str(target)
    except (ValueError, OSError) as exc:
        entry["reason"] = one_line(str(exc))
    report.volumes.append(entry)
    return report
