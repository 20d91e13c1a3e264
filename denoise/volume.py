"""A CT volume in Hounsfield units with its geometry: :class:`Volume`, read
from a DICOM series (:func:`read_dicom`) or a NIfTI file (:mod:`denoise.nifti`).

Conventions
-----------
``hu`` is a (Z, Y, X) float32 array of HU: ``hu[z]`` is one slice, ``y`` its
row (top to bottom), ``x`` its column (left to right). ``spacing_mm`` is
(z, y, x): the distance between slices, between rows and between columns.

``affine`` is the 4 x 4 matrix of the NIfTI convention: it maps the voxel
indices ``(x, y, z, 1)`` of ``hu[z, y, x]`` to scanner coordinates in mm,
RAS+ (coordinates grow toward the patient's Right, Anterior and Superior).
It is exactly the affine a NIfTI file of the array ``hu.T`` (axes x, y, z)
would carry.

From DICOM (LPS+: x toward the patient's Left, y toward Posterior, z toward
Superior) it is::

    A_lps[:3, 0] = row cosine    x column spacing    (ImageOrientationPatient[:3], PixelSpacing[1])
    A_lps[:3, 1] = column cosine x row spacing       (ImageOrientationPatient[3:], PixelSpacing[0])
    A_lps[:3, 2] = (last slice's position - first's) / (Z - 1)  (the slice normal x spacing for one slice)
    A_lps[:3, 3] = ImagePositionPatient of the first slice
    affine = diag(-1, -1, 1, 1) @ A_lps                           (LPS -> RAS)

with the slices in the order :func:`denoise.dicom.scan.scan` gives them
(ascending along the slice normal), so a gantry tilt shows in the third
column. Without orientation or positions the axes are taken as LPS's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.multival import MultiValue

from denoise.dicom.geometry import frame_geometry, functional_group, slice_normal
from denoise.dicom.identity import Derivation
from denoise.dicom.pixels import PixelDataError, load_ct
from denoise.dicom.scan import ScanResult, Series, scan
from denoise.neighbours import neighbourhood
from denoise.text import one_line

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# What a CT volume in HU looks like: most voxels within this range (air to dense bone; metal and the
# scanner's padding outside the scan circle lie beyond it, but never most of a volume).
CT_HU_RANGE = (-1100.0, 4000.0)
MOSTLY = 0.5


def spacing_affine(spacing_mm) -> np.ndarray:
    """The affine of a volume known only by its spacing (z, y, x): LPS axes, origin 0.

    Examples
    --------
    >>> spacing_affine((2.0, 0.5, 0.5))
    array([[-0.5,  0. ,  0. ,  0. ],
           [ 0. , -0.5,  0. ,  0. ],
           [ 0. ,  0. ,  2. ,  0. ],
           [ 0. ,  0. ,  0. ,  1. ]])
    """
    dz, dy, dx = (float(v) for v in spacing_mm)
    return LPS_TO_RAS @ np.diag([dx, dy, dz, 1.0])


@dataclass(eq=False)
class Volume:
    """A CT volume: HU, spacing, the voxel-to-RAS affine and where it came from.

    Parameters
    ----------
    hu : (Z, Y, X) array
        Hounsfield units; kept as float32 (converted if given otherwise).
    spacing_mm : (z, y, x) floats
        Slice distance, row spacing, column spacing, in mm (all > 0).
    affine : (4, 4) array, optional
        Voxel ``(x, y, z, 1)`` to RAS+ mm (NIfTI convention, see the module
        docstring); default :func:`spacing_affine` of ``spacing_mm``.
    source : dict, optional
        Metadata, JSON-ready and without patient identifiers: ``kind``
        (``"dicom"``, ``"nifti"`` or ``"array"``), ``paths`` or ``file``,
        ``series_uid``, ``kernel`` where known, and what writing back needs.
    derivation : denoise.dicom.identity.Derivation, optional
        What was done to the source's pixels to get ``hu`` (set by
        :func:`denoise.api.denoise`; written into derived DICOM and NIfTI).
    header : nibabel header, optional
        A NIfTI source's header, kept for writing the result back.

    Raises
    ------
    ValueError
        One line naming what is wrong with a shape or value.

    Examples
    --------
    >>> import numpy as np
    >>> vol = Volume(np.full((2, 4, 5), -1000.0), (2.5, 0.7, 0.7))
    >>> vol
    Volume(hu=(2, 4, 5) float32 HU, spacing_mm=(2.5, 0.7, 0.7), kind='array')
    >>> Volume(np.zeros((4, 5)), (1, 1, 1))
    Traceback (most recent call last):
    ...
    ValueError: Volume.hu must be 3-D (Z, Y, X), got shape (4, 5); a single slice is hu[None]
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray | None = None
    source: dict = field(default_factory=dict)
    derivation: Derivation | None = field(default=None, repr=False)
    header: object | None = field(default=None, repr=False)

    def __post_init__(self):
        self.hu = as_hu(self.hu, "Volume.hu")
        if self.hu.ndim != 3:
            raise ValueError(f"Volume.hu must be 3-D (Z, Y, X), got shape {self.hu.shape}; "
                             "a single slice is hu[None]")
        if 0 in self.hu.shape:
            raise ValueError(f"Volume.hu has an empty axis: shape {self.hu.shape}")
        self.spacing_mm = check_spacing(self.spacing_mm)
        self.affine = spacing_affine(self.spacing_mm) if self.affine is None else check_affine(self.affine)
        if not isinstance(self.source, Mapping):
            raise ValueError(f"Volume.source must be a dict, got {type(self.source).__name__}")
        self.source = dict(self.source)
        self.source.setdefault("kind", "array")

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.hu.shape

    @property
    def kind(self) -> str:
        """Where it came from: ``dicom``, ``nifti`` or ``array``."""
        return str(self.source.get("kind", "array"))

    def __repr__(self) -> str:
        spacing = tuple(round(v, 4) for v in self.spacing_mm)
        return f"Volume(hu={self.hu.shape} float32 HU, spacing_mm={spacing}, kind={self.kind!r})"


def as_hu(values, name: str = "hu") -> np.ndarray:
    """``values`` as a float32 array; ValueError (one line) for non-numeric input."""
    try:
        array = np.asarray(values)
    except Exception as exc:  # noqa: BLE001 - ragged lists and the like
        raise ValueError(f"{name} must be a numeric array ({one_line(exc)})") from exc
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} must be a real numeric array of HU, got dtype {array.dtype}")
    return array.astype(np.float32, copy=False)


def check_spacing(spacing_mm) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in spacing_mm)
    except (TypeError, ValueError):
        raise ValueError(f"spacing_mm must be three numbers (z, y, x) in mm, got {spacing_mm!r}") from None
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing_mm must be three numbers > 0 (z, y, x) in mm, got {spacing_mm!r}")
    return values


def check_affine(affine) -> np.ndarray:
    try:
        a = np.array(affine, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("affine must be a 4 x 4 array of numbers") from None
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"affine must be a finite 4 x 4 array, got shape {a.shape}")
    if not np.allclose(a[3], [0, 0, 0, 1]):
        raise ValueError(f"affine's last row must be 0 0 0 1, got {a[3].tolist()}")
    if abs(np.linalg.det(a[:3, :3])) < 1e-9:
        raise ValueError("affine is singular: its voxel axes do not span space")
    return a


def ct_range_problem(hu, *, whole: bool = True) -> str | None:
    """Why ``hu`` does not look like CT in HU (one line), or None.

    A whole volume (``whole``) holds air below 0 HU and lies mostly within
    :data:`CT_HU_RANGE`; a normalized (0..1) or 8-bit (0..255) image, an MR-like
    positive-only range or CT stored values without their rescale do not. A
    patch (``whole=False``) may hold no air: only non-finite values, a 0..1 range
    and values mostly outside the range are refused.

    Examples
    --------
    >>> import numpy as np
    >>> ct_range_problem(np.array([-1000.0, 40.0, 1200.0])) is None
    True
    >>> ct_range_problem(np.array([0.0, 0.25, 1.0]))
    'values lie within 0..1: a normalized image, not HU'
    >>> ct_range_problem(np.array([0.0, 310.0, 2400.0]))
    'no value below 0 (no air): not CT in HU (MR? CT stored values without their rescale?)'
    """
    v = np.asarray(hu)
    if v.size == 0:
        return "no values"
    if not np.all(np.isfinite(v)):
        return "holds NaN or infinite values: not CT in HU"
    lo, hi = float(v.min()), float(v.max())
    if lo >= 0 and hi <= 1:
        return "values lie within 0..1: a normalized image, not HU"
    outside = float(np.mean((v < CT_HU_RANGE[0]) | (v > CT_HU_RANGE[1])))
    if outside > MOSTLY:
        return (f"{outside:.0%} of the values lie outside {CT_HU_RANGE[0]:g}..{CT_HU_RANGE[1]:g} HU "
                f"(range {lo:.6g}..{hi:.6g}): not CT in HU")
    if whole and lo >= 0:
        if hi <= 255 and np.all(v == np.round(v)):
            return "values lie within 0..255: an 8-bit image, not HU"
        return "no value below 0 (no air): not CT in HU (MR? CT stored values without their rescale?)"
    return None


def dicom_affine(orientation, first, last, n_slices: int, pixel_spacing, slice_spacing: float) -> np.ndarray:
    """The RAS+ affine of a DICOM series (see the module docstring).

    Parameters
    ----------
    orientation : (6,) ImageOrientationPatient, or None (LPS axes)
    first, last : (3,) ImagePositionPatient of the first and last slice, or None
    n_slices : int
    pixel_spacing : (row, column) mm
    slice_spacing : float
        mm along the normal, used when the positions do not give the step.

    Examples
    --------
    >>> dicom_affine([1, 0, 0, 0, 1, 0], [-10, -20, 5], [-10, -20, 11], 4, (0.5, 0.7), 2.0)
    array([[-0.7,  0. ,  0. , 10. ],
           [ 0. , -0.5,  0. , 20. ],
           [ 0. ,  0. ,  2. ,  5. ],
           [ 0. ,  0. ,  0. ,  1. ]])
    """
    if orientation is None:
        row, col = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    else:
        row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = slice_normal(np.concatenate([row, col]))
    if normal is None:
        row, col, normal = np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([0, 0, 1.0])
    a = np.eye(4)
    a[:3, 0] = row * float(pixel_spacing[1])
    a[:3, 1] = col * float(pixel_spacing[0])
    step = None
    if first is not None and last is not None and n_slices > 1:
        step = (np.asarray(last, float) - np.asarray(first, float)) / (n_slices - 1)
        if np.linalg.norm(step) < 1e-6:
            step = None
    a[:3, 2] = step if step is not None else normal * float(slice_spacing)
    a[:3, 3] = np.asarray(first, float) if first is not None else 0.0
    return LPS_TO_RAS @ a


def read_dicom(path: str | os.PathLike, *, series: int | str | None = None) -> Volume:
    """Read one CT series (a DICOM file or a folder) into a :class:`Volume`.

    Parameters
    ----------
    path : file or folder
        Scanned as ``ct-denoise`` scans (:func:`denoise.dicom.scan.scan`): CT in
        HU only, ordered along the slice normal.
    series : int or str, optional
        Which series, when the folder holds several: its number in the ``#``
        column of ``ct-denoise info`` (as ``adapt --series`` takes it), or its
        Series Instance UID (in full, or its tail as ``info`` shows it).

    Raises
    ------
    FileNotFoundError, ValueError
        One line: no CT series, several without ``series``, slices of
        different sizes, an unreadable slice.

    Examples
    --------
    >>> from denoise.samples import sample_path
    >>> vol = read_dicom(sample_path("CT_small.dcm"))
    >>> vol, vol.source["kernel"], vol.source["series_number"]
    (Volume(hu=(1, 128, 128) float32 HU, spacing_mm=(5.0, 0.6615, 0.6615), kind='dicom'), 'STANDARD', 1)
    """
    root = Path(path)
    result = scan(root)  # FileNotFoundError for a missing path
    return series_volume(pick_series(result, series, root), root)


def series_volume(chosen: Series, root: str | os.PathLike) -> Volume:
    """The :class:`Volume` of one series that :func:`denoise.dicom.scan.scan` found under ``root``
    (for a caller that has scanned already, e.g. one volume per series); see :func:`read_dicom`."""
    root = Path(root)
    files = chosen.files
    if len({(f.rows, f.columns) for f in files}) > 1:
        raise ValueError(f"{root}: the series holds slices of different sizes "
                         f"({', '.join(f'{r}x{c}' for r, c in chosen.sizes)}): not one volume")
    slices, frames, origins, positions = [], [], [], []  # per slice: HU, [file, frame], its IPP, along the normal
    orientation = pixel_spacing = kernel = None
    for i, ct in enumerate(files):
        try:
            image = load_ct(ct.path)
        except PixelDataError as exc:
            raise ValueError(f"{ct.relpath}: {exc}") from exc
        geom = frame_geometry(image.dataset)
        if i == 0:
            orientation, pixel_spacing = geom.orientation, geom.pixel_spacing
            kernel = _kernel(image.dataset)
        normal = slice_normal(orientation) if orientation is not None else None
        for k, frame in enumerate(image.hu):
            pos = geom.positions[k] if k < len(geom.positions) else None
            slices.append(frame)
            frames.append([i, k])
            origins.append(pos)
            positions.append(None if pos is None or normal is None else float(np.dot(pos, normal)))
    order = list(range(len(slices)))
    if all(p is not None for p in positions):
        order.sort(key=lambda j: positions[j])  # stable: series order where positions tie
    hu = np.stack([slices[j] for j in order])
    along = [positions[j] for j in order]
    warnings = list(chosen.warnings)
    gaps = np.diff(along) if all(p is not None for p in along) and len(along) > 1 else np.array([])
    spacing_z = float(np.median(np.abs(gaps))) if gaps.size else 0.0
    if spacing_z <= 0:
        spacing_z = chosen.slice_thickness or 1.0
        if len(along) > 1:
            warnings.append(f"slice spacing unknown: taken as {spacing_z:g} mm")
    if pixel_spacing is None:
        pixel_spacing = (1.0, 1.0)
        warnings.append("no PixelSpacing: taken as 1 mm")
    first, last = origins[order[0]], origins[order[-1]]
    affine = dicom_affine(orientation, first, last, len(order), pixel_spacing, spacing_z)
    around = neighbourhood(chosen)
    first_file = files[0]
    source = {
        "kind": "dicom",
        "root": str(root.resolve()),
        "paths": [str(f.path) for f in files],
        "relpaths": [str(f.relpath) for f in files],
        "frames": [frames[j] for j in order],  # per slice z: [index into paths, frame of that file]
        "series_uid": chosen.uid,
        "series_number": chosen.number,
        "study_uid": first_file.study_uid,
        "frame_of_reference_uid": first_file.frame_of_reference_uid,
        "description": chosen.description,
        "kernel": kernel,
        "slice_thickness_mm": chosen.slice_thickness,
        "neighbour_step": around.step if around.paths else 0,  # slices between a 2.5-D model's neighbours
        "neighbour_note": around.reason,
        "warnings": warnings,
    }
    return Volume(hu, (spacing_z, *pixel_spacing), affine, source)


def pick_series(result: ScanResult, wanted: int | str | None, root: Path) -> Series:
    """The one series of a scan; ValueError (one line) otherwise. ``wanted`` names it as
    ``ct-denoise adapt --series`` does: its number in the ``#`` column of ``ct-denoise info``
    (1-based, in the order listed), or its Series Instance UID, in full or its tail as the table
    shows it; a number that is another series' Series Number is refused as ambiguous."""
    found = result.series
    if not found:
        bad = [s for s in result.skipped if s.bad] or result.skipped
        why = f": {bad[0].relpath}: {bad[0].reason}" if bad else ""
        raise ValueError(f"{root}: no CT series in HU found ({len(result.skipped)} file(s) skipped){why}")
    if wanted is None:
        if len(found) > 1:
            raise ValueError(f"{root} holds {len(found)} CT series; pick one with series=N (1..{len(found)}: "
                             "the # column of ct-denoise info) or series=UID")
        return found[0]
    text = str(wanted).strip()
    tail = text.removeprefix("…")
    picked = [s for k, s in enumerate(found, 1) if text in (s.uid, str(k))]
    picked = picked or [s for s in found if len(tail) >= 6 and s.uid.endswith(tail)]
    if len(picked) != 1:
        raise ValueError(f"{root}: {'no' if not picked else 'more than one'} series {text!r} (give its number "
                         f"1..{len(found)} in the # column of ct-denoise info, or its SeriesInstanceUID)")
    chosen = picked[0]
    if text == str(found.index(chosen) + 1):
        other = [k for k, s in enumerate(found, 1) if s.number == int(text) and s is not chosen]
        if other:
            raise ValueError(f"{root}: series={text} is #{text} in ct-denoise info (series no. {chosen.number}), "
                             f"but series no. {text} is #{other[0]}: give the series' UID to say which")
    return chosen


def _kernel(ds) -> str | None:
    """ConvolutionKernel (values joined by "/"), or Enhanced CT's first frame's; None where absent."""
    try:
        value = ds.get("ConvolutionKernel")
        if value in (None, ""):
            item = functional_group(ds, 0, "CTReconstructionSequence")
            value = item.get("ConvolutionKernel") if item is not None else None
    except Exception:  # noqa: BLE001 - a malformed value: unknown
        return None
    if value in (None, ""):
        return None
    values = list(value) if isinstance(value, list | tuple | MultiValue) else [value]
    return "/".join(str(v).strip() for v in values if str(v).strip()) or None
