"""Find CT slices under a path, group them into series and order them.

Files are recognised by content, never by extension: a ``DICM`` marker after
the 128-byte preamble, or (for preamble-less files) a header that parses into
a dataset with DICOM identifying tags. Everything that is not a readable,
decodable grayscale CT image is *skipped with a reason* instead of raising,
so one bad file never stops a batch.

Only headers are read here (pixel data is deferred), which keeps a scan of a
large folder cheap; :mod:`denoise.dicom.pixels` decodes pixels on demand.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    MediaStorageDirectoryStorage,
)

from denoise.atomic import is_temp
from denoise.dicom.geometry import frame_geometry, functional_group, slice_normal
from denoise.dicom.identity import media_sop_class, sop_instance
from denoise.dicom.pixels import decoder_problem, frame_rescales
from denoise.dicom.reading import leniently
from denoise.dicom.values import PARAMETRIC_MAP, non_hu_reason
from denoise.text import one_line

CT_SOP_CLASSES = {u: u.name for u in (CTImageStorage, EnhancedCTImageStorage,
                                             LegacyConvertedEnhancedCTImageStorage)}
DICOMDIR_SOP_CLASS = MediaStorageDirectoryStorage
_PIXEL_TAG = 0x7FE00010
# The temporary name denoise.atomic.atomic_path writes before its rename, ".NAME.PID.tmp": a
# process killed mid-write leaves one behind; it is never a complete file to read.
# Tags that only a real DICOM header has; used to accept preamble-less files.
_IDENTIFYING = ("SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID")


@dataclass(frozen=True)
class CTFile:
    """One readable CT image file (single-frame, or multi-frame Enhanced CT)."""

    path: Path  # absolute path of the file
    relpath: PurePosixPath  # path relative to the scanned root (used for outputs)
    series_uid: str
    study_uid: str
    sop_uid: str
    n_frames: int
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None  # (row, column) spacing in mm
    position: float | None  # first frame's position along the slice normal, mm
    instance_number: int | None
    transfer_syntax: str  # pydicom keyword, e.g. "JPEGLosslessSV1"
    series_description: str
    body_part: str
    series_number: int | None
    frame_of_reference_uid: str
    normal: tuple[float, float, float] | None
    source_sop_uid: str = ""  # first SourceImageSequence reference (derived images)
    slice_thickness: float | None = None  # SliceThickness, mm (reconstructed thickness, not the spacing)
    # what CT users look for (ct-denoise info); None where the header does not say
    kernel: str | None = None  # ConvolutionKernel (its values joined by "/")
    kvp: float | None = None  # KVP
    exposure_mas: float | None = None  # ExposureInmAs, else XRayTubeCurrent x ExposureTime, else Exposure
    tube_current_ma: float | None = None  # XRayTubeCurrent
    exposure_time_ms: float | None = None  # ExposureTime
    ctdi_vol_mgy: float | None = None  # CTDIvol
    manufacturer: str | None = None  # Manufacturer
    model_name: str | None = None  # ManufacturerModelName
    image_type: str | None = None  # ImageType[0]: ORIGINAL or DERIVED


@dataclass(frozen=True)
class Skipped:
    """A file that was not used, and why (one line, no patient data).

    ``bad`` is True for files that should have been CT images but are broken
    (truncated, undecodable, inconsistent): batch jobs count those as failures.
    Files that are simply not CT images (other modalities, reports, DICOMDIR,
    non-DICOM files) have ``bad`` False and are only listed.
    """

    relpath: PurePosixPath
    reason: str
    bad: bool = True


@dataclass
class Series:
    """CT files sharing a SeriesInstanceUID, ordered along the slice normal."""

    uid: str
    files: list[CTFile]
    warnings: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return sum(f.n_frames for f in self.files)

    @property
    def sizes(self) -> list[tuple[int, int]]:
        return sorted({(f.rows, f.columns) for f in self.files})

    @property
    def transfer_syntaxes(self) -> list[str]:
        return sorted({f.transfer_syntax for f in self.files})

    @property
    def description(self) -> str:
        first = self.files[0]
        parts = [p for p in (first.body_part, first.series_description) if p]
        return " / ".join(parts)

    @property
    def slice_spacing(self) -> float | None:
        """Median distance between consecutive slice positions (mm)."""
        pos = [f.position for f in self.files if f.position is not None]
        if len(pos) < 2:
            return None
        return float(np.median(np.abs(np.diff(pos))))

    @property
    def slice_thickness(self) -> float | None:
        """Median reconstructed slice thickness (mm), where the files state it."""
        return self._median("slice_thickness")

    @property
    def number(self) -> int | None:
        """The DICOM SeriesNumber (of the first file)."""
        return self.files[0].series_number

    @property
    def kernel(self) -> str | None:
        return self._texts("kernel")

    @property
    def kvp(self) -> float | None:
        return self._median("kvp")

    @property
    def exposure_mas(self) -> float | None:
        """Median exposure per slice, mAs (tube current modulation varies it)."""
        return self._median("exposure_mas")

    @property
    def tube_current_ma(self) -> float | None:
        return self._median("tube_current_ma")

    @property
    def exposure_time_ms(self) -> float | None:
        return self._median("exposure_time_ms")

    @property
    def ctdi_vol_mgy(self) -> float | None:
        return self._median("ctdi_vol_mgy")

    @property
    def manufacturer(self) -> str | None:
        return self._texts("manufacturer")

    @property
    def model_name(self) -> str | None:
        return self._texts("model_name")

    @property
    def image_type(self) -> str | None:
        """ORIGINAL or DERIVED (both, joined by "/", when the files differ)."""
        return self._texts("image_type")

    def _median(self, name: str) -> float | None:
        """The median of a number the files state (None where none does)."""
        values = [getattr(f, name) for f in self.files if getattr(f, name) is not None]
        return float(np.median(values)) if values else None

    def _texts(self, name: str) -> str | None:
        """A text the files state: its distinct values in file order, joined by "/"."""
        values = dict.fromkeys(getattr(f, name) for f in self.files if getattr(f, name))
        return "/".join(values) or None


@dataclass
class ScanResult:
    root: Path
    series: list[Series]
    skipped: list[Skipped]

    @property
    def files(self) -> list[CTFile]:
        return [f for s in self.series for f in s.files]


class SkipFile(Exception):
    """Raised inside inspection to skip a file with a one-line reason (header
    values quoted in it may hold line breaks: they are folded here)."""

    def __init__(self, reason: str, *, bad: bool = True):
        super().__init__(one_line(reason, limit=1000))
        self.bad = bad


def iter_files(root: Path) -> list[Path]:
    """All regular files under ``root`` (or ``root`` itself), sorted, never
    following directory symlinks (so symlink loops cannot hang a scan).
    Temporary files of an interrupted atomic write are left out."""
    if root.is_file():
        return [root]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=None):
        dirnames.sort()
        for name in sorted(filenames):
            if not is_temp(name):
                found.append(Path(dirpath) / name)
    return found


def relative_to_root(path: Path, root: Path) -> PurePosixPath:
    if root.is_file():
        return PurePosixPath(path.name)
    return PurePosixPath(path.relative_to(root).as_posix())


def read_header(path: Path) -> Dataset:
    """Parse a file's header (pixel data deferred); raise SkipFile if the file
    is empty, not DICOM, or its header cannot be read."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError as exc:
        raise SkipFile(f"cannot read file ({exc.strerror or exc})") from exc
    if size == 0:
        raise SkipFile("empty file (0 bytes)")
    has_marker = len(head) >= 132 and head[128:132] == b"DICM"
    if not has_marker and not _looks_like_raw_dicom(head):
        raise SkipFile("not a DICOM file (no DICM marker, no DICOM header)", bad=False)
    try:
        ds = pydicom.dcmread(path, defer_size=1024, force=not has_marker)
    except OSError as exc:
        raise SkipFile(f"cannot read file ({exc.strerror or exc})") from exc
    except Exception as exc:  # corrupt headers raise many types (struct.error, NotImplementedError for a bad VR...)
        raise SkipFile(f"unreadable DICOM header ({one_line(exc)})") from exc
    if media_sop_class(ds) == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        raise SkipFile("DICOMDIR (media index, holds no image)", bad=False)
    if not any(k in ds for k in _IDENTIFYING):
        if not has_marker:
            raise SkipFile("not a DICOM file (no DICM marker, no DICOM header)", bad=False)
        if media_sop_class(ds) not in CT_SOP_CLASSES:
            raise SkipFile("corrupt or truncated DICOM (no SOP class, no modality in the header)")
    return ds


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A preamble-less DICOM stream starts with a group 0002 or 0008 tag."""
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


@leniently
def inspect_file(path: Path, relpath: PurePosixPath, *, allow_non_hu: bool = False) -> CTFile:
    """Return the CT description of one file or raise SkipFile with a reason
    (CT whose values are not HU is skipped, not bad, unless ``allow_non_hu``)."""
    try:
        return _inspect(path, relpath, allow_non_hu)
    except SkipFile:
        raise
    except Exception as exc:  # pydicom parses header values on first use: a corrupt one raises there
        raise SkipFile(f"corrupt DICOM header ({one_line(exc)})") from exc


def _inspect(path: Path, relpath: PurePosixPath, allow_non_hu: bool) -> CTFile:
    ds = read_header(path)
    sop_class = media_sop_class(ds)
    modality = str(ds.get("Modality", "") or "")
    if sop_class == PARAMETRIC_MAP:
        raise SkipFile("parametric map: its values are not HU (floating-point maps are not processed)", bad=False)
    if _PIXEL_TAG not in ds:
        if sop_class in CT_SOP_CLASSES:
            raise SkipFile("CT object without PixelData (file truncated or incomplete)")
        raise SkipFile(f"non-image object ({_sop_name(sop_class, modality)}): no PixelData", bad=False)
    if modality != "CT":
        raise SkipFile(f"not CT (Modality {modality or 'missing'})", bad=False)
    if sop_class not in CT_SOP_CLASSES:
        raise SkipFile(f"unsupported SOP class for CT ({_sop_name(sop_class, modality)})")
    _check_pixel_module(ds)
    _check_pixel_bytes(ds, path)  # before the rescale: it bounds NumberOfFrames, which that loops over
    _check_rescale(ds)
    _check_decoder(ds)
    reason = None if allow_non_hu else non_hu_reason(ds)
    if reason:
        raise SkipFile(f"{reason}: --allow-non-hu processes it as HU", bad=False)
    return _describe(ds, path, relpath)


def _sop_name(sop_class: str, modality: str) -> str:
    if not sop_class:
        return f"Modality {modality or 'missing'}, no SOP class"
    name = pydicom.uid.UID(sop_class).name
    return name if name != sop_class else f"SOP class {sop_class}"


def _check_pixel_module(ds: Dataset) -> None:
    pi = str(ds.get("PhotometricInterpretation", "") or "")
    spp = ds.get("SamplesPerPixel", 1)
    if pi not in ("MONOCHROME1", "MONOCHROME2") or spp != 1:
        raise SkipFile(f"not a grayscale image (PhotometricInterpretation {pi or 'missing'}, "
                       f"SamplesPerPixel {spp})")
    for tag in ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation"):
        if ds.get(tag) is None:
            raise SkipFile(f"missing {tag}")
    if ds.Rows < 1 or ds.Columns < 1:
        raise SkipFile(f"invalid image size {ds.Rows}x{ds.Columns}")
    if ds.BitsAllocated not in (8, 16) or not 1 <= ds.BitsStored <= ds.BitsAllocated:
        raise SkipFile(f"unsupported bit depth (BitsAllocated {ds.BitsAllocated}, "
                       f"BitsStored {ds.BitsStored})")
    if ds.PixelRepresentation not in (0, 1):
        raise SkipFile(f"invalid PixelRepresentation {ds.PixelRepresentation}")
    if "ModalityLUTSequence" in ds:
        raise SkipFile("non-linear Modality LUT Sequence is not supported (needs rescale slope/intercept)")


def _check_rescale(ds: Dataset) -> None:
    try:
        frame_rescales(ds)
    except ValueError as exc:
        raise SkipFile(str(exc)) from exc


def number_of_frames(ds: Dataset) -> int:
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise SkipFile(f"invalid NumberOfFrames {ds.get('NumberOfFrames')!r}") from exc
    if n < 1:
        raise SkipFile(f"invalid NumberOfFrames {n}")
    return n


def _check_pixel_bytes(ds: Dataset, path: Path) -> None:
    """NumberOfFrames must be plausible for the file size; for native
    (uncompressed) data the PixelData length must match the image size
    exactly (plus one pad byte when odd), and the file must hold all of it."""
    n_frames = number_of_frames(ds)
    size = path.stat().st_size
    if n_frames > size:  # every frame takes at least one byte (an encapsulated one at least 8)
        raise SkipFile(f"invalid NumberOfFrames {n_frames} for a file of {size} bytes")
    raw = ds.get_item(_PIXEL_TAG, keep_deferred=True)  # deferred RawDataElement: length known, value not read
    length = getattr(raw, "length", None)
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if length is None or length == 0xFFFFFFFF or (tsyntax is not None and tsyntax.is_compressed):
        return
    expected = get_expected_length(ds)  # bytes of Rows x Columns x frames x samples at BitsAllocated
    if length not in (expected, expected + expected % 2):
        raise SkipFile(f"PixelData has {length} bytes, expected {expected} "
                       f"for {n_frames} frame(s) of {ds.Rows}x{ds.Columns}")
    tell = getattr(raw, "value_tell", None)
    if tell is not None and tell + length > size:
        raise SkipFile(f"truncated file: PixelData needs {tell + length} bytes, file has {size}")


def _check_decoder(ds: Dataset) -> None:
    problem = decoder_problem(ds)
    if problem:
        raise SkipFile(problem)


def _describe(ds: Dataset, path: Path, relpath: PurePosixPath) -> CTFile:
    geom = frame_geometry(ds)
    normal = slice_normal(geom.orientation) if geom.orientation is not None else None
    position = None
    if normal is not None and geom.positions and geom.positions[0] is not None:
        position = float(np.dot(geom.positions[0], normal))
    instance = ds.get("InstanceNumber")
    try:
        instance_number = int(instance) if instance not in (None, "") else None
    except (TypeError, ValueError):
        instance_number = None
    series_number = ds.get("SeriesNumber")
    try:
        series_number = int(series_number) if series_number not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None
    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return CTFile(
        path=path.resolve(),
        relpath=relpath,
        series_uid=str(ds.get("SeriesInstanceUID", "") or "") or f"(no series UID) {relpath.parent}",
        study_uid=str(ds.get("StudyInstanceUID", "") or ""),
        sop_uid=sop_instance(ds),
        n_frames=number_of_frames(ds),
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        pixel_spacing=geom.pixel_spacing,
        position=position,
        instance_number=instance_number,
        transfer_syntax=_syntax_label(tsyntax),
        series_description=str(ds.get("SeriesDescription", "") or "").strip(),
        body_part=str(ds.get("BodyPartExamined", "") or "").strip(),
        series_number=series_number,
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
        normal=tuple(float(v) for v in normal) if normal is not None else None,
        source_sop_uid=_first_source_sop(ds),
        slice_thickness=positive_number(_attribute(ds, "SliceThickness", "PixelMeasuresSequence")),
        **_acquisition(ds),
    )


def _attribute(ds: Dataset, keyword: str, group: str | None = None):
    """A header value, or (Enhanced CT) the first frame's functional ``group`` one; None where
    absent or unreadable (a malformed value never skips the file)."""
    try:
        value = ds.get(keyword)
        if value in (None, "") and group is not None:
            item = functional_group(ds, 0, group)
            value = item.get(keyword) if item is not None else None
    except Exception:  # noqa: BLE001 - pydicom parses a value on first use: a corrupt one raises here
        return None
    return None if value in (None, "") else value


def _text(value) -> str | None:
    """A header text (a multi-valued one joined by "/"), stripped; None if empty."""
    if value is None:
        return None
    parts = [str(v).strip() for v in value] if isinstance(value, list | tuple | MultiValue) else [str(value).strip()]
    return "/".join(p for p in parts if p) or None


def _acquisition(ds: Dataset) -> dict:
    """What the scan was (``ct-denoise info``): kernel, kVp, exposure, CTDIvol, scanner, ORIGINAL/DERIVED;
    Enhanced CT states them in the first frame's functional groups."""
    current = positive_number(_attribute(ds, "XRayTubeCurrent"))
    time_ms = positive_number(_attribute(ds, "ExposureTime"))
    micro = positive_number(_attribute(ds, "ExposureInuAs"))
    # the tube's current-time product where the header states it; Exposure only where it does not: scanners
    # differ on what they write there (Siemens: effective mAs, over the pitch; some GE: not mAs at all)
    exposure = (positive_number(_attribute(ds, "ExposureInmAs", "CTExposureSequence"))
                or (current * time_ms / 1000 if current and time_ms else None)
                or positive_number(_attribute(ds, "Exposure"))
                or (micro / 1000 if micro else None))
    image_type = _text(_attribute(ds, "ImageType"))
    return {
        "kernel": _text(_attribute(ds, "ConvolutionKernel", "CTReconstructionSequence")),
        "kvp": positive_number(_attribute(ds, "KVP", "CTXRayDetailsSequence")),
        "exposure_mas": exposure,
        "tube_current_ma": current,
        "exposure_time_ms": time_ms,
        "ctdi_vol_mgy": positive_number(_attribute(ds, "CTDIvol", "CTExposureSequence")),
        "manufacturer": _text(_attribute(ds, "Manufacturer")),
        "model_name": _text(_attribute(ds, "ManufacturerModelName")),
        "image_type": image_type.split("/", 1)[0].upper() if image_type else None,
    }


def positive_number(value) -> float | None:
    """A positive finite number from a DS value, else None (absent, empty or malformed)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number > 0 else None


def _syntax_label(tsyntax) -> str:
    if tsyntax is None:
        return "ImplicitVRLittleEndian (no file meta)"
    return tsyntax.keyword or str(tsyntax)


def _first_source_sop(ds: Dataset) -> str:
    """The first source image a derived image names: in SourceImageSequence,
    or for Enhanced CT in the first frame's Derivation Image functional group."""
    seq = ds.get("SourceImageSequence")
    if not seq:
        derivation = functional_group(ds, 0, "DerivationImageSequence")
        seq = derivation.get("SourceImageSequence") if derivation is not None else None
    if not seq:
        return ""
    return str(seq[0].get("ReferencedSOPInstanceUID", "") or "")


def scan(path: str | os.PathLike, *, allow_non_hu: bool = False, on_file=None) -> ScanResult:
    """Scan a file or folder (recursively) for CT series.

    Returns every readable CT file grouped into :class:`Series` (ordered along
    the slice normal) and every other file as :class:`Skipped` with a reason.
    CT whose values are not HU (:func:`denoise.dicom.values.non_hu_reason`)
    is skipped with its reason unless ``allow_non_hu``.
    ``on_file(done, total)`` is called after each file (for a progress bar).
    Raises ``FileNotFoundError`` only when ``path`` itself does not exist.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    groups: dict[str, list[CTFile]] = defaultdict(list)
    skipped: list[Skipped] = []
    files = iter_files(root)
    for done, file in enumerate(files, 1):
        rel = relative_to_root(file, root)
        try:
            ct = inspect_file(file, rel, allow_non_hu=allow_non_hu)
            groups[ct.series_uid].append(ct)
        except SkipFile as exc:
            skipped.append(Skipped(rel, str(exc), bad=exc.bad))
        if on_file is not None:
            on_file(done, len(files))
    series = [order_series(uid, files) for uid, files in groups.items()]
    series.sort(key=lambda s: str(s.files[0].relpath))
    return ScanResult(root=root, series=series, skipped=skipped)


def order_series(uid: str, files: list[CTFile]) -> Series:
    """Order files by position along the slice normal, falling back to
    InstanceNumber and then to file name; warn (never fail) on duplicate
    positions and uneven spacing."""
    notes: list[str] = []
    by_name = sorted(files, key=lambda f: str(f.relpath))
    if all(f.position is not None for f in files):
        ordered = sorted(by_name, key=lambda f: f.position)
        notes += _spacing_warnings([f.position for f in ordered])
    elif all(f.instance_number is not None for f in files):
        ordered = sorted(by_name, key=lambda f: f.instance_number)
        if len(files) > 1:
            notes.append("no slice positions: ordered by InstanceNumber")
    else:
        ordered = by_name
        if len(files) > 1:
            notes.append("no slice positions or instance numbers: ordered by file name")
    return Series(uid=uid, files=ordered, warnings=notes)


def _spacing_warnings(positions: list[float], *, tol_mm: float = 0.01) -> list[str]:
    if len(positions) < 2:
        return []
    gaps = np.diff(np.asarray(positions, dtype=np.float64))
    notes = []
    n_dup = int(np.sum(gaps < tol_mm))
    if n_dup:
        notes.append(f"{n_dup} duplicate slice position(s)")
    distinct = gaps[gaps >= tol_mm]
    if distinct.size >= 2:
        median = float(np.median(distinct))
        if np.max(np.abs(distinct - median)) > max(tol_mm, 0.05 * median):
            notes.append(f"uneven slice spacing ({distinct.min():.3g}..{distinct.max():.3g} mm)")
    return notes
