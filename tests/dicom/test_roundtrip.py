"""Exact HU round trips: an identity 'denoiser' gives bit-identical pixels."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from denoise.dicom import Derivation, derive_dataset, load_ct, scan, write_atomic
from denoise.samples import ENCODING_VARIANTS, EVALUATION_CT, sample_path
from tests.factory import ct_dataset, enhanced_ct_dataset, phantom_hu, save

IDENTITY = Derivation(key="identity", description="identity (test)", series_suffix="same")


def roundtrip(src: Path, tmp: Path) -> tuple[np.ndarray, np.ndarray, pydicom.Dataset]:
    image = load_ct(src)
    out = tmp / (src.name + ".out")
    write_atomic(derive_dataset(image.dataset, image.hu, image.rescales, IDENTITY), out)
    before = pydicom.dcmread(src).pixel_array
    written = pydicom.dcmread(out)
    return before, written.pixel_array, written


@pytest.mark.parametrize("name", EVALUATION_CT + ENCODING_VARIANTS)
def test_sample_files_round_trip_bit_identical(name, tmp_path):
    src = sample_path(name)
    if src is None:
        pytest.skip(f"{name} not installed (pydicom-data)")
    before, after, written = roundtrip(src, tmp_path)
    assert after.dtype == before.dtype
    assert np.array_equal(after, before)
    assert written.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@pytest.mark.parametrize("folder", ["ge-head", "rider-chest", "ricord-chest/dicom",
                                    "ricord-chest/Group Code/DICOM images"])
def test_every_shared_file_round_trips(folder, shared_ct, tmp_path):
    """Every slice of every shared series, JPEG-lossless included."""
    files = scan(shared_ct / folder).files
    assert files
    for ct in files:
        before, after, _ = roundtrip(ct.path, tmp_path)
        assert after.dtype == before.dtype and np.array_equal(after, before), ct.relpath


@pytest.mark.parametrize("per_frame", [True, False])
def test_enhanced_ct_round_trips_with_per_frame_rescale(per_frame, tmp_path):
    ds = enhanced_ct_dataset(per_frame_rescale=per_frame)
    src = save(ds, tmp_path / "enh.dcm")
    image = load_ct(src)
    if per_frame:
        assert image.rescales == [(1.0, -1024.0), (0.5, -1000.0)]
        # each frame's HU come from its own rescale
        stored = ds.pixel_array.astype(np.float64)
        assert np.array_equal(image.hu[1], (stored[1] * 0.5 - 1000.0).astype(np.float32))
    before, after, written = roundtrip(src, tmp_path)
    assert np.array_equal(after, before)
    assert int(written.NumberOfFrames) == 2


@pytest.mark.parametrize("slope,intercept,bits,signed", [
    (1.0, -1024.0, 12, False), (1.0, -1024.0, 16, True), (0.5, -1000.0, 16, True),
    (2.0, -2048.0, 12, False), (0.25, 0.0, 15, True), (1.0, 0.0, 16, True),
])
def test_synthetic_rescales_round_trip(slope, intercept, bits, signed, tmp_path):
    src = save(ct_dataset(phantom_hu(24, 40), slope=slope, intercept=intercept,
                          bits_stored=bits, signed=signed), tmp_path / "x.dcm")
    before, after, written = roundtrip(src, tmp_path)
    assert np.array_equal(after, before) and after.dtype == before.dtype
    assert float(written.RescaleSlope) == slope and float(written.RescaleIntercept) == intercept


def test_hu_out_of_stored_range_is_clipped_not_wrapped(tmp_path):
    src = save(ct_dataset(bits_stored=12, signed=False), tmp_path / "x.dcm")
    image = load_ct(src)
    hu = image.hu.copy()
    hu[0, 0, 0], hu[0, 0, 1] = 10_000.0, -10_000.0  # beyond 0..4095 stored
    out = tmp_path / "y.dcm"
    write_atomic(derive_dataset(image.dataset, hu, image.rescales, IDENTITY), out)
    stored = pydicom.dcmread(out).pixel_array
    assert stored[0, 0] == 4095 and stored[0, 1] == 0
