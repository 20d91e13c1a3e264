"""Finding CT by content, grouping into series, ordering, skipping junk."""

from pathlib import Path, PurePosixPath

import pytest
from pydicom.uid import generate_uid

from denoise.dicom import scan
from denoise.dicom.reading import lenient
from denoise.dicom.scan import SkipFile, inspect_file
from denoise.samples import sample_path
from tests.factory import ct_dataset, save, write_series


def test_files_are_found_by_content_not_extension(tmp_path):
    write_series(tmp_path / "a", 2, names=["IM_0001", "slice.jpg"])
    result = scan(tmp_path)
    assert sorted(str(f.relpath) for f in result.files) == ["a/IM_0001", "a/slice.jpg"]
    assert result.skipped == []


def test_preamble_less_dicom_is_read(tmp_path):
    from pydicom.filewriter import dcmwrite

    ds = ct_dataset()
    del ds.file_meta
    dcmwrite(tmp_path / "raw", ds, little_endian=True, implicit_vr=True)
    assert (tmp_path / "raw").read_bytes()[128:132] != b"DICM"
    assert [str(f.relpath) for f in scan(tmp_path).files] == ["raw"]


def test_series_are_grouped_by_uid_and_ordered_along_the_normal(tmp_path):
    # file names in the reverse order of position: position must win
    write_series(tmp_path / "s1", 5, shuffle_names=True)
    write_series(tmp_path / "s2", 3)
    result = scan(tmp_path)
    assert len(result.series) == 2
    for series in result.series:
        positions = [f.position for f in series.files]
        assert positions == sorted(positions)
        assert len({f.series_uid for f in series.files}) == 1
    s1 = next(s for s in result.series if s.n_slices == 5)
    assert [str(f.relpath) for f in s1.files] == [f"s1/IM_{k:04d}" for k in (4, 3, 2, 1, 0)]


def test_tilted_orientation_orders_by_projection_on_normal(tmp_path):
    uid = generate_uid()
    # normal = (0, 0.6, 0.8) for a tilted gantry; positions along it decrease with z
    orient = (1, 0, 0, 0, 0.8, -0.6)
    for k, z in enumerate([0.0, 4.0, 2.0]):
        ds = ct_dataset(z=z, instance=k + 1, orientation=orient, series_uid=uid)
        save(ds, tmp_path / f"f{k}")
    files = scan(tmp_path).series[0].files
    assert [f.position for f in files] == sorted(f.position for f in files)
    assert [str(f.relpath) for f in files] == ["f0", "f2", "f1"]


def test_fallback_to_instance_number_then_file_name(tmp_path):
    uid = generate_uid()
    for name, inst in (("b", 1), ("a", 2)):
        save(ct_dataset(z=None, instance=inst, series_uid=uid), tmp_path / "inst" / name)
    series = scan(tmp_path / "inst").series[0]
    assert [str(f.relpath) for f in series.files] == ["b", "a"]
    assert "InstanceNumber" in series.warnings[0]
    uid = generate_uid()
    for name in ("b", "a"):
        save(ct_dataset(z=None, instance=None, series_uid=uid), tmp_path / "name" / name)
    series = scan(tmp_path / "name").series[0]
    assert [str(f.relpath) for f in series.files] == ["a", "b"]


def test_duplicate_positions_and_uneven_spacing_warn_but_do_not_fail(tmp_path):
    uid = generate_uid()
    for k, z in enumerate([0.0, 1.0, 1.0, 2.0, 5.0]):
        save(ct_dataset(z=z, instance=k + 1, series_uid=uid), tmp_path / f"f{k}")
    series = scan(tmp_path).series[0]
    assert series.n_slices == 5
    assert any("duplicate" in w for w in series.warnings)
    assert any("uneven" in w for w in series.warnings)


def test_junk_is_skipped_with_one_reason_each(junk_dir):
    root, expected = junk_dir
    result = scan(root)
    good = {p for p, word in expected.items() if not word}
    assert {str(f.relpath) for f in result.files} == good
    reasons = {str(s.relpath): s.reason for s in result.skipped}
    assert set(reasons) == set(expected) - good  # each bad file exactly once
    for rel, word in expected.items():
        if word:
            assert word in reasons[rel], (rel, reasons[rel])
            assert "\n" not in reasons[rel]


def test_real_dicomdir_and_non_image_samples_are_skipped(tmp_path):
    import shutil

    for name in ("DICOMDIR", "test-SR.dcm", "rtstruct.dcm", "MR_small.dcm", "SC_rgb.dcm"):
        src = sample_path(name)
        if src is not None:
            shutil.copy(src, tmp_path / name)
    result = scan(tmp_path)
    assert result.files == []
    assert len(result.skipped) == len(list(tmp_path.iterdir()))
    assert all(not s.bad for s in result.skipped)


def test_missing_decoder_names_the_plugin(monkeypatch, tmp_path):
    import shutil

    src = sample_path("bad_sequence.dcm")  # JPEG lossless CT from pydicom-data
    if src is None:
        pytest.skip("pydicom-data not installed")
    shutil.copy(src, tmp_path / "jpeg_ll")

    class NoDecoder:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"]

    monkeypatch.setattr("denoise.dicom.pixels.get_decoder", lambda ts: NoDecoder())
    result = scan(tmp_path)
    assert result.files == []
    (skipped,) = result.skipped
    assert "pylibjpeg-libjpeg" in skipped.reason and skipped.bad
    from denoise.dicom import PixelDataError, load_ct

    with pytest.raises(PixelDataError, match="pylibjpeg"):
        load_ct(tmp_path / "jpeg_ll")


def test_symlink_loop_does_not_hang(tmp_path):
    write_series(tmp_path / "d", 1)
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d", target_is_directory=True)
    assert len(scan(tmp_path).files) == 1


def test_shared_series_are_kept_apart(shared_ct):
    result = scan(shared_ct)
    assert result.skipped == []
    by_folder = {}
    for series in result.series:
        folders = {PurePosixPath(f.relpath).parent.as_posix() for f in series.files}
        assert len(folders) == 1
        by_folder[folders.pop()] = series
    assert {k: v.n_slices for k, v in by_folder.items()} == {
        "ge-head": 28, "rider-chest": 95, "ricord-chest/dicom": 248,
        "ricord-chest/Group Code/DICOM images": 20, "acrin-abdomen-pelvis": 99, "crlm-liver": 41,
        "kits-kidney": 18, "lidc-chest": 150,
        "philips-chest-kernels/recon2": 64, "philips-chest-kernels/recon3": 64,  # one acquisition, two series
        "cptac-chest-b70f": 99}
    assert by_folder["ricord-chest/dicom"].transfer_syntaxes == ["JPEGLosslessSV1"]
    assert any("uneven" in w for w in by_folder["ge-head"].warnings)


def test_missing_input_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        scan(tmp_path / "nope")


def test_inspect_reads_enhanced_geometry(tmp_path):
    from tests.factory import enhanced_ct_dataset

    path = save(enhanced_ct_dataset(), tmp_path / "enh")
    ct = inspect_file(path, PurePosixPath("enh"))
    assert ct.n_frames == 2 and ct.pixel_spacing == (0.7, 0.7) and ct.position == 0.0


def test_unreadable_file_is_reported(tmp_path):
    import os

    path = save(ct_dataset(), tmp_path / "locked")
    os.chmod(path, 0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        (skipped,) = scan(tmp_path).skipped
        assert "cannot read" in skipped.reason
    finally:
        os.chmod(path, 0o644)


def test_path_is_posix_relative(series_dir):
    for f in scan(series_dir).files:
        assert not Path(str(f.relpath)).is_absolute()


def test_skip_reasons_quoting_header_values_stay_on_one_line(tmp_path):
    # Found by hypothesis: Modality "\n" put a line break into the reason.
    ds = ct_dataset()
    with lenient("test data"):  # pydicom's validation would object to the value (rightly)
        ds.Modality = "M\nR"
    path = save(ds, tmp_path / "odd.dcm")
    with pytest.raises(SkipFile) as err:
        inspect_file(path, PurePosixPath("odd.dcm"))
    assert str(err.value) == "not CT (Modality M R)"
