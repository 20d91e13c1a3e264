"""The Python API (denoise.api, denoise.volume, denoise.nifti): read, denoise, write and qa on
DICOM series, NIfTI volumes and arrays; the same pixels and derived series as the CLI."""

from __future__ import annotations

import doctest
import gzip
import io
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy import ndimage
from typer.testing import CliRunner

import cli
import denoise as ctd
from denoise.api import load_denoiser
from denoise.dicom.pixels import load_ct
from denoise.inference import Denoiser
from denoise.samples import sample_path
from tests.factory import SIGMA, write_noisy_series, write_series

runner = CliRunner()
DCIODVFY = Path("/usr/bin/dciodvfy")
# what makes a derived series the CLI's: identity, derivation, geometry and the pixels
SAME_AS_CLI = ("SOPInstanceUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "StudyInstanceUID",
               "FrameOfReferenceUID", "ImageType", "DerivationDescription", "DerivationCodeSequence",
               "SourceImageSequence", "ImagePositionPatient", "RescaleSlope", "RescaleIntercept", "PixelData")


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert message and "\n" not in message, f"not one line: {message!r}"
    return message


def cli_denoise(src, out, *args):
    result = runner.invoke(cli.app, ["denoise", str(src), str(out), *map(str, args)])
    assert result.exit_code == 0, result.output
    return result


def assert_same_series(api_out: Path, cli_out: Path) -> None:
    api_files = sorted(p.relative_to(api_out) for p in api_out.rglob("*") if p.is_file())
    cli_files = sorted(p.relative_to(cli_out) for p in cli_out.rglob("*") if p.is_file())
    assert api_files == cli_files and api_files
    for rel in api_files:
        a, c = pydicom.dcmread(api_out / rel), pydicom.dcmread(cli_out / rel)
        for keyword in SAME_AS_CLI:
            assert a.get(keyword) == c.get(keyword), f"{rel}: {keyword} differs from the CLI's"


def nifti_header(path: Path):
    """The header as stored on disk (nibabel's loaded header has its scaling reset)."""
    blob = path.read_bytes()
    blob = gzip.decompress(blob) if path.name.endswith(".gz") else blob
    return nib.Nifti1Header.from_fileobj(io.BytesIO(blob))


@pytest.mark.parametrize("module", ["denoise.api", "denoise.volume", "denoise.nifti"])
def test_docstring_examples_run(module):
    mod = __import__(module, fromlist=["_"])
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} doctest(s) of {module} failed (see above)"


def test_the_api_is_at_the_package_root_and_loads_lazily():
    assert {"read", "denoise", "write", "qa", "Volume", "QAReport"} <= set(dir(ctd))
    code = "import sys, denoise; assert 'denoise.api' not in sys.modules and 'nibabel' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
    with pytest.raises(AttributeError):
        ctd.no_such_thing  # noqa: B018


# ---------------------------------------------------------------- DICOM


def test_dicom_folder_read_denoise_write_is_the_clis_derived_series(tmp_path, series_dir, tiny_model_path):
    vol = ctd.read(series_dir)
    files = sorted((series_dir / "series1").iterdir())
    assert vol.shape == (4, 32, 32) and vol.hu.dtype == np.float32
    assert vol.spacing_mm == (2.0, 0.7, 0.7)
    np.testing.assert_array_equal(vol.hu, np.stack([load_ct(f).hu[0] for f in files]))
    first = pydicom.dcmread(files[0])
    assert vol.source["kind"] == "dicom" and vol.source["series_uid"] == first.SeriesInstanceUID
    assert "PatientID" not in str(vol.source) and first.PatientID not in str(vol.source)
    # the affine puts voxel (x, y, z) where DICOM says, in RAS: (x, y) -> -(LPS x, y)
    ipp = np.array(pydicom.dcmread(files[3]).ImagePositionPatient, float)
    np.testing.assert_allclose(vol.affine @ [0, 0, 3, 1], [-ipp[0], -ipp[1], ipp[2], 1])
    np.testing.assert_allclose(vol.affine @ [5, 2, 0, 1], [10 - 5 * 0.7, 10 - 2 * 0.7, 0, 1])

    out = ctd.denoise(vol, model=tiny_model_path, strength="medium")
    assert isinstance(out, ctd.Volume) and out.shape == vol.shape and out.source == vol.source
    written = ctd.write(out, tmp_path / "api", like=vol)
    assert sorted(p.name for p in written) == [f.name for f in files]
    cli_denoise(series_dir, tmp_path / "cli", "--model", tiny_model_path, "--strength", "medium")
    assert_same_series(tmp_path / "api", tmp_path / "cli")
    ds = [pydicom.dcmread(p) for p in written]
    assert len({d.SeriesInstanceUID for d in ds}) == 1 and ds[0].SeriesInstanceUID != first.SeriesInstanceUID
    assert ds[0].StudyInstanceUID == first.StudyInstanceUID and ds[0].ImageType[:2] == ["DERIVED", "SECONDARY"]
    assert "tiny@" in ds[0].DerivationDescription and "strength 0.667 (medium)" in ds[0].DerivationDescription
    np.testing.assert_allclose(load_ct(written[2]).hu[0], out.hu[2], atol=0.5)  # stored as rounded integers

    # the batch rules hold: the same result is kept, another one refused without force
    before = {p: p.stat().st_mtime_ns for p in written}
    assert ctd.write(out, tmp_path / "api", like=vol) == written
    assert {p: p.stat().st_mtime_ns for p in written} == before
    other = ctd.denoise(vol, model=tiny_model_path, strength="low")
    with pytest.raises(ValueError) as err:
        ctd.write(other, tmp_path / "api", like=vol)
    assert "4 of 4 file(s) not written" in one_line(err) and "force=True" in one_line(err)
    ctd.write(other, tmp_path / "api", like=vol, force=True)
    assert "strength 0.333 (low)" in pydicom.dcmread(written[0]).DerivationDescription


def test_a_25d_model_gets_the_neighbours_the_cli_gives_it(tmp_path):
    """Overlapping slices (0.5 mm apart, 1 mm thick): the neighbours are 2 slices away, in both."""
    from denoise.nn import ConvAutoencoder, save_model
    from denoise.normalize import HUWindow

    model = ConvAutoencoder({"channels": [4, 8], "neighbour_slices": 1}, np.random.default_rng(5))
    model.parameters()["encoder.0.conv0.weight"][:, :, 1:, :] += 0.05  # make the neighbours matter
    save_model(tmp_path / "m25", model, metadata={"normalization": HUWindow().to_dict()})
    write_noisy_series(tmp_path / "series", 5, image=np.full((32, 32), 40.0), gap_mm=0.5)
    vol = ctd.read(tmp_path / "series")
    assert vol.source["neighbour_step"] == 2
    out = ctd.denoise(vol, model=tmp_path / "m25", ensemble=1)
    loaded = Denoiser.load(tmp_path / "m25", ensemble=1)
    np.testing.assert_array_equal(out.hu[2], loaded(vol.hu[2], [vol.hu[0], vol.hu[4]]))
    np.testing.assert_array_equal(out.hu[1], loaded(vol.hu[1], [None, vol.hu[3]]))
    ctd.write(out, tmp_path / "api", like=vol)
    cli_denoise(tmp_path / "series", tmp_path / "cli", "--model", tmp_path / "m25", "--ensemble", "1")
    assert_same_series(tmp_path / "api", tmp_path / "cli")
    # a plain 3-D array is taken as evenly spaced thin slices: the adjacent ones
    np.testing.assert_array_equal(ctd.denoise(vol.hu, model=tmp_path / "m25", ensemble=1),
                                  loaded.volume(vol.hu))


def test_a_loaded_denoiser_and_tiles_give_the_clis_series(tmp_path, series_dir, tiny_model_path):
    den = load_denoiser(tiny_model_path, ensemble=4, tile=16, overlap=0.5)
    vol = ctd.read(series_dir)
    ctd.write(ctd.denoise(vol, model=den), tmp_path / "api", like=vol)
    cli_denoise(series_dir, tmp_path / "cli", "--model", tiny_model_path, "--ensemble", 4, "--tile", 16,
                "--overlap", 0.5)
    assert_same_series(tmp_path / "api", tmp_path / "cli")
    for kw, words in [({"tile": 4}, "tile must be a whole number of pixels >= 8"),
                      ({"overlap": 1.0}, "overlap must be in [0, 1)")]:
        with pytest.raises(ValueError) as err:
            load_denoiser(tiny_model_path, **kw)
        assert words in one_line(err)


@pytest.mark.skipif(not DCIODVFY.is_file(), reason="dciodvfy is not installed at /usr/bin/dciodvfy")
def test_a_written_file_passes_dciodvfy(tmp_path):
    vol = ctd.read(sample_path("CT_small.dcm"))
    written = ctd.write(ctd.denoise(vol, ensemble=1), tmp_path / "out", like=vol)
    res = subprocess.run([str(DCIODVFY), "-new", str(written[0])], capture_output=True, text=True, timeout=120)
    errors = [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors


def test_a_single_file_goes_to_a_dcm_path_as_the_cli_writes_it(tmp_path):
    src = sample_path("CT_small.dcm")
    vol = ctd.read(src)
    assert ctd.write(ctd.denoise(vol), tmp_path / "api" / "small-dn.dcm", like=vol) == [
        tmp_path / "api" / "small-dn.dcm"]
    cli_denoise(src, tmp_path / "cli" / "small-dn.dcm")
    assert_same_series(tmp_path / "api", tmp_path / "cli")


def test_a_folder_of_several_series_needs_series_as_adapt_takes_it(tmp_path):
    from denoise.dicom.scan import scan
    from denoise.text import short_uid
    from denoise.volume import series_volume

    write_series(tmp_path / "in" / "a", 2)
    write_series(tmp_path / "in" / "b", 3, series_description="OTHER")
    with pytest.raises(ValueError) as err:
        ctd.read(tmp_path / "in")
    assert "holds 2 CT series" in one_line(err) and "series=N" in one_line(err)
    listed = scan(tmp_path / "in").series  # in the order ct-denoise info lists them (its # column)
    assert [s.n_slices for s in listed] == [2, 3]
    assert ctd.read(tmp_path / "in", series=2).shape[0] == 3
    assert ctd.read(tmp_path / "in", series="1").shape[0] == 2
    assert ctd.read(tmp_path / "in", series=listed[1].uid).shape[0] == 3
    assert ctd.read(tmp_path / "in", series=short_uid(listed[1].uid)).shape[0] == 3  # as info's table shows it
    for series in listed:  # one scan, a volume per series
        np.testing.assert_array_equal(series_volume(series, tmp_path / "in").hu,
                                      ctd.read(tmp_path / "in", series=series.uid).hu)
    with pytest.raises(ValueError) as err:
        ctd.read(tmp_path / "in", series=3)
    assert "no series '3'" in one_line(err) and "# column of ct-denoise info" in one_line(err)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError) as err:
        ctd.read(tmp_path / "junk")
    assert "no CT series" in one_line(err) and "not a DICOM file" in one_line(err)


def test_write_errors_are_one_line(tmp_path, series_dir):
    vol = ctd.read(series_dir)
    cases = [
        (lambda: ctd.write(vol.hu, tmp_path / "o"), "write takes a Volume"),
        (lambda: ctd.write(ctd.Volume(vol.hu, vol.spacing_mm), tmp_path / "o"), "needs like="),
        (lambda: ctd.write(ctd.Volume(vol.hu[:2], vol.spacing_mm), tmp_path / "o", like=vol), "differ in shape"),
        (lambda: ctd.write(vol, series_dir / "series1" / "out"), "inside the input folder"),
        (lambda: ctd.write(vol, tmp_path / "o", dtype="int16"), "dtype is for NIfTI"),
    ]
    for call, words in cases:
        with pytest.raises(ValueError) as err:
            call()
        assert words in one_line(err)


# ---------------------------------------------------------------- NIfTI


def dcm2niix_like(path: Path, *, slope=0.5, inter=-1024.0, shape=(24, 20, 6), seed=0) -> tuple[Path, np.ndarray]:
    """An int16 NIfTI as dcm2niix writes axial CT (rows flipped: axes L, A, S), with a scaling,
    both transforms, a display range and a sidecar; and the HU it holds as (i, j, k)."""
    rng = np.random.default_rng(seed)
    stored = np.full(shape, 48, np.int16)  # -1000 HU: air
    stored[4:-4, 4:-4] = rng.integers(2000, 2200, (shape[0] - 8, shape[1] - 8, shape[2]))  # soft tissue
    affine = np.array([[-0.75, 0, 0, 90.0], [0, 0.75, 0, -80.0], [0, 0, 2.5, -300.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(stored, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_slope_inter(slope, inter)
    img.header.set_xyzt_units("mm", "sec")
    img.header["cal_min"], img.header["cal_max"], img.header["descrip"] = -160, 240, b"from the scanner"
    img.to_filename(path)
    path.with_name(path.name.split(".")[0] + ".json").write_text('{"ConvolutionKernel": "B30f", '
                                                               '"SliceThickness": 2.5}')
    return path, stored * slope + inter


def test_nifti_round_trip_keeps_the_affine_the_header_and_hu_exactly(tmp_path):
    path, hu_ijk = dcm2niix_like(tmp_path / "ct.nii.gz")
    vol = ctd.read(path)
    assert vol.shape == (6, 20, 24) and vol.spacing_mm == (2.5, 0.75, 0.75)
    assert vol.source["kernel"] == "B30f" and vol.source["axes_on_disk"] == "LAS"
    # put in DICOM's axes: z = the file's k, y = its j flipped (toward posterior), x = its i
    np.testing.assert_array_equal(vol.hu, hu_ijk.transpose(2, 1, 0)[:, ::-1, :])
    original = nib.load(path).affine
    for x, y, z in [(0, 0, 0), (23, 19, 5), (3, 7, 2)]:  # every voxel stays where it was in the scanner
        np.testing.assert_allclose(vol.affine @ [x, y, z, 1], original @ [x, 19 - y, z, 1], atol=1e-4)

    written = ctd.write(vol, tmp_path / "copy.nii.gz")
    assert written == [tmp_path / "copy.nii.gz"]
    a, b = nifti_header(path), nifti_header(written[0])
    differ = [k for k in a.keys() if not np.array_equal(a[k], b[k])]
    assert differ == ["descrip"] and b["descrip"].item().startswith(b"ct-denoise")
    assert (b["scl_slope"], b["scl_inter"], b.get_data_dtype()) == (0.5, -1024.0, np.int16)
    np.testing.assert_array_equal(nib.load(written[0]).dataobj.get_unscaled(), nib.load(path).dataobj.get_unscaled())
    back = ctd.read(written[0])
    np.testing.assert_array_equal(back.hu, vol.hu)
    np.testing.assert_array_equal(back.affine, vol.affine)


def test_a_denoised_nifti_keeps_its_header_and_says_what_was_done(tmp_path, tiny_model_path):
    path, _ = dcm2niix_like(tmp_path / "ct.nii")
    vol = ctd.read(path)
    out = ctd.denoise(vol, model=tiny_model_path)
    assert out.header is vol.header and out.derivation is not None
    ctd.write(out, tmp_path / "dn.nii.gz", like=vol)
    header = nifti_header(tmp_path / "dn.nii.gz")
    descrip = header["descrip"].item()
    assert descrip.startswith(b"ct-denoise") and b"denoised high" in descrip
    assert len(descrip) <= 79 and (header["cal_min"], header["cal_max"]) == (-160, 240)
    back = ctd.read(tmp_path / "dn.nii.gz")  # int16 like its source: rounded to the scaling's 0.5 HU
    assert np.abs(back.hu - out.hu).max() <= 0.25 + 1e-4
    ctd.write(out, tmp_path / "dn32.nii", dtype="float32")
    np.testing.assert_array_equal(ctd.read(tmp_path / "dn32.nii").hu, out.hu)  # float32: exact
    with pytest.raises(FileExistsError) as err:
        ctd.write(out, tmp_path / "dn32.nii")
    assert "force=True" in one_line(err)


@pytest.mark.parametrize("values, dtype, reason", [
    (np.linspace(0, 1, 480), np.float32, "within 0..1: a normalized image"),
    (np.arange(480) % 256, np.uint8, "within 0..255: an 8-bit image"),
    (np.linspace(0, 3000, 480), np.int16, "no value below 0 (no air)"),
    (np.linspace(5000, 9000, 480), np.float32, "outside -1100..4000 HU"),
    (np.where(np.arange(480) % 7, -1000.0, np.nan), np.float32, "NaN"),
])
def test_a_nifti_that_is_not_ct_in_hu_is_refused_with_its_reason(tmp_path, values, dtype, reason):
    nib.Nifti1Image(values.reshape(8, 6, 10).astype(dtype), np.eye(4)).to_filename(tmp_path / "x.nii.gz")
    with pytest.raises(ValueError) as err:
        ctd.read(tmp_path / "x.nii.gz")
    assert reason in one_line(err) and "x.nii.gz" in one_line(err)


def test_nifti_files_that_are_not_one_volume_are_refused(tmp_path):
    nib.Nifti1Image(np.full((4, 4, 3, 2), -1000, np.int16), np.eye(4)).to_filename(tmp_path / "4d.nii")
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti file")
    for name, words in [("4d.nii", "a 4-D file holds several"), ("junk.nii.gz", "not a readable NIfTI file"),
                        ("missing.nii", "no such file")]:
        with pytest.raises((ValueError, FileNotFoundError)) as err:
            ctd.read(tmp_path / name)
        assert words in one_line(err)


def test_a_nifti_made_from_a_dicom_series_denoises_to_the_same_hu(tmp_path, tiny_model_path):
    write_noisy_series(tmp_path / "series", 3, image=np.full((48, 48), 40.0) - 1040 * (np.arange(48) < 6))
    vol = ctd.read(tmp_path / "series")
    ctd.write(vol, tmp_path / "series.nii.gz")  # whole HU: int16, exact
    stored = nib.load(tmp_path / "series.nii.gz")
    assert stored.get_data_dtype() == np.int16
    flipped = nib.Nifti1Image(np.asarray(stored.dataobj)[:, ::-1], stored.affine @ np.array(
        [[1, 0, 0, 0], [0, -1, 0, 47], [0, 0, 1, 0], [0, 0, 0, 1]]))  # rows flipped, as dcm2niix stores them
    flipped.to_filename(tmp_path / "flipped.nii")
    for name in ("series.nii.gz", "flipped.nii"):
        nifti = ctd.read(tmp_path / name)
        np.testing.assert_array_equal(nifti.hu, vol.hu)
        np.testing.assert_allclose(nifti.affine, vol.affine, atol=1e-4)
        np.testing.assert_array_equal(ctd.denoise(nifti, model=tiny_model_path).hu,
                                      ctd.denoise(vol, model=tiny_model_path).hu)


def test_a_shared_series_and_a_nifti_of_it_give_the_clis_hu(tmp_path, shared_ct):
    """The notebook route on real CT: three slices of a shared series, through the API and the CLI."""
    src = sorted(p for p in (shared_ct / "kits-kidney").rglob("*.dcm"))[:3]
    if len(src) < 3:
        pytest.skip("kits-kidney is not in the shared data")
    (tmp_path / "series").mkdir()
    for p in src:
        shutil.copy(p, tmp_path / "series" / p.name)
    vol = ctd.read(tmp_path / "series")
    assert vol.source["kernel"] and vol.shape[0] == 3
    out = ctd.denoise(vol, ensemble=1, strength="medium")
    ctd.write(out, tmp_path / "api", like=vol)
    cli_denoise(tmp_path / "series", tmp_path / "cli", "--ensemble", "1", "--strength", "medium")
    assert_same_series(tmp_path / "api", tmp_path / "cli")
    ctd.write(vol, tmp_path / "vol.nii.gz")
    nifti_out = ctd.denoise(ctd.read(tmp_path / "vol.nii.gz"), ensemble=1, strength="medium")
    np.testing.assert_allclose(nifti_out.hu, out.hu, atol=1e-3)
    relpaths = vol.source["relpaths"]  # in the series' order, along the slice normal
    cli_hu = np.stack([load_ct(tmp_path / "cli" / relpaths[i]).hu[k] for i, k in vol.source["frames"]])
    assert relpaths == sorted(relpaths, reverse=True)  # its positions fall as its file names rise
    # the CLI's are rounded to stored values and clipped to their range (unsigned here: -1024 HU and up)
    inside = cli_hu > cli_hu.min()
    assert inside.mean() > 0.99
    np.testing.assert_allclose(nifti_out.hu[inside], cli_hu[inside], atol=0.5 + 1e-3)


# ---------------------------------------------------------------- arrays


def test_arrays_in_give_arrays_of_the_same_shape_out(tiny_model_path):
    rng = np.random.default_rng(0)
    stack = (np.full((3, 40, 36), -1000.0) + np.pad(rng.normal(1040, 20, (3, 30, 26)), ((0, 0), (5, 5), (5, 5))))
    loaded = Denoiser.load(tiny_model_path, strength="high")
    two = ctd.denoise(stack[1], model=tiny_model_path)
    assert two.shape == (40, 36) and two.dtype == np.float32
    np.testing.assert_array_equal(two, loaded(stack[1].astype(np.float32)))
    three = ctd.denoise(stack.astype(np.int16), model=tiny_model_path)
    assert three.shape == stack.shape and three.dtype == np.float32
    np.testing.assert_array_equal(three[1], loaded(stack[1].astype(np.int16).astype(np.float32)))


def test_array_and_setting_errors_are_one_line(tiny_model_path):
    slice_ = np.full((16, 16), -1000.0)
    cases = [
        (np.zeros((2, 2, 8, 8)), {}, "got shape (2, 2, 8, 8)"),
        (np.zeros((0, 8)), {}, "got shape (0, 8)"),
        (np.full((16, 16), 0.5), {}, "a normalized image"),
        (np.full((16, 16), 1 + 1j), {}, "real numeric array"),
        ("scan.dcm", {}, "real numeric array"),
        (slice_, {"strength": "max"}, "strength must be low, medium, high"),
        (slice_, {"ensemble": 3}, "ensemble must be one of 1, 2, 4, 8"),
        (slice_, {"noise_sd": -1}, "noise_sd must be a number of HU >= 0"),
        (slice_, {"noise_sd": 10, "model": tiny_model_path}, "noise_sd needs a model with a noise-level input"),
    ]
    for data, kw, words in cases:
        with pytest.raises(ValueError) as err:
            ctd.denoise(data, **kw)
        assert words in one_line(err), one_line(err)
    with pytest.raises(ValueError) as err:
        ctd.Volume(np.zeros((2, 4, 4)), (1.0, 0.0, 1.0))
    assert "spacing_mm must be three numbers > 0" in one_line(err)
    with pytest.raises(ValueError) as err:
        ctd.Volume(np.zeros((2, 4, 4)), (1, 1, 1), np.zeros((4, 4)))
    assert "last row must be 0 0 0 1" in one_line(err)


# ---------------------------------------------------------------- qa


def test_qa_gives_the_measures_of_ct_denoise_qa(tmp_path):
    from pipelines import qa as qa_job

    write_noisy_series(tmp_path / "before", 3)
    before = ctd.read(tmp_path / "before")
    smoothed = ctd.Volume(ndimage.gaussian_filter(before.hu, (0, 1, 1)), before.spacing_mm, before.affine)
    ctd.write(smoothed, tmp_path / "after", like=before)  # a stand-in denoiser, as a derived series
    after = ctd.read(tmp_path / "after")
    report = ctd.qa(before, after)
    data = report.to_dict()
    series = qa_job.run(tmp_path / "before", tmp_path / "after").to_dict()["series"][0]
    for key in ("before", "after", "change", "residual_sd_hu", "residual_structure", "nps_method", "nps_curve"):
        assert data[key] == series[key], key
    assert data["paired"] and data["slices"] == 3
    assert abs(report.before["noise_sd_hu"] - SIGMA) < 0.15 * SIGMA
    assert report.change["noise_reduction_pct"] > 30
    alone = ctd.qa(before)
    assert alone.after is None and alone.to_dict()["before"] == report.before
    # arrays: without a spacing the measures in mm are left out, and the notes say so
    bare = ctd.qa(before.hu[0]).to_dict()
    assert bare["before"]["noise_sd_hu"] is not None and bare["before"]["edge_width_mm"] is None
    assert any("PixelSpacing" in n for n in bare["notes"])
    with pytest.raises(ValueError) as err:
        ctd.qa(before, after.hu[:2])
    assert "differ in shape" in one_line(err)


def test_an_enhanced_ct_file_is_a_volume_of_its_frames(tmp_path, tiny_model_path):
    from tests.factory import enhanced_ct_dataset, save

    save(enhanced_ct_dataset(), tmp_path / "in" / "enhanced.dcm")
    vol = ctd.read(tmp_path / "in")
    assert vol.shape == (2, 32, 32) and vol.source["frames"] == [[0, 0], [0, 1]]
    np.testing.assert_array_equal(vol.hu, load_ct(tmp_path / "in" / "enhanced.dcm").hu)
    assert vol.spacing_mm == (1.0, 0.7, 0.7) and vol.source["neighbour_step"] == 0  # multi-frame: 2-D
    ctd.write(ctd.denoise(vol, model=tiny_model_path), tmp_path / "api", like=vol)
    cli_denoise(tmp_path / "in", tmp_path / "cli", "--model", tiny_model_path)
    assert_same_series(tmp_path / "api", tmp_path / "cli")
