"""Derived DICOM that strict archives and validators accept: dicom3tools'
dciodvfy on every kind of input we write from, Enhanced CT derivation in its
functional groups, UIDs unique per pixel content, padding kept pixel for
pixel, non-HU maps ignored, distinct Series Numbers, the processing
equipment recorded, empty main-dataset UIDs filled from the file meta."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from typer.testing import CliRunner

import cli
from denoise import __version__
from denoise.dicom import scan
from denoise.dicom.provenance import IMPLEMENTATION_UID
from denoise.samples import sample_path
from pipelines import denoise_folder, noise
from tests import peers
from tests.factory import (
    compressed_ct_dataset,
    ct_dataset,
    ct_from_stored,
    enhanced_ct_dataset,
    phantom_hu,
    save,
    write_series,
)

runner = CliRunner()
DCIODVFY = shutil.which("dciodvfy")
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy missing: apt-get install dicom3tools")


def invoke(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def only_file(folder: Path) -> Path:
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) == 1, files
    return files[0]


# ------------------------------------------------------------------ dciodvfy

def dciodvfy_errors(path: Path) -> list[str]:
    res = subprocess.run([DCIODVFY, "-new", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (res.stdout + res.stderr).splitlines() if line.startswith("Error")]


def _key(line: str) -> tuple[str, str]:
    match = re.match(r"Error - <(/[^>]*)>\s*-\s*(.*)", line)
    if not match:
        return "", line
    return re.sub(r"\[\d+\]", "", match.group(1)), match.group(2)


def new_errors(source: Path, derived: Path) -> list[str]:
    """dciodvfy errors of ``derived`` that ``source`` does not have. An error
    about a value copied from the source (the same message quoting the same
    value, e.g. a non-conformant source UID now in SourceImageSequence) is
    the source's, not new."""
    before = [_key(line) for line in dciodvfy_errors(source)]
    paths, values = set(before), {msg for _, msg in before if "<" in msg}
    return [line for line in dciodvfy_errors(derived) if _key(line) not in paths and _key(line)[1] not in values]


def _inputs(tmp_path: Path) -> dict[str, Path]:
    """One input of each kind: single-frame CT, Enhanced CT in HU, JPEG lossless, JPEG 2000."""
    found = {"single-frame": sample_path("CT_small.dcm"), "jpeg-lossless": sample_path("bad_sequence.dcm"),
             "jpeg2000": sample_path("693_J2KR.dcm")}
    found["enhanced-hu"] = save(enhanced_ct_dataset(), tmp_path / "enhanced.dcm")
    return {k: v for k, v in found.items() if v is not None}


@needs_dciodvfy
@pytest.mark.parametrize("command", ["noise", "denoise"])
def test_outputs_add_no_dciodvfy_error_to_their_input(command, tmp_path):
    inputs = _inputs(tmp_path)
    assert {"single-frame", "enhanced-hu"} <= set(inputs)
    for kind, src in inputs.items():
        folder = tmp_path / kind
        folder.mkdir()
        shutil.copy(src, folder / "in.dcm")
        extra = ["--sigma", "20"] if command == "noise" else []
        res = invoke(command, folder, tmp_path / f"{kind}-out", *extra)
        assert res.exit_code == 0, (kind, res.output)
        out = only_file(tmp_path / f"{kind}-out")
        assert new_errors(folder / "in.dcm", out) == [], kind


@needs_dciodvfy
def test_enhanced_ct_perfusion_map_processed_on_request_adds_no_error(tmp_path):
    src = sample_path("eCT_Supplemental.dcm")
    if src is None:
        pytest.skip("pydicom-data's eCT_Supplemental.dcm is not installed")
    res = invoke("denoise", src, tmp_path / "out", "--allow-non-hu")
    assert res.exit_code == 0, res.output
    assert new_errors(src, only_file(tmp_path / "out")) == []


@needs_dciodvfy
@pytest.mark.parametrize("command", ["noise", "denoise"])
def test_real_shared_series_outputs_add_no_dciodvfy_error(command, shared_ct, tmp_path):
    """One slice of real series from GE, Philips and Siemens scanners (JPEG-lossless RICORD included)."""
    for folder in ("ge-head", "ricord-chest/dicom", "lidc-chest", "acrin-abdomen-pelvis", "kits-kidney"):
        files = scan(shared_ct / folder).files
        src = files[len(files) // 2].path
        out = tmp_path / folder.replace("/", "_")
        report = noise.run(src, out, sigma_hu=20.0) if command == "noise" else denoise_folder.run(src, out)
        assert report.exit_code == 0, report.outcomes
        assert new_errors(src, only_file(out)) == [], folder


# ------------------------------------------------------------------ Enhanced CT derivation

def test_enhanced_ct_is_derived_primary_with_its_derivation_per_frame(tmp_path):
    src = save(enhanced_ct_dataset(), tmp_path / "in" / "e.dcm")
    assert denoise_folder.run(tmp_path / "in", tmp_path / "out").exit_code == 0
    ds = pydicom.dcmread(tmp_path / "out" / "e.dcm")
    source = pydicom.dcmread(src)
    assert list(ds.ImageType)[:2] == ["DERIVED", "PRIMARY"]
    for keyword in ("DerivationDescription", "SourceImageSequence", "DerivationCodeSequence"):
        assert keyword not in ds
    for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        derivation = frame.DerivationImageSequence[0]
        assert "Denoised by ct-denoise" in derivation.DerivationDescription
        assert derivation.DerivationCodeSequence[0].CodeValue == "113087"  # Smoothing, CID 7203
        ref = derivation.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert ref.ReferencedFrameNumber == k + 1
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    evidence = ds.SourceImageEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        source.SOPInstanceUID
    # the pairing of evaluate/qa still finds the source through the functional groups
    assert scan(tmp_path / "out").files[0].source_sop_uid == source.SOPInstanceUID


def test_single_frame_ct_stays_derived_secondary_with_a_derivation_code(tmp_path):
    save(ct_dataset(), tmp_path / "in" / "a.dcm")
    assert noise.run(tmp_path / "in", tmp_path / "out", sigma_hu=10.0).exit_code == 0
    ds = pydicom.dcmread(tmp_path / "out" / "a.dcm")
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.DerivationCodeSequence[0].CodeValue == "113042"  # Pixel by pixel addition
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID


# ------------------------------------------------------------------ UIDs

def test_one_sop_instance_uid_never_names_two_different_images(tmp_path):
    """The issue's case (one file under two layouts) and its converse (two
    different files that claim one SOP Instance UID), through noise and denoise."""
    ds = ct_dataset()
    save(ds, tmp_path / "a" / "x.dcm")
    save(ds, tmp_path / "b" / "sub" / "x.dcm")
    other = ct_dataset(phantom_hu(seed=5))
    other.SOPInstanceUID = ds.SOPInstanceUID
    other.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    save(other, tmp_path / "c" / "x.dcm")
    outputs = []
    for name in ("a", "b", "c"):
        assert noise.run(tmp_path / name, tmp_path / f"{name}-noisy", sigma_hu=30.0, seed=1).exit_code == 0
        for ensemble in (1, 2):
            target = tmp_path / f"{name}-den{ensemble}"
            assert denoise_folder.run(tmp_path / name, target, ensemble=ensemble).exit_code == 0
            outputs.append(only_file(target))
        outputs.append(only_file(tmp_path / f"{name}-noisy"))
    by_uid: dict[str, set[bytes]] = {}
    for path in outputs:
        out = pydicom.dcmread(path)
        by_uid.setdefault(out.SOPInstanceUID, set()).add(out.PixelData)
    assert all(len(pixels) == 1 for pixels in by_uid.values())  # one UID, one image
    assert len(by_uid) == 6  # a and b are the same image; c differs from both


# ------------------------------------------------------------------ padding

def _padded_stored(signed: bool) -> np.ndarray:
    hu = phantom_hu(48, 48)
    stored = np.rint(hu + 1024).astype(np.int64)
    yy, xx = np.mgrid[:48, :48]
    outside = np.hypot(yy - 24, xx - 24) > 22
    stored[outside] = -2000 if signed else 0
    stored[~outside & (stored < 24)] = 24  # air just above the padding value of the unsigned case
    return stored


@pytest.mark.parametrize("command", ["noise", "denoise"])
@pytest.mark.parametrize("signed", [True, False])
def test_padding_is_kept_pixel_for_pixel(command, signed, tmp_path):
    stored = _padded_stored(signed)
    ds = ct_from_stored(stored, signed=signed)
    ds.PixelPaddingValue = -2000 if signed else 0
    ds["PixelPaddingValue"].VR = "SS" if signed else "US"
    save(ds, tmp_path / "in" / "p.dcm")
    if command == "noise":  # strong noise: without care, air would fall onto the padding value
        report = noise.run(tmp_path / "in", tmp_path / "out", sigma_hu=60.0)
    else:
        report = denoise_folder.run(tmp_path / "in", tmp_path / "out")
    assert report.exit_code == 0, report.outcomes
    out = pydicom.dcmread(tmp_path / "out" / "p.dcm")
    pad = stored == ds.PixelPaddingValue
    assert (out.pixel_array[pad] == ds.PixelPaddingValue).all()
    assert not (out.pixel_array[~pad] == ds.PixelPaddingValue).any()
    assert out.PixelPaddingValue == ds.PixelPaddingValue


def test_padding_range_limit_is_kept(tmp_path):
    stored = _padded_stored(True)
    yy, _ = np.mgrid[:48, :48]
    stored[(stored == -2000) & (yy < 24)] = -1900  # two padding values, within the declared range
    ds = ct_from_stored(stored)
    ds.PixelPaddingValue, ds.PixelPaddingRangeLimit = -2000, -1800
    ds["PixelPaddingValue"].VR = ds["PixelPaddingRangeLimit"].VR = "SS"
    save(ds, tmp_path / "in" / "p.dcm")
    assert noise.run(tmp_path / "in", tmp_path / "out", sigma_hu=40.0).exit_code == 0
    out = pydicom.dcmread(tmp_path / "out" / "p.dcm")
    pad = (stored >= -2000) & (stored <= -1800)
    assert (out.pixel_array[pad] == stored[pad]).all()
    assert not ((out.pixel_array[~pad] >= -2000) & (out.pixel_array[~pad] <= -1800)).any()
    assert out.PixelPaddingRangeLimit == -1800


def test_real_padding_survives_denoising(shared_ct, tmp_path):
    files = scan(shared_ct / "ge-head").files
    src = files[len(files) // 2].path
    source = pydicom.dcmread(src)
    assert denoise_folder.run(src, tmp_path / "out").exit_code == 0
    out = pydicom.dcmread(only_file(tmp_path / "out"))
    pad = source.pixel_array == source.PixelPaddingValue
    assert pad.sum() > 1000
    assert (out.pixel_array[pad] == source.PixelPaddingValue).all()
    assert not (out.pixel_array[~pad] == source.PixelPaddingValue).any()


# ------------------------------------------------------------------ non-HU maps

def _rescale_type(value: str) -> Dataset:
    ds = ct_dataset()
    ds.RescaleType = value
    return ds


def _image_type(*values: str) -> Dataset:
    ds = ct_dataset()
    ds.ImageType = ["DERIVED", "PRIMARY", "AXIAL", *values]
    return ds


def _real_world(units: str) -> Dataset:
    ds = ct_dataset()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = units, "UCUM", units
    item = Dataset()
    item.MeasurementUnitsCodeSequence = Sequence([code])
    item.RealWorldValueSlope, item.RealWorldValueIntercept = 1.0, 0.0
    item.RealWorldValueFirstValueMapped, item.RealWorldValueLastValueMapped = 0, 4095
    item.LUTExplanation, item.LUTLabel = units, "map"
    ds.RealWorldValueMappingSequence = Sequence([item])
    return ds


def _enhanced_mgml() -> Dataset:
    ds = enhanced_ct_dataset()
    for frame in ds.PerFrameFunctionalGroupsSequence:
        frame.PixelValueTransformationSequence[0].RescaleType = "MGML"
    return ds


NON_HU = {
    "rescale-us": (lambda: _rescale_type("US"), "RescaleType US"),
    "iodine": (lambda: _image_type("IODINE"), "IODINE"),
    "perfusion": (lambda: _image_type("PERFUSION", "RCBF"), "PERFUSION/RCBF"),
    "real-world-units": (lambda: _real_world("ml/100ml/s"), "ml/100ml/s"),
    "enhanced-mgml": (_enhanced_mgml, "RescaleType MGML"),
}


@pytest.mark.parametrize("command", ["noise", "denoise"])
def test_non_hu_maps_are_ignored_with_their_reason(command, tmp_path):
    for name, (build, _) in NON_HU.items():
        save(build(), tmp_path / "in" / f"{name}.dcm")
    save(_image_type("VMI"), tmp_path / "in" / "vmi.dcm")  # virtual monoenergetic: HU, processed
    save(_rescale_type("Houndsfield Unit"), tmp_path / "in" / "spelled.dcm")  # as a real scanner writes HU
    extra = ["--sigma", "20"] if command == "noise" else []
    res = invoke(command, tmp_path / "in", tmp_path / "out", *extra)
    assert res.exit_code == 0, res.output
    for name, (_, reason) in NON_HU.items():
        line = next(line for line in res.output.splitlines() if f"{name}.dcm" in line)
        assert line.startswith("ignored") and "not HU" in line and reason in line, line
        assert not (tmp_path / "out" / f"{name}.dcm").exists()
    assert (tmp_path / "out" / "vmi.dcm").is_file() and (tmp_path / "out" / "spelled.dcm").is_file()
    assert "2 written" in res.output and f"{len(NON_HU)} ignored" in res.output


def test_non_hu_only_input_exits_3_and_the_option_processes_it(tmp_path):
    save(_image_type("PERFUSION"), tmp_path / "in" / "map.dcm")
    res = invoke("denoise", tmp_path / "in", tmp_path / "out")
    assert res.exit_code == 3, res.output
    res = invoke("denoise", tmp_path / "in", tmp_path / "out", "--allow-non-hu")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "map.dcm").is_file()
    res = invoke("denoise", tmp_path / "in", tmp_path / "out", "--allow-non-hu")  # resumes: already done
    assert res.exit_code == 0 and "1 already done" in res.output, res.output


def test_parametric_maps_are_ignored(tmp_path):
    ds = ct_dataset()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.30"
    save(ds, tmp_path / "in" / "pm.dcm")
    result = scan(tmp_path / "in")
    assert not result.files and not result.skipped[0].bad and "parametric map" in result.skipped[0].reason


# ------------------------------------------------------------------ series numbers and descriptions

def test_every_derived_series_gets_its_own_number_and_description_on_every_rerun(tmp_path):
    save(ct_dataset(), tmp_path / "in" / "a.dcm")
    runs = {
        "e1": lambda out: denoise_folder.run(tmp_path / "in", out, ensemble=1),
        "e2": lambda out: denoise_folder.run(tmp_path / "in", out, ensemble=2),
        "medium": lambda out: denoise_folder.run(tmp_path / "in", out, strength="medium"),
        "sd10": lambda out: denoise_folder.run(tmp_path / "in", out, noise_sd_hu=10.0),
        "noise": lambda out: noise.run(tmp_path / "in", out, sigma_hu=30.0),
        "noise-seed": lambda out: noise.run(tmp_path / "in", out, sigma_hu=30.0, seed=7),
    }
    numbers, descriptions = {}, {}
    for name, job in runs.items():
        for attempt in ("first", "again"):
            assert job(tmp_path / f"{name}-{attempt}").exit_code == 0
            ds = pydicom.dcmread(tmp_path / f"{name}-{attempt}" / "a.dcm")
            numbers.setdefault(name, set()).add(int(ds.SeriesNumber))
            descriptions.setdefault(name, set()).add(str(ds.SeriesDescription))
            assert int(ds.SeriesNumber) % 10000 == 3 and 0 < int(ds.SeriesNumber) < 2**31
    assert all(len(v) == 1 for v in numbers.values())  # reruns keep the number
    assert len({next(iter(v)) for v in numbers.values()}) == len(runs)  # distinct derivations, distinct numbers
    assert len({next(iter(v)) for v in descriptions.values()}) == len(runs)
    assert "2v" in next(iter(descriptions["e2"])) and "medium" in next(iter(descriptions["medium"]))


# ------------------------------------------------------------------ provenance

def test_processing_equipment_file_meta_and_times_are_recorded(tmp_path):
    ds = ct_dataset()
    ds.AcquisitionDate, ds.AcquisitionTime = "20190304", "101500"
    ds.ContentDate, ds.ContentTime = "20190304", "101600"
    ds.TimezoneOffsetFromUTC = "+0930"
    save(ds, tmp_path / "in" / "a.dcm")
    res = invoke("denoise", tmp_path / "in", tmp_path / "out")
    assert res.exit_code == 0, res.output
    out = pydicom.dcmread(tmp_path / "out" / "a.dcm")
    item = out.ContributingEquipmentSequence[-1]
    assert item.Manufacturer == "ct-denoise"
    versions = list(item.SoftwareVersions)
    assert versions[0] == __version__ and versions[1].startswith("default_ct@")
    purpose = item.PurposeOfReferenceCodeSequence[0]
    assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == \
        ("109103", "DCM", "Modifying Equipment")
    assert out.file_meta.ImplementationClassUID == IMPLEMENTATION_UID
    assert out.file_meta.ImplementationVersionName.startswith("CTDENOISE")
    assert out.file_meta.SourceApplicationEntityTitle == "CTDENOISE"
    assert (out.AcquisitionDate, out.AcquisitionTime) == ("20190304", "101500")
    there = dt.datetime.now(dt.timezone(dt.timedelta(hours=9, minutes=30)))
    made = dt.datetime.strptime(out.InstanceCreationDate + out.InstanceCreationTime.split(".")[0], "%Y%m%d%H%M%S")
    assert abs((made - there.replace(tzinfo=None)).total_seconds()) < 600  # in the source's time zone
    assert (out.ContentDate, out.ContentTime) == (out.InstanceCreationDate, out.InstanceCreationTime)
    assert item.ContributionDateTime.endswith("+0930")
    assert out.DerivationCodeSequence[0].CodeValue == "113087"


def test_earlier_contributing_equipment_is_kept(tmp_path):
    ds = ct_dataset()
    earlier = Dataset()
    earlier.Manufacturer = "Some Anonymizer"
    ds.ContributingEquipmentSequence = Sequence([earlier])
    save(ds, tmp_path / "in" / "a.dcm")
    assert noise.run(tmp_path / "in", tmp_path / "out", sigma_hu=5.0).exit_code == 0
    out = pydicom.dcmread(tmp_path / "out" / "a.dcm")
    assert [i.Manufacturer for i in out.ContributingEquipmentSequence] == ["Some Anonymizer", "ct-denoise"]


# ------------------------------------------------------------------ empty main-dataset UIDs

def test_empty_sop_uids_in_the_main_dataset_are_filled_from_the_file_meta(tmp_path):
    """As a DCMTK-written PACS export (JPEG 2000 lossless) has them."""
    pytest.importorskip("openjpeg")
    ds = compressed_ct_dataset(phantom_hu(64, 64))
    sop_class, sop_uid = ds.SOPClassUID, ds.SOPInstanceUID
    ds.SOPClassUID, ds.SOPInstanceUID = "", ""
    path = tmp_path / "in" / "x.dcm"
    path.parent.mkdir()
    ds.preamble = b"\0" * 128
    ds.save_as(path, enforce_file_format=False)
    assert pydicom.dcmread(path).SOPInstanceUID == ""
    res = invoke("denoise", tmp_path / "in", tmp_path / "out")
    assert res.exit_code == 0, res.output
    out = pydicom.dcmread(tmp_path / "out" / "x.dcm")
    assert out.SOPClassUID == sop_class and out.SOPInstanceUID not in ("", sop_uid)
    assert out.SourceImageSequence[0].ReferencedSOPInstanceUID == sop_uid
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert scan(tmp_path / "in").files[0].sop_uid == sop_uid


# ------------------------------------------------------------------ a real archive

@pytest.mark.skipif(peers.ORTHANC is None or peers.STORESCU is None,
                    reason="Orthanc or dcmtk's storescu missing: apt-get install orthanc dcmtk")
def test_an_orthanc_archive_files_every_derived_series_in_the_source_study(tmp_path):
    write_series(tmp_path / "in", 2)
    enhanced = enhanced_ct_dataset(study_uid=pydicom.dcmread(tmp_path / "in" / "IM_0000").StudyInstanceUID)
    enhanced.SeriesNumber = 4
    save(enhanced, tmp_path / "in" / "enhanced.dcm")
    assert noise.run(tmp_path / "in", tmp_path / "noisy", sigma_hu=30.0).exit_code == 0
    for ensemble in (1, 2):
        assert denoise_folder.run(tmp_path / "in", tmp_path / f"den{ensemble}", ensemble=ensemble).exit_code == 0
    folders = ["in", "noisy", "den1", "den2"]
    files = [p for name in folders for p in sorted((tmp_path / name).rglob("*")) if p.is_file()]
    with peers.orthanc(tmp_path / "orthanc") as archive:
        sent = peers.storescu(archive, *files)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert len(archive.get("/studies")) == 1  # every derived series joins the source study
        assert len(archive.get("/instances")) == len(files) == 12  # none dropped as "already stored"
        series = [archive.get(f"/series/{s}")["MainDicomTags"] for s in archive.get("/series")]
    assert len(series) == 2 * len(folders)  # the synthetic series and the Enhanced CT, four times over
    assert len({s["SeriesInstanceUID"] for s in series}) == len(series)
    assert len({(s.get("SeriesNumber"), s.get("SeriesDescription")) for s in series}) == len(series)


def test_a_corrected_source_gets_another_derived_uid_and_is_not_taken_as_done(tmp_path):
    """Issue 28: the derived SOP Instance UID depended on pixels, rescale and settings only, so a
    source re-sent with a corrected patient name found its old derived object 'already done'."""
    from pydicom.uid import ExplicitVRLittleEndian

    from denoise.dicom.identity import Derivation, expected_sop_uid

    ds = ct_dataset(phantom_hu(16, 16))
    ds.PatientName = "Wrong^Patient"
    how = Derivation(key="test", description="test", series_suffix="test")
    rescales = [(1.0, -1024.0)]
    before = expected_sop_uid(ds, rescales, how)
    implicit = save(ds, tmp_path / "implicit.dcm")
    explicit = pydicom.dcmread(implicit)
    explicit.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    explicit.save_as(tmp_path / "explicit.dcm", implicit_vr=False, little_endian=True)
    for path in (implicit, tmp_path / "explicit.dcm"):  # the same object in either syntax: the same UID
        assert expected_sop_uid(pydicom.dcmread(path), rescales, how) == before
    ds.PatientName = "Right^Patient"
    assert expected_sop_uid(ds, rescales, how) != before
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    ds.PatientName = "Wrong^Patient"
    save(ds, src / "a.dcm")
    assert denoise_folder.run(src, out).count("written") == 1
    ds.PatientName = "Right^Patient"
    save(ds, src / "a.dcm")  # the source corrected; a rerun without --force must not keep the stale output
    again = denoise_folder.run(src, out)
    assert again.count("exists") == 0 and "is not this operation's result" in again.outcomes[0].reason
