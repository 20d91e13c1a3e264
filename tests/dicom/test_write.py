"""Derived objects: UIDs, provenance, geometry, safe output paths."""

from pathlib import Path, PurePosixPath

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from denoise.dicom import Derivation, derive_dataset, load_ct, output_path, scan, write_atomic
from denoise.dicom.write import UnsafeOutputPath
from tests.factory import write_series

OP = Derivation(key="test-op", description="Denoised by a test", series_suffix="denoised")


def write_all(src_root: Path, out_root: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for ct in scan(src_root).files:
        image = load_ct(ct.path)
        target = output_path(out_root, ct.relpath)
        write_atomic(derive_dataset(image.dataset, image.hu, image.rescales, OP), target)
        pairs.append((ct.path, target))
    return pairs


def test_derived_series_is_a_correct_dicom_derivation(tmp_path):
    write_series(tmp_path / "in" / "s", 3)
    pairs = write_all(tmp_path / "in", tmp_path / "out")
    outs = [pydicom.dcmread(o) for _, o in pairs]
    srcs = [pydicom.dcmread(s) for s, _ in pairs]
    assert len({d.SeriesInstanceUID for d in outs}) == 1
    assert outs[0].SeriesInstanceUID != srcs[0].SeriesInstanceUID
    assert len({d.SOPInstanceUID for d in outs}) == 3
    for src, out in zip(srcs, outs, strict=True):
        assert out.SOPInstanceUID != src.SOPInstanceUID
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert out.file_meta.MediaStorageSOPClassUID == CTImageStorage
        assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert out.StudyInstanceUID == src.StudyInstanceUID
        assert out.FrameOfReferenceUID == src.FrameOfReferenceUID
        assert out.ImagePositionPatient == src.ImagePositionPatient
        assert out.ImageOrientationPatient == src.ImageOrientationPatient
        assert out.PixelSpacing == src.PixelSpacing
        assert list(out.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert out.DerivationDescription == "Denoised by a test"
        ref = out.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert ref.ReferencedSOPClassUID == src.SOPClassUID
        assert out.SeriesNumber % 10000 == src.SeriesNumber and out.SeriesNumber > 10000
        assert out.SeriesDescription == f"{src.SeriesDescription} [denoised]"
    # the file was written with a preamble and DICM marker
    assert pairs[0][1].read_bytes()[128:132] == b"DICM"


def test_uids_are_stable_across_runs_so_resumed_batches_share_a_series(tmp_path):
    write_series(tmp_path / "in", 2)
    first = [pydicom.dcmread(o) for _, o in write_all(tmp_path / "in", tmp_path / "a")]
    second = [pydicom.dcmread(o) for _, o in write_all(tmp_path / "in", tmp_path / "b")]
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in second]
    other = Derivation(key="other-op", description="x", series_suffix="x")
    image = load_ct(scan(tmp_path / "in").files[0].path)
    ds = derive_dataset(image.dataset, image.hu, image.rescales, other)
    assert ds.SeriesInstanceUID != first[0].SeriesInstanceUID


def test_outputs_mirror_relative_paths_not_tag_values(tmp_path):
    write_series(tmp_path / "in" / "deep" / "er", 1, names=["IM 0001 é"])
    (_, out), = write_all(tmp_path / "in", tmp_path / "out")
    assert out == tmp_path / "out" / "deep" / "er" / "IM 0001 é"


@pytest.mark.parametrize("rel", ["../escape", "/abs/path", "a/../../b", ""])
def test_output_path_refuses_escapes(rel, tmp_path):
    with pytest.raises(UnsafeOutputPath):
        output_path(tmp_path, PurePosixPath(rel))


def test_long_series_description_fits_lo(tmp_path):
    write_series(tmp_path / "in", 1, series_description="X" * 64)
    (_, out), = write_all(tmp_path / "in", tmp_path / "out")
    desc = pydicom.dcmread(out).SeriesDescription
    assert len(desc) <= 64 and desc.endswith("[denoised]")


def test_compressed_source_is_written_uncompressed(shared_ct, tmp_path):
    src = shared_ct / "ricord-chest" / "dicom" / "1-001.dcm"
    image = load_ct(src)
    write_atomic(derive_dataset(image.dataset, image.hu, image.rescales, OP), tmp_path / "o.dcm")
    out = pydicom.dcmread(tmp_path / "o.dcm")
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (out.pixel_array == pydicom.dcmread(src).pixel_array).all()
