"""Build small synthetic CT DICOM files (and broken ones) for tests.

The patient name and ID are fixed, known strings so privacy tests can check
they never appear in anything the tool prints or writes besides DICOM.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage, special

PATIENT_NAME = "SECRET^PATIENT^NAME"
PATIENT_ID = "PID-SECRET-4242"


def phantom_hu(rows: int = 32, cols: int = 32, *, seed: int = 0) -> np.ndarray:
    """A little CT-like slice in HU: air, a soft-tissue disc, a bone ring,
    scanner padding in the corners, some texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:rows, :cols]
    r = np.hypot((yy - rows / 2) / (rows / 2), (xx - cols / 2) / (cols / 2))
    hu = np.full((rows, cols), -1000.0)
    hu[r < 0.8] = 40.0
    hu[(r > 0.55) & (r < 0.7)] = 1500.0
    hu[r < 0.8] += rng.normal(0, 15, size=int((r < 0.8).sum()))
    hu[r > 1.0] = -3024.0  # outside the scan circle
    return hu


def _base(modality: str = "CT", sop_class=CTImageStorage, *, study_uid=None, series_uid=None,
          frame_of_reference=None, series_description="SYNTH SERIES") -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = modality
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.FrameOfReferenceUID = frame_of_reference or generate_uid()
    ds.SeriesNumber = 3
    ds.SeriesDescription = series_description
    ds.BodyPartExamined = "CHEST"
    return ds


def ct_dataset(hu: np.ndarray | None = None, *, slope: float = 1.0, intercept: float = -1024.0,
               bits_stored: int = 16, signed: bool = True, z: float | None = 0.0,
               instance: int | None = 1, spacing=(0.7, 0.7), orientation=(1, 0, 0, 0, 1, 0),
               **base) -> Dataset:
    """A single-frame CT Image Storage dataset holding ``hu`` (2-D)."""
    hu = phantom_hu() if hu is None else np.asarray(hu, dtype=np.float64)
    ds = _base(**base)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    if z is not None:
        ds.ImagePositionPatient = [-10.0, -10.0, float(z)]
        ds.ImageOrientationPatient = list(orientation)
    if instance is not None:
        ds.InstanceNumber = instance
    ds.PixelSpacing = list(spacing)
    ds.SliceThickness = 1.0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.RescaleType = "HU"
    ds.set_pixel_data(_stored(hu, slope, intercept, bits_stored, signed), "MONOCHROME2", bits_stored)
    return ds


def _stored(hu, slope, intercept, bits_stored, signed):
    lo, hi = ((-(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1) if signed
              else (0, (1 << bits_stored) - 1))
    values = np.clip(np.rint((hu - intercept) / slope), lo, hi)
    return values.astype(np.int16 if signed else np.uint16)


def enhanced_ct_dataset(frames: np.ndarray | None = None, *, rescales=((1.0, -1024.0), (0.5, -1000.0)),
                        per_frame_rescale: bool = True, bits_stored: int = 16, **base) -> Dataset:
    """A multi-frame Enhanced CT dataset; with ``per_frame_rescale`` each
    frame carries its own slope/intercept, else one shared rescale."""
    n = len(rescales) if per_frame_rescale else (len(frames) if frames is not None else 2)
    if frames is None:
        frames = np.stack([phantom_hu(seed=k) for k in range(n)])
    ds = _base(sop_class=EnhancedCTImageStorage, **base)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    shared = Dataset()
    orient, measures = Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing = [0.7, 0.7]
    measures.SliceThickness = 1.0
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    per_frame, stored = [], []
    for k in range(len(frames)):
        slope, intercept = rescales[k] if per_frame_rescale else rescales[0]
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = [-10.0, -10.0, float(k)]
        item.PlanePositionSequence = Sequence([pos])
        if per_frame_rescale:
            item.PixelValueTransformationSequence = Sequence([_rescale_item(slope, intercept)])
        per_frame.append(item)
        stored.append(_stored(frames[k], slope, intercept, bits_stored, True))
    if not per_frame_rescale:
        shared.PixelValueTransformationSequence = Sequence([_rescale_item(*rescales[0])])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.set_pixel_data(np.stack(stored), "MONOCHROME2", bits_stored)
    ds.NumberOfFrames = len(frames)
    return ds


def _rescale_item(slope, intercept) -> Dataset:
    item = Dataset()
    item.RescaleSlope, item.RescaleIntercept, item.RescaleType = slope, intercept, "HU"
    return item


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder: Path, n: int = 4, *, rows: int = 32, cols: int = 32, names=None,
                 shuffle_names: bool = False, **kw) -> list[Path]:
    """``n`` slices of one series (shared study/series/FoR UIDs), z = 0, 2, 4..."""
    uids = {k: kw.pop(k, None) or generate_uid() for k in ("study_uid", "series_uid", "frame_of_reference")}
    paths = []
    order = list(range(n))[::-1] if shuffle_names else list(range(n))
    for k in range(n):
        name = names[k] if names else f"IM_{order[k]:04d}"
        ds = ct_dataset(phantom_hu(rows, cols, seed=k), z=2.0 * k, instance=k + 1, **uids, **kw)
        paths.append(save(ds, folder / name))
    return paths


def non_ct_dataset(kind: str) -> Dataset:
    """Valid DICOM objects that are not CT images: 'MR', 'SR', 'PR' (a
    presentation state), 'SEG', 'RGB' (secondary capture)."""
    if kind == "MR":
        ds = _base("MR", "1.2.840.10008.5.1.4.1.1.4")
        ds.set_pixel_data(np.zeros((8, 8), np.uint16), "MONOCHROME2", 12)
    elif kind == "SR":
        ds = _base("SR", "1.2.840.10008.5.1.4.1.1.88.11")
    elif kind == "PR":
        ds = _base("PR", "1.2.840.10008.5.1.4.1.1.11.1")
    elif kind == "SEG":
        ds = _base("SEG", "1.2.840.10008.5.1.4.1.1.66.4")
        ds.set_pixel_data(np.zeros((8, 8), np.uint8), "MONOCHROME2", 1)
    elif kind == "RGB":
        ds = _base("OT", "1.2.840.10008.5.1.4.1.1.7")
        ds.set_pixel_data(np.zeros((8, 8, 3), np.uint8), "RGB", 8)
    else:
        raise ValueError(kind)
    return ds


def dicomdir_dataset() -> Dataset:
    """An empty DICOMDIR (media storage directory) object."""
    dicomdir = Dataset()
    dicomdir.file_meta = FileMetaDataset()
    dicomdir.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dicomdir.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    dicomdir.DirectoryRecordSequence = Sequence([])
    return dicomdir


def junk_folder(root: Path) -> dict[str, str]:
    """A folder of files that are not usable CT, plus two good CT slices.
    Returns {relative path: a word expected in the skip reason}; good files
    map to ''."""
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    good = write_series(root / "good", 2)
    for p in good:
        expected[p.relative_to(root).as_posix()] = ""
    (root / "empty.dcm").write_bytes(b"")
    expected["empty.dcm"] = "empty"
    (root / "notes.txt").write_text("not an image\n")
    expected["notes.txt"] = "not a DICOM"
    raw = good[0].read_bytes()
    (root / "truncated_header").write_bytes(raw[:300])
    expected["truncated_header"] = "PixelData"
    (root / "truncated_pixels").write_bytes(raw[:-500])
    expected["truncated_pixels"] = "truncated"
    (root / "garbage.dcm").write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    expected["garbage.dcm"] = "DICOM"
    for kind, word in (("MR", "Modality MR"), ("SR", "no PixelData"), ("PR", "no PixelData"),
                       ("SEG", "Modality SEG"), ("RGB", "Modality OT")):
        save(non_ct_dataset(kind), root / f"other_{kind}")
        expected[f"other_{kind}"] = word
    ds = ct_dataset()
    del ds.RescaleSlope
    save(ds, root / "no_rescale")
    expected["no_rescale"] = "Rescale"
    ds = ct_dataset()
    del ds.PixelData
    save(ds, root / "no_pixels")
    expected["no_pixels"] = "without PixelData"
    ds = ct_dataset()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    save(ds, root / "short_pixels")
    expected["short_pixels"] = "expected"
    save(dicomdir_dataset(), root / "DICOMDIR")
    expected["DICOMDIR"] = "DICOMDIR"
    return expected


TINY_CONFIG = """
name = "tiny"
[data]
manifests = ["{manifest}"]
[patches]
size = 16
batch_size = 4
per_epoch = 16
min_body_fraction = 0.2
[model]
channels = [4, 8]
[optimizer]
lr = 1e-3
warmup_steps = 2
[training]
epochs = {epochs}
seed = 3
[validation]
max_slices = 2
"""


def write_config(tmp_path, manifest, epochs=2):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_CONFIG.format(manifest=manifest.as_posix(), epochs=epochs))
    return path


def ct_from_stored(stored: np.ndarray, *, slope: float = 1.0, intercept: float = -1024.0, bits_stored: int = 16,
                   bits_allocated: int = 16, signed: bool = True, **base) -> Dataset:
    """A single-frame CT dataset whose PixelData holds exactly ``stored``
    (2-D integers, cast to the container dtype; values are not checked
    against ``bits_stored``, so out-of-range files can be built too)."""
    stored = np.asarray(stored)
    ds = ct_dataset(np.zeros(stored.shape), slope=slope, intercept=intercept, **base)
    dtype = np.dtype(("i" if signed else "u") + str(bits_allocated // 8))
    ds.PixelData = stored.astype(dtype).tobytes()
    ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    return ds


def compressed_ct_dataset(hu: np.ndarray | None = None, syntax: str = "1.2.840.10008.1.2.4.90", **kw) -> Dataset:
    """A CT dataset compressed with ``syntax`` (default JPEG 2000 Lossless;
    needs an installed encoder, e.g. pylibjpeg-openjpeg)."""
    ds = ct_dataset(hu, **kw)
    ds.compress(syntax)
    return ds


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every regular file under ``root``
    (symlinks are not followed)."""
    import hashlib
    import os

    digest = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                digest[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def us_dataset() -> Dataset:
    """An ultrasound image (US Image Storage, RGB): valid DICOM, not CT."""
    ds = _base("US", "1.2.840.10008.5.1.4.1.1.6.1")
    ds.set_pixel_data(np.zeros((8, 8, 3), np.uint8), "RGB", 8)
    return ds


# ---------------------------------------------------------------- phantoms for the quality measures

SIGMA = 20.0  # noise of write_noisy_series, HU
SPACING = 0.7  # its pixel spacing, mm


def body_phantom(rows: int = 128, *, radius_mm: float = 38.0) -> np.ndarray:
    """A 40 HU disk in air, its edge blurred by a Gaussian of 0.5 mm."""
    yy, xx = np.mgrid[:rows, :rows]
    r = np.hypot((yy - rows / 2 + 0.3) * SPACING, (xx - rows / 2 + 0.2) * SPACING)
    return -1000.0 + 1040.0 * special.ndtr((radius_mm - r) / 0.5)


def write_noisy_series(folder: Path, n: int = 4, *, seed: int = 0, image=None, gap_mm: float = 1.0,
                       names=None, **kw) -> list[Path]:
    """``n`` slices of one anatomy with independent white noise of SIGMA HU."""
    rng = np.random.default_rng(seed)
    image = body_phantom() if image is None else image
    uids = {k: kw.pop(k, None) or generate_uid() for k in ("study_uid", "series_uid", "frame_of_reference")}
    paths = []
    for k in range(n):
        hu = image + rng.normal(0, SIGMA, image.shape)
        ds = ct_dataset(hu, z=gap_mm * k, instance=k + 1, spacing=(SPACING, SPACING), **uids, **kw)
        paths.append(save(ds, folder / (names[k] if names else f"s{k:02d}.dcm")))
    return paths


def write_smoothed(before: Path, after: Path, sigma_px: float = 1.0) -> None:
    """AFTER: each BEFORE file smoothed by a Gaussian (a stand-in denoiser), same relative paths."""
    for path in sorted(before.rglob("s*.dcm")):  # the slices write_noisy_series wrote
        ds = pydicom.dcmread(path)
        hu = ndimage.gaussian_filter(ds.RescaleSlope * ds.pixel_array.astype(np.float64) + ds.RescaleIntercept,
                                     sigma_px)
        out = ct_dataset(hu, z=float(ds.ImagePositionPatient[2]), spacing=(SPACING, SPACING),
                         study_uid=ds.StudyInstanceUID, frame_of_reference=ds.FrameOfReferenceUID)
        save(out, after / path.relative_to(before))
