"""Property-based tests (hypothesis): exact HU round trips for every valid
rescale/bit-depth combination, and no unhandled exception from the scanner
whatever the header or the bytes hold."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from denoise.dicom.identity import Derivation
from denoise.dicom.pixels import PixelDataError, hu_to_stored, load_ct, stored_range
from denoise.dicom.scan import CTFile, SkipFile, inspect_file, scan
from denoise.dicom.write import derive_dataset, write_atomic
from tests.factory import ct_dataset, ct_from_stored, enhanced_ct_dataset, phantom_hu, save

IDENTITY = Derivation(key="identity", description="identity (property test)", series_suffix="same")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ds_value(mantissa: int, exponent: int) -> float:
    """A decimal that DS (16 characters) holds exactly as written."""
    return float(f"{mantissa * 10.0 ** exponent:.6g}")


slopes = st.builds(ds_value, st.integers(1, 99_999).flatmap(lambda m: st.sampled_from([m, -m])),
                   st.integers(-6, 1))
intercepts = st.builds(ds_value, st.integers(-99_999, 99_999), st.integers(-3, 0))


@st.composite
def pixel_formats(draw):
    """(BitsAllocated, BitsStored, PixelRepresentation)."""
    allocated = draw(st.sampled_from([8, 16]))
    return allocated, draw(st.integers(1, allocated)), draw(st.integers(0, 1))


@st.composite
def stored_images(draw, fmt):
    """A small stored-value image in the range of ``fmt``, extremes included."""
    _, bits_stored, representation = fmt
    lo, hi = stored_range(bits_stored, representation)
    rows, cols = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    values = draw(st.lists(st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi, 0 if lo <= 0 else lo])),
                           min_size=rows * cols, max_size=rows * cols))
    return np.array(values, dtype=np.int64).reshape(rows, cols)


def header(fmt) -> Dataset:
    ds = Dataset()
    ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = fmt
    return ds


@SETTINGS
@given(data=st.data(), fmt=pixel_formats(), slope=slopes, intercept=intercepts)
def test_hu_to_stored_inverts_the_rescale_exactly(data, fmt, slope, intercept):
    stored = data.draw(stored_images(fmt))
    hu = stored[None].astype(np.float64) * slope + intercept
    back = hu_to_stored(hu, header(fmt), [(slope, intercept)])
    assert back.dtype == np.dtype(("i" if fmt[2] else "u") + str(fmt[0] // 8))
    np.testing.assert_array_equal(back[0], stored)


@SETTINGS
@given(data=st.data(), fmt=pixel_formats(), slope=slopes, intercept=intercepts)
def test_file_round_trip_through_load_and_derive_is_bit_exact(data, fmt, slope, intercept):
    stored = data.draw(stored_images(fmt))
    bits_allocated, bits_stored, representation = fmt
    # load_ct gives float32 HU (24-bit mantissa): stored values survive exactly
    # while |HU / slope| stays well below 2**23.
    assume(2**bits_stored + abs(intercept / slope) < 2**22)
    with tempfile.TemporaryDirectory() as tmp:
        src = save(ct_from_stored(stored, slope=slope, intercept=intercept, bits_stored=bits_stored,
                                  bits_allocated=bits_allocated, signed=bool(representation)), Path(tmp) / "src")
        assert isinstance(inspect_file(src, PurePosixPath("src")), CTFile)
        image = load_ct(src)
        np.testing.assert_allclose(image.hu[0], stored * slope + intercept,
                                   rtol=2**-22, atol=abs(slope) * 1e-3)
        out = Path(tmp) / "out"
        write_atomic(derive_dataset(image.dataset, image.hu, image.rescales, IDENTITY), out)
        written = pydicom.dcmread(out)
        assert int(written.BitsStored) == bits_stored and int(written.PixelRepresentation) == representation
        np.testing.assert_array_equal(written.pixel_array, stored)
        assert isinstance(inspect_file(out, PurePosixPath("out")), CTFile)


@SETTINGS
@given(rows=st.integers(1, 70), cols=st.integers(1, 70), seed=st.integers(0, 2**16))
def test_any_image_size_is_accepted_and_described(rows, cols, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = save(ct_dataset(phantom_hu(rows, cols, seed=seed)), Path(tmp) / "x")
        ct = inspect_file(path, PurePosixPath("x"))
        assert (ct.rows, ct.columns, ct.n_frames) == (rows, cols, 1)
        assert load_ct(path).hu.shape == (1, rows, cols)


# --- never an unhandled exception --------------------------------------------------------------------

TEXTS = ["CT", "MR", "MONOCHROME1", "RGB", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.4.90", "0", "-1",
         "1e9", "2147483647", "abc", "1\\2\\3", "\\", "nan", "inf", "-0.0", " ", "1.5"]
# A new value, as the bytes a file would hold (parsed, and maybe rejected, under the tag's VR), or None to delete.
VALUES = st.one_of(st.none(), st.binary(max_size=16), st.sampled_from(TEXTS).map(str.encode),
                   st.integers(0, 2**16 - 1).map(lambda v: v.to_bytes(2, "little")),
                   st.text(max_size=12).map(lambda t: t.encode("utf-8")))
KEYWORDS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
            "PhotometricInterpretation", "NumberOfFrames", "RescaleSlope", "RescaleIntercept", "Modality",
            "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "ImagePositionPatient",
            "ImageOrientationPatient", "PixelSpacing", "InstanceNumber", "SeriesNumber", "PixelData",
            "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence", "TransferSyntaxUID",
            "SpecificCharacterSet", "ModalityLUTSequence"]


def mutate(ds: Dataset, keyword: str, value: bytes | None) -> None:
    """Delete ``keyword`` (value None) or put raw ``value`` bytes under it,
    written as they are and parsed only when the file is read back."""
    target = ds.file_meta if keyword == "TransferSyntaxUID" else ds
    tag = Tag(pydicom.datadict.tag_for_keyword(keyword))
    if value is None:
        if tag in target:
            del target[tag]
        return
    vr = pydicom.datadict.dictionary_VR(tag)
    if vr == "SQ":  # a sequence becomes an empty one: a malformed functional group / LUT
        setattr(target, keyword, [])
        return
    vr = "OW" if keyword == "PixelData" else vr
    value += b"\0" * (len(value) % 2)
    target._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)


def check_inspect_and_scan(path: Path) -> None:
    """inspect_file returns a CTFile or raises SkipFile; scan lists the file once; a file
    that passes inspection loads or raises PixelDataError only."""
    try:
        ct = inspect_file(path, PurePosixPath(path.name))
    except SkipFile as exc:
        assert str(exc) and "\n" not in str(exc)
        ct = None
    result = scan(path.parent)
    assert len(result.files) + len(result.skipped) == 1
    assert (len(result.files) == 1) == (ct is not None)
    if ct is not None:
        try:
            image = load_ct(path)
        except PixelDataError:
            return
        assert image.hu.shape == (ct.n_frames, ct.rows, ct.columns)


@SETTINGS
@given(enhanced=st.booleans(),
       changes=st.lists(st.tuples(st.sampled_from(KEYWORDS), VALUES), min_size=1, max_size=4))
def test_header_mutations_never_raise_unhandled(enhanced, changes):
    ds = enhanced_ct_dataset() if enhanced else ct_dataset(phantom_hu(8, 8))
    for keyword, value in changes:
        mutate(ds, keyword, value)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mutated"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
        except Exception:  # pydicom refuses to encode this mutation: nothing to read back
            assume(False)
        check_inspect_and_scan(path)


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory) -> list[bytes]:
    root = tmp_path_factory.mktemp("fuzz")
    return [save(ct_dataset(phantom_hu(16, 16)), root / "ct").read_bytes(),
            save(enhanced_ct_dataset(np.stack([phantom_hu(8, 8)] * 2)), root / "enh").read_bytes()]


@SETTINGS
@given(which=st.integers(0, 1), data=st.data())
def test_byte_corruption_never_raises_unhandled(good_bytes, which, data):
    raw = bytearray(good_bytes[which])
    kind = data.draw(st.sampled_from(["flip", "truncate", "splice", "insert"]))
    if kind == "flip":  # overwrite a few header/data bytes
        for pos, byte in data.draw(st.lists(st.tuples(st.integers(128, len(raw) - 1), st.integers(0, 255)),
                                            min_size=1, max_size=8)):
            raw[pos] = byte
    elif kind == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif kind == "splice":
        pos = data.draw(st.integers(132, len(raw) - 1))
        raw[pos:pos + 40] = data.draw(st.binary(min_size=1, max_size=40))
    else:
        pos = data.draw(st.integers(0, len(raw)))
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=12))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corrupt"
        path.write_bytes(bytes(raw))
        check_inspect_and_scan(path)


@SETTINGS
@given(body=st.binary(max_size=3000), marker=st.sampled_from([b"", b"\0" * 128 + b"DICM", b"\x08\x00",
                                                              b"\x02\x00\x00\x00UL\x04\x00"]))
def test_random_bytes_never_raise_unhandled(body, marker):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random"
        path.write_bytes(marker + body)
        check_inspect_and_scan(path)
