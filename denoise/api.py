"""The Python API: read a CT volume, denoise it, write it back, measure it.

>>> import denoise as ctd
>>> from denoise.samples import sample_path
>>> vol = ctd.read(sample_path("CT_small.dcm"))     # a DICOM file or folder, or a .nii/.nii.gz
>>> out = ctd.denoise(vol, strength="medium")        # Volume in, Volume out
>>> out.hu.shape == vol.hu.shape
True

:func:`denoise` runs the model as ``ct-denoise denoise`` does (the same
defaults, the same neighbour slices for 2.5-D models), and :func:`write`
writes the derived DICOM series ``ct-denoise denoise`` would (the same UIDs,
DerivationDescription and batch rules: :mod:`denoise.batch`), so the two give
the same pixels. Every error is one line.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from pydicom.sr.codedict import codes

from denoise import __version__
from denoise.conditioning import DEFAULT_STRENGTH, parse_strength
from denoise.dicom.identity import Derivation
from denoise.inference import DEFAULT_ENSEMBLE, ENSEMBLE_SIZES, Denoiser
from denoise.neighbours import MAX_DISTANCE_MM, MAX_OVERLAP
from denoise.volume import Volume, as_hu, check_spacing, ct_range_problem, read_dicom

__all__ = ["QAReport", "Volume", "denoise", "load_denoiser", "qa", "read", "write"]

# the CLI's option names in messages the API passes on, and what they are called here
_API_NAMES = (("--noise-sd", "noise_sd"), ("--strength", "strength"), ("--ensemble", "ensemble"),
              ("pass --model", "pass model="), ("--model", "model"),
              ("--tile", "tile"), ("--overlap", "overlap"))


def read(path: str | os.PathLike, *, series: int | str | None = None) -> Volume:
    """Read a CT volume: a DICOM series (a file or a folder) or a NIfTI file.

    Parameters
    ----------
    path : str or path-like
        A ``.nii``/``.nii.gz`` file (:func:`denoise.nifti.read_nifti`: values
        are HU after the header's scaling; a range that is not CT is refused),
        or a DICOM file or folder holding one CT series in HU
        (:func:`denoise.volume.read_dicom`).
    series : int or str, optional
        DICOM only, when the folder holds several series: its number in the
        ``#`` column of ``ct-denoise info`` or its Series Instance UID (as
        ``ct-denoise adapt --series`` takes them).

    Returns
    -------
    Volume
        ``hu`` (Z, Y, X) float32, ``spacing_mm`` (z, y, x), ``affine`` (RAS+),
        ``source`` (no patient identifiers).

    Raises
    ------
    FileNotFoundError, ValueError
        With a one-line reason.

    Examples
    --------
    >>> from denoise.samples import sample_path
    >>> vol = read(sample_path("CT_small.dcm"))
    >>> vol.shape, vol.source["kind"], vol.source["kernel"]
    ((1, 128, 128), 'dicom', 'STANDARD')
    >>> read("missing-folder")
    Traceback (most recent call last):
    ...
    FileNotFoundError: missing-folder: no such file or folder
    """
    from denoise.nifti import is_nifti_path, read_nifti

    if is_nifti_path(path):
        if series is not None:
            raise ValueError("series= picks a DICOM series; a NIfTI file holds one volume")
        return read_nifti(path)
    return read_dicom(path, series=series)


def denoise(data, *, strength=DEFAULT_STRENGTH, model: str | os.PathLike | Denoiser | None = None,
            noise_sd: float | None = None, ensemble: int = DEFAULT_ENSEMBLE, device: str = "cpu",
            tile: int | None = None, overlap: float = 0.25):
    """Denoise CT in HU with the model, as ``ct-denoise denoise`` does.

    Parameters
    ----------
    data : Volume or ndarray
        A :class:`Volume`, or HU as a 2-D (Y, X) slice or a 3-D (Z, Y, X)
        stack. A 2.5-D model takes each slice's neighbours along Z: in a
        DICOM volume the ones ``ct-denoise denoise`` would give it
        (:mod:`denoise.neighbours`), in a NIfTI or array volume those its
        ``spacing_mm`` (and a sidecar's slice thickness) allow by the same rule,
        in a 3-D array the adjacent slices (taken as evenly spaced, thin).
    strength : {"low", "medium", "high"} or float in 0..1
        The share of the network's correction applied (as ``--strength``);
        default ``"high"``, the command's.
    model : path or Denoiser, optional
        A model file (as ``--model``); default the bundled model. Or a model
        loaded by :func:`load_denoiser` (to load it once for many calls): it
        brings its own settings, so the settings below are then left at their
        defaults (another value is refused).
    noise_sd : float, optional
        The noise SD to remove, HU (as ``--noise-sd``); default: the network
        judges it.
    ensemble : {1, 2, 4, 8}
        Flipped views averaged (as ``--ensemble``); default 2, the command's.
    device : {"cpu", "gpu"}
    tile, overlap : optional
        Tiled inference with ``tile`` x ``tile`` tiles overlapping by ``overlap``
        (as ``--tile``, ``--overlap``); default whole slices (tiled beyond
        1024 x 1024 pixels).

    Returns
    -------
    Volume or ndarray
        The same kind and shape as ``data``: a Volume with the input's
        geometry, source and header, and a ``derivation`` saying what was done;
        an array of float32 HU.

    Raises
    ------
    ValueError
        One line: a shape, a value range that is not HU, a setting.

    Examples
    --------
    >>> import numpy as np
    >>> slice_ = np.full((64, 64), -1000.0); slice_[16:48, 16:48] = 40.0
    >>> out = denoise(slice_)
    >>> out.shape, out.dtype
    ((64, 64), dtype('float32'))
    >>> denoise(np.stack([slice_] * 3), strength="low", ensemble=1).shape
    (3, 64, 64)
    >>> denoise(np.zeros((4, 8, 8, 8)))
    Traceback (most recent call last):
    ...
    ValueError: give a 2-D (Y, X) slice or a 3-D (Z, Y, X) stack of HU, got shape (4, 8, 8, 8)
    """
    if isinstance(data, Volume):
        hu, step = data.hu, _volume_step(data)
    else:
        hu = as_hu(data, "the array")
        if hu.ndim not in (2, 3) or 0 in hu.shape:
            raise ValueError(f"give a 2-D (Y, X) slice or a 3-D (Z, Y, X) stack of HU, got shape {hu.shape}")
        problem = ct_range_problem(hu, whole=False)
        if problem:
            raise ValueError(f"the array does not look like CT in HU: {problem}")
        step = 1
    if isinstance(model, Denoiser):
        given = {"strength": strength != DEFAULT_STRENGTH, "noise_sd": noise_sd is not None,
                 "ensemble": ensemble != DEFAULT_ENSEMBLE, "device": device != "cpu", "tile": tile is not None,
                 "overlap": overlap != 0.25}
        if any(given.values()):
            raise ValueError(f"model is a loaded Denoiser, which has its own settings: give "
                             f"{', '.join(k for k, v in given.items() if v)} to load_denoiser instead")
        denoiser = model
    else:
        denoiser = load_denoiser(model, strength=strength, noise_sd=noise_sd, ensemble=ensemble, device=device,
                                 tile=tile, overlap=overlap)
    out = _run(denoiser, hu if hu.ndim == 3 else hu[None], step)
    if not isinstance(data, Volume):
        return out if hu.ndim == 3 else out[0]
    from denoise.denoising import derivation_for

    return Volume(out, data.spacing_mm, data.affine, dict(data.source),
                  derivation=_then(data.derivation, derivation_for(denoiser)), header=data.header)


def write(volume: Volume, path: str | os.PathLike, *, like: Volume | None = None, force: bool = False,
          dtype: str | None = None) -> list[Path]:
    """Write a volume: a derived DICOM series, or NIfTI when ``path`` ends in ``.nii``/``.nii.gz``.

    Parameters
    ----------
    volume : Volume
    path : str or path-like
        An output folder for DICOM (it mirrors the source's relative paths, as
        ``ct-denoise denoise`` does; never inside the source folder), or a
        ``.dcm`` file for a single-file source; a ``.nii``/``.nii.gz`` file.
    like : Volume, optional
        The volume ``volume`` was made from. DICOM needs a DICOM one (the
        default is ``volume``'s own source when it was read from DICOM): each
        file of that series gets its derived copy, by the CLI's rules (derived
        Series and SOP Instance UIDs, ImageType DERIVED, DerivationDescription
        from ``volume.derivation``, atomic writes). NIfTI keeps a NIfTI
        ``like``'s header and affine (:func:`denoise.nifti.write_nifti`).
    force : bool
        Overwrite outputs that are not this result (a DICOM output that is
        already this result is kept, as the CLI keeps it).
    dtype : {None, "float32", "int16"}
        NIfTI only (:func:`denoise.nifti.write_nifti`).

    Returns
    -------
    list of Path
        The files written (or found already written).

    Examples
    --------
    >>> import tempfile, pydicom
    >>> from denoise.samples import sample_path
    >>> vol = read(sample_path("CT_small.dcm"))
    >>> files = write(denoise(vol), tempfile.mkdtemp(), like=vol)
    >>> ds = pydicom.dcmread(files[0])
    >>> ds.ImageType[0], ds.SeriesInstanceUID != vol.source["series_uid"], "ct-denoise" in ds.DerivationDescription
    ('DERIVED', True, True)
    """
    from denoise.nifti import is_nifti_path, write_nifti

    if not isinstance(volume, Volume):
        raise ValueError(f"write takes a Volume, got {type(volume).__name__}: wrap an array in "
                         "denoise.Volume(hu, spacing_mm)")
    if like is not None and not isinstance(like, Volume):
        raise ValueError(f"like must be a Volume, got {type(like).__name__}")
    if is_nifti_path(path):
        return [write_nifti(volume, path, like=like, dtype=dtype, force=force)]
    if dtype is not None:
        raise ValueError("dtype is for NIfTI; derived DICOM keeps its source's stored values and scaling")
    ref = like if like is not None else volume
    if ref.kind != "dicom":
        raise ValueError(f"{path}: writing DICOM needs like=, the DICOM Volume this one was made from "
                         "(or a path ending in .nii or .nii.gz for NIfTI)")
    return _write_dicom(volume, ref, Path(path), force=force)


def qa(before, after=None, *, spacing_mm=None) -> QAReport:
    """The no-reference image quality measures of ``ct-denoise qa`` on volumes or arrays.

    Noise SD (HU), the noise power spectrum's peak and mean frequency
    (cycles/mm), the 10-90 % edge width (mm) and MTF50, measured where
    :func:`denoise.quality.plan` finds uniform tissue and edges on BEFORE;
    with AFTER (its processed version, same shape) both are measured in those
    places, and the residual BEFORE - AFTER and the change are scored too.
    Slices at most 3 mm apart give the NPS from their differences, as in
    ``ct-denoise qa``.

    Parameters
    ----------
    before, after : Volume or ndarray
        Volumes, or HU arrays (Y, X) or (Z, Y, X) of one shape.
    spacing_mm : (z, y, x), optional
        For arrays: without it the measures in mm are left out (the notes say so).

    Returns
    -------
    QAReport
        ``.to_dict()``: ``before`` (and ``after``) measures, ``residual_sd_hu``,
        ``residual_structure``, ``change``, the NPS and edge curves, ``notes``.

    Examples
    --------
    >>> from denoise.samples import sample_path
    >>> vol = read(sample_path("CT_small.dcm"))
    >>> report = qa(vol, denoise(vol))
    >>> sorted(report.to_dict()["change"])[:2], report.before["noise_sd_hu"] > report.after["noise_sd_hu"]
    (['edge_width_change_pct', 'mtf50_change_pct'], True)
    """
    from denoise import quality
    from denoise.quality.tally import Tally, compare_tallies
    from pipelines.qa import MIN_NEIGHBOUR_ROIS, NEIGHBOUR_GAP_MM

    b, pixel, gap = _qa_input(before, "before", spacing_mm)
    a = None
    if after is not None:
        a, _, _ = _qa_input(after, "after", spacing_mm)
        if a.shape != b.shape:
            raise ValueError(f"after {a.shape} and before {b.shape} differ in shape")
    tb, ta = Tally(), (Tally() if a is not None else None)
    notes: list[str] = []
    previous = None
    for k in range(len(b)):
        layout = quality.plan(b[k], pixel)
        notes += [n for n in layout.notes if n not in notes]
        tb.add(quality.measure(b[k], layout))
        if a is not None:
            ta.add(quality.measure(a[k], layout), quality.residual(b[k], a[k], layout))
        if previous is not None and gap is not None and 0 < gap <= NEIGHBOUR_GAP_MM:
            corners = quality.neighbour_rois(previous[0], b[k], previous[1], layout)
            tb.add_neighbour(quality.neighbour_nps(previous[0], b[k], corners, layout))
            if a is not None:
                ta.add_neighbour(quality.neighbour_nps(a[k - 1], a[k], corners, layout))
        previous = (b[k], layout)
    measures = compare_tallies(tb, ta, min_neighbour_rois=MIN_NEIGHBOUR_ROIS)
    return QAReport(paired=a is not None, slices=len(b), measures=measures, notes=tuple(notes))


@dataclass(frozen=True)
class QAReport:
    """What :func:`qa` measured; :meth:`to_dict` is the JSON-ready whole.

    ``measures`` holds :func:`denoise.quality.tally.compare_tallies`'s result,
    as a series of ``ct-denoise qa --json`` does: ``before`` and ``after``
    (``noise_sd_hu``, ``nps_peak_freq_mm``, ``nps_mean_freq_mm``,
    ``edge_width_mm``, ``mtf50_per_mm`` and the counts behind them; None where
    a quantity could not be measured), ``residual_sd_hu``,
    ``residual_structure``, ``change``, ``nps_method``, ``nps_curve``,
    ``esf_curve``.
    """

    paired: bool
    slices: int
    measures: dict = field(repr=False)
    notes: tuple[str, ...] = ()

    @property
    def before(self) -> dict:
        return self.measures["before"]

    @property
    def after(self) -> dict | None:
        return self.measures.get("after")

    @property
    def change(self) -> dict | None:
        return self.measures.get("change")

    def to_dict(self) -> dict:
        """Strict-JSON data (non-finite numbers as None)."""
        from denoise.atomic import finite

        return finite({"paired": self.paired, "slices": self.slices, **self.measures, "notes": list(self.notes)})


# ---------------------------------------------------------------- helpers


def load_denoiser(model: str | os.PathLike | None = None, *, strength=DEFAULT_STRENGTH, noise_sd: float | None = None,
                  ensemble: int = DEFAULT_ENSEMBLE, device: str = "cpu", tile: int | None = None,
                  overlap: float = 0.25) -> Denoiser:
    """Load a model with its settings (those of :func:`denoise`, checked with one-line errors under
    these names), to pass to :func:`denoise` as ``model=`` for many calls.

    Examples
    --------
    >>> import numpy as np
    >>> den = load_denoiser(strength="low", ensemble=1)
    >>> round(den.strength, 3), den.ensemble
    (0.333, 1)
    >>> denoise(np.full((32, 32), -1000.0), model=den).shape
    (32, 32)
    >>> denoise(np.full((32, 32), -1000.0), model=den, strength="medium")
    Traceback (most recent call last):
    ...
    ValueError: model is a loaded Denoiser, which has its own settings: give strength to load_denoiser instead
    """
    try:
        strength = parse_strength(strength)
    except ValueError:
        raise ValueError(f"strength must be low, medium, high or a number 0..1, got {strength!r}") from None
    if ensemble not in ENSEMBLE_SIZES:
        raise ValueError(f"ensemble must be one of {', '.join(map(str, ENSEMBLE_SIZES))}, got {ensemble!r}")
    if noise_sd is not None:
        try:
            noise_sd = float(noise_sd)
        except (TypeError, ValueError):
            noise_sd = math.nan
        if not (math.isfinite(noise_sd) and noise_sd >= 0):
            raise ValueError(f"noise_sd must be a number of HU >= 0, got {noise_sd!r}")
    if tile is not None and (not isinstance(tile, int | np.integer) or tile < 8):
        raise ValueError(f"tile must be a whole number of pixels >= 8, got {tile!r}")
    if not (isinstance(overlap, int | float) and 0 <= overlap < 1):
        raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
    try:
        return Denoiser.load(model, device=device, tile=tile, overlap=overlap, ensemble=ensemble, strength=strength,
                             noise_sd_hu=noise_sd)
    except ValueError as exc:
        message = str(exc)
        for cli, api in _API_NAMES:
            message = message.replace(cli, api)
        raise type(exc)(message) from exc


def _run(denoiser: Denoiser, hu: np.ndarray, step: int) -> np.ndarray:
    """Each slice of (Z, Y, X) ``hu`` denoised; a 2.5-D model gets the slices ``step``, ``2 step``...
    away on each side (None beyond the ends, as :func:`denoise.batch.read_neighbours` gives them)."""
    n, z = denoiser.model.neighbours, len(hu)
    if n == 0 or step < 1:
        return np.stack([denoiser(s) for s in hu])
    around = [d * step for d in range(-n, n + 1) if d]
    return np.stack([denoiser(hu[k], [hu[k + d] if 0 <= k + d < z else None for d in around]) for k in range(z)])


def _volume_step(volume: Volume) -> int:
    """How many slices apart a 2.5-D model's neighbours lie in ``volume`` (0: none): a DICOM volume's
    from its series (:func:`denoise.neighbours.neighbourhood`), another's by the same rule from its
    slice spacing and the thickness its source states (else taken as the spacing)."""
    if "neighbour_step" in volume.source:
        return int(volume.source["neighbour_step"] or 0)
    spacing = volume.spacing_mm[0]
    thickness = volume.source.get("slice_thickness_mm") or spacing
    step = max(1, math.ceil((1 - MAX_OVERLAP) * thickness / spacing - 1e-6))
    return step if step * spacing <= MAX_DISTANCE_MM + 1e-6 else 0


def _then(first: Derivation | None, second: Derivation) -> Derivation:
    """``second`` done after ``first`` (None: nothing before)."""
    if first is None:
        return second
    return Derivation(key=f"{first.key} | {second.key}",
                      description=f"{first.description}; then {second.description}"[:1024],
                      series_suffix=f"{first.series_suffix}; {second.series_suffix}", code=second.code,
                      software_versions=tuple(dict.fromkeys(first.software_versions + second.software_versions)))


def _pixels_derivation(volume: Volume) -> Derivation:
    """For pixels the API did not make (a volume built or changed by hand): named by their hash,
    so different pixels never share a derived UID."""
    digest = hashlib.sha256(np.ascontiguousarray(volume.hu).tobytes()).hexdigest()[:32]
    return Derivation(key=f"ct-denoise api pixels sha256={digest}",
                      description=f"Pixels given to the ct-denoise {__version__} Python API (not made by it)",
                      series_suffix=f"ct-denoise api {digest[:8]}", code=codes.DCM.ImageProcessing)


@dataclass
class _Slices:
    """The transform :func:`denoise.batch.process_file` runs: each source file's slices of ``hu``."""

    hu: np.ndarray
    by_file: dict  # resolved source path -> the z index of each of its frames, in frame order
    derivation: Derivation

    def __call__(self, hu: np.ndarray, source) -> np.ndarray:
        return self.hu[self.by_file[str(Path(source.path).resolve())]]


def _write_dicom(volume: Volume, like: Volume, out: Path, *, force: bool) -> list[Path]:
    from denoise.batch import FileJob, check_paths, output_file, process_file
    from denoise.dicom.scan import SkipFile, inspect_file
    from denoise.dicom.write import output_path

    src = like.source
    if volume.shape != like.shape:
        raise ValueError(f"volume {volume.shape} and like {like.shape} differ in shape: not the same series")
    if not np.allclose(volume.affine, like.affine, atol=1e-3):
        raise ValueError("volume and like lie on different voxel grids (their affines differ)")
    if volume.kind == "dicom" and volume.source.get("series_uid") != src.get("series_uid"):
        raise ValueError("volume was made from another series than like")
    root = Path(src["root"])
    check_paths(root, out)  # never into or over the input; a writable place (UsageError, a ValueError)
    single = output_file(root, out)
    if single is not None and len(src["paths"]) > 1:
        raise ValueError(f"{out}: a .dcm file takes one source file; the series has {len(src['paths'])}")
    by_file: dict[str, list[int]] = {}
    for z, (i, _) in sorted(enumerate(src["frames"]), key=lambda t: tuple(t[1])):  # in frame order
        by_file.setdefault(str(Path(src["paths"][i]).resolve()), []).append(z)
    transform = _Slices(volume.hu, by_file, volume.derivation or _pixels_derivation(volume))
    done, failed = [], []
    for path, rel in zip(src["paths"], src["relpaths"], strict=True):
        try:
            ct = inspect_file(Path(path), PurePosixPath(rel))
        except SkipFile as exc:
            raise ValueError(f"{rel}: {exc}") from None
        target = single if single is not None else output_path(out, ct.relpath)
        outcome = process_file(FileJob(ct, target), transform, force=force)
        if outcome.status == "failed":
            failed.append(outcome)
        else:
            done.append(target)
    if failed:
        error = OSError if failed[0].retry else ValueError
        reason = failed[0].reason.replace("use --force", "pass force=True")
        raise error(f"{len(failed)} of {len(src['paths'])} file(s) not written; {failed[0].relpath}: {reason}")
    return done


def _qa_input(data, name: str, spacing_mm) -> tuple[np.ndarray, tuple[float, float] | None, float | None]:
    """(Z, Y, X) HU, the pixel spacing (row, column) and the slice distance of a qa input."""
    if isinstance(data, Volume):
        return data.hu, (data.spacing_mm[1], data.spacing_mm[2]), data.spacing_mm[0]
    hu = as_hu(data, name)
    if hu.ndim not in (2, 3) or 0 in hu.shape:
        raise ValueError(f"{name}: give a 2-D (Y, X) slice or a 3-D (Z, Y, X) stack of HU, got shape {hu.shape}")
    problem = ct_range_problem(hu, whole=False)
    if problem:
        raise ValueError(f"{name} does not look like CT in HU: {problem}")
    if spacing_mm is None:
        return (hu if hu.ndim == 3 else hu[None]), None, None
    dz, dy, dx = check_spacing(spacing_mm)
    return (hu if hu.ndim == 3 else hu[None]), (dy, dx), dz
