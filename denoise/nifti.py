"""NIfTI-1/NIfTI-2 volumes (``.nii``, ``.nii.gz``) in and out, with nibabel.

Reading (:func:`read_nifti`)
    The stored values become HU through the header's ``scl_slope`` and
    ``scl_inter`` (HU = stored x slope + inter; no scaling when the slope is
    0 or unset), as every NIfTI reader does: nothing else is assumed. A range
    that does not look like CT in HU is refused with the reason
    (:func:`denoise.volume.ct_range_problem`). The voxel axes are put in the
    order (Z, Y, X) of a DICOM image: Z is the file's third axis (the slice
    axis, as dcm2niix writes it), and the axes are flipped or swapped to the
    directions DICOM gives an image of that plane (axial: x toward the
    patient's left, y toward posterior, z toward superior; coronal: L, I, P;
    sagittal: P, I, R). So a NIfTI made from a DICOM series reads as the
    same array as the series itself. The affine is changed to match: it still
    maps every voxel to the same place. A JSON sidecar (BIDS, as dcm2niix
    writes one) beside the file gives the kernel and slice thickness where it
    states them.

Writing (:func:`write_nifti`)
    A volume read from NIfTI (or written ``like`` one) goes back in its file's
    axis order with that file's affine and header, bit for bit but for the
    data type, the scaling, the dimensions and ``descrip``, which records what
    was done (at most 80 bytes). Integer files stay integer at their scaling
    (values rounded to its step, as derived DICOM rounds to stored values);
    float files stay float. Any other volume is written with its own affine
    (sform and qform code 1, scanner) as int16 (slope 1) when every value is
    a whole number of HU within int16, else float32: HU exact either way.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    aff2axcodes,
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from denoise import __version__
from denoise.atomic import atomic_path
from denoise.dicom.scan import positive_number
from denoise.text import one_line
from denoise.volume import Volume, check_affine, ct_range_problem

SUFFIXES = (".nii", ".nii.gz")
DESCRIP_BYTES = 79  # the header's descrip is char[80], NUL-terminated
# the voxel axes (x, y, z) a DICOM image of each plane has, by the world axis nearest the slice axis
PLANE_AXES = {2: ("L", "P", "S"), 1: ("L", "I", "P"), 0: ("P", "I", "R")}
DTYPES = {"float32": np.float32, "int16": np.int16}


def is_nifti_path(path: str | os.PathLike) -> bool:
    """True for a name ending in ``.nii`` or ``.nii.gz`` (any case)."""
    return str(path).lower().endswith(SUFFIXES)


def read_nifti(path: str | os.PathLike) -> Volume:
    """Read a NIfTI volume of CT in HU (see the module docstring).

    Raises
    ------
    FileNotFoundError, ValueError
        One line: not a NIfTI file, a 4-D series, units other than mm, a
        degenerate affine, or values that do not look like CT in HU.

    Examples
    --------
    >>> import tempfile, numpy as np, nibabel as nib
    >>> stored = np.full((6, 5, 3), 24, np.int16); stored[2:4, 1:4] = 1064   # (i, j, k) as stored
    >>> img = nib.Nifti1Image(stored, np.diag([-0.8, -0.8, 2.0, 1.0]))
    >>> img.header.set_slope_inter(1, -1024)       # HU = stored - 1024
    >>> path = tempfile.mkdtemp() + "/ct.nii.gz"; img.to_filename(path)
    >>> vol = read_nifti(path)
    >>> vol, float(vol.hu.min()), float(vol.hu.max())
    (Volume(hu=(3, 5, 6) float32 HU, spacing_mm=(2.0, 0.8, 0.8), kind='nifti'), -1000.0, 40.0)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if not is_nifti_path(path):
        raise ValueError(f"{path}: not a NIfTI file name (.nii or .nii.gz)")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on a bad file
        raise ValueError(f"{path}: not a readable NIfTI file ({one_line(exc)})") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ValueError(f"{path}: not a NIfTI-1/NIfTI-2 image ({type(img).__name__})")
    shape = tuple(int(d) for d in img.shape)
    if len(shape) < 2 or any(d > 1 for d in shape[3:]):
        raise ValueError(f"{path}: shape {shape}: give one 2-D or 3-D volume (a 4-D file holds several)")
    disk = img.get_data_dtype()
    if disk.fields is not None or np.issubdtype(disk, np.complexfloating) or disk.kind == "b":
        raise ValueError(f"{path}: data type {disk} is not a CT image (RGB, complex or binary)")
    units = img.header.get_xyzt_units()[0]
    if units in ("meter", "micron"):
        raise ValueError(f"{path}: spatial units {units}: only mm (or unset, taken as mm) are read")
    try:
        affine0 = check_affine(img.affine)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    data = np.asarray(img.get_fdata(dtype=np.float32)).reshape((*shape[:3], 1, 1)[:3])
    problem = ct_range_problem(data)
    if problem:
        raise ValueError(f"{path}: {problem}")
    ornt = io_orientation(affine0)
    turn = ornt_transform(ornt, axcodes2ornt(PLANE_AXES[int(ornt[2, 0])]))
    xyz = apply_orientation(data, turn)
    affine = affine0 @ inv_ornt_aff(turn, data.shape)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)  # x, y, z
    slope, inter = img.dataobj.slope, img.dataobj.inter
    sidecar = _sidecar(path)
    source = {
        "kind": "nifti",
        "file": str(path.resolve()),
        "dtype": str(disk),
        "scl_slope": float(slope), "scl_inter": float(inter),
        "shape_on_disk": list(shape),
        "axes_on_disk": "".join(aff2axcodes(affine0)),
        "series_uid": _text(sidecar.get("SeriesInstanceUID")),
        "series_number": sidecar.get("SeriesNumber"),
        "kernel": _text(sidecar.get("ConvolutionKernel")),
        "slice_thickness_mm": positive_number(sidecar.get("SliceThickness")),
        "sidecar": str(_sidecar_path(path)) if sidecar else None,
    }
    return Volume(np.ascontiguousarray(xyz.transpose(2, 1, 0)), (spacing[2], spacing[1], spacing[0]), affine,
                  source, header=img.header.copy())


def write_nifti(volume: Volume, path: str | os.PathLike, *, like: Volume | None = None, dtype: str | None = None,
                description: str | None = None, force: bool = False) -> Path:
    """Write ``volume`` to a ``.nii`` or ``.nii.gz`` file (see the module docstring).

    Parameters
    ----------
    volume : Volume
    path : str or path-like
        Ending in ``.nii`` or ``.nii.gz`` (gzip-compressed).
    like : Volume, optional
        The volume this one was made from: its NIfTI header, axis order and
        affine are kept (default: ``volume``'s own, when it was read from NIfTI).
    dtype : {None, "float32", "int16"}
        None: as the module docstring says; "int16" rounds to the scaling's
        step (1 HU without a NIfTI header).
    description : str, optional
        The header's ``descrip`` (default: what ``volume.derivation`` says was
        done); cut to 79 bytes.
    force : bool
        Overwrite an existing file.

    Returns
    -------
    Path of the file written (atomically: a killed process leaves no half file).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> vol = Volume(np.full((2, 4, 4), -1000.0), (2.0, 0.5, 0.5))
    >>> out = write_nifti(vol, tempfile.mkdtemp() + "/v.nii.gz")
    >>> back = read_nifti(out)
    >>> np.array_equal(back.hu, vol.hu), np.allclose(back.affine, vol.affine), back.source["dtype"]
    (True, True, 'int16')
    """
    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"{path}: a NIfTI file name ends in .nii or .nii.gz")
    if path.is_dir() or (path.exists() and not force):
        raise FileExistsError(f"{path} exists; pass force=True to overwrite it")
    if dtype not in (None, *DTYPES):
        raise ValueError(f"dtype must be None, 'float32' or 'int16', got {dtype!r}")
    ref = like if like is not None else volume
    if like is not None:
        if like.shape != volume.shape:
            raise ValueError(f"volume {volume.shape} and like {like.shape} differ in shape: not one grid")
        if not np.allclose(like.affine, volume.affine, atol=1e-3):
            raise ValueError("volume and like lie on different voxel grids (their affines differ)")
    header = ref.header if ref.kind == "nifti" and isinstance(ref.header, nib.Nifti1Header) else None
    xyz = volume.hu.transpose(2, 1, 0)
    if header is not None:
        affine = header.get_best_affine()
        back = ornt_transform(io_orientation(volume.affine), io_orientation(affine))
        if not np.allclose(volume.affine @ inv_ornt_aff(back, xyz.shape), affine, atol=1e-3):
            raise ValueError("the volume no longer lies on its NIfTI file's voxel grid (its affine changed)")
        xyz = apply_orientation(xyz, back)
        slope, inter = _scaling(ref.source)
        disk = np.dtype(header.get_data_dtype())
    else:
        affine = volume.affine
        slope, inter = 1.0, 0.0
        whole = np.all(xyz == np.round(xyz)) and xyz.min() >= -32768 and xyz.max() <= 32767
        disk = np.dtype(np.int16 if whole else np.float32)
    if dtype is not None:
        if DTYPES[dtype] != disk.type:
            slope, inter = 1.0, 0.0
        disk = np.dtype(DTYPES[dtype])
    if np.issubdtype(disk, np.integer):
        info = np.iinfo(disk)
        data = np.clip(np.rint((xyz.astype(np.float64) - inter) / slope), info.min, info.max).astype(disk)
    else:
        data, slope, inter = xyz.astype(disk), 1.0, 0.0
    klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    if header is not None:
        hdr = header.copy()
        hdr.set_data_dtype(disk)
        img = klass(data, affine, hdr)
    else:
        img = klass(data, affine)
        img.header.set_xyzt_units("mm", "sec")
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
    img.header.set_slope_inter(slope, inter)
    img.header["descrip"] = descrip(description if description is not None else _what(volume))
    blob = img.to_bytes()
    if path.name.lower().endswith(".gz"):
        blob = gzip.compress(blob, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return path


def descrip(text: str) -> bytes:
    """``text`` as the header's ``descrip``: ASCII, at most :data:`DESCRIP_BYTES` bytes.

    >>> descrip("denoised " + "x" * 100)[-3:], len(descrip("é" * 100))
    (b'xxx', 79)
    """
    return " ".join(str(text).split()).encode("ascii", "replace")[:DESCRIP_BYTES]


def _what(volume: Volume) -> str:
    if volume.derivation is not None:
        return f"ct-denoise {__version__}: {volume.derivation.series_suffix}"
    return f"ct-denoise {__version__}: written by the Python API"


def _scaling(source: dict) -> tuple[float, float]:
    slope, inter = source.get("scl_slope"), source.get("scl_inter")
    slope = float(slope) if slope is not None and np.isfinite(slope) and slope != 0 else 1.0
    inter = float(inter) if inter is not None and np.isfinite(inter) else 0.0
    return slope, inter


def _sidecar_path(path: Path) -> Path:
    name = path.name
    stem = name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else name[: -len(".nii")]
    return path.with_name(stem + ".json")


def _sidecar(path: Path) -> dict:
    """The BIDS/dcm2niix JSON beside the file, or {} (absent or unreadable: it is only a help)."""
    try:
        data = json.loads(_sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _text(value) -> str | None:
    if isinstance(value, list):
        value = "/".join(str(v) for v in value)
    return str(value).strip() or None if value is not None else None


