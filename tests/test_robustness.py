"""A corpus of broken, odd and foreign files (built in tmp): `denoise` and
`info` must report each bad file once with a reason, process every good file,
never print a traceback and never touch the inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless
from typer.testing import CliRunner

import cli
from denoise.dicom.pixels import load_ct
from tests.factory import (
    PATIENT_ID,
    PATIENT_NAME,
    compressed_ct_dataset,
    ct_dataset,
    ct_from_stored,
    dicomdir_dataset,
    enhanced_ct_dataset,
    non_ct_dataset,
    phantom_hu,
    save,
    tree_digest,
    us_dataset,
    write_series,
)

runner = CliRunner()

# Good files that must be processed (relative paths; each gets an output).
GOOD = ["plain/IM_0000", "plain/IM_0001", "with spaces/slice 1 of 2.dcm", "with spaces/slice 2 of 2.dcm",
        "ünïcödé/срез_β.dcm", "ünïcödé/断面.dcm", "enhanced/per-frame-rescale.dcm",
        "enhanced/shared-rescale.dcm", "loop-holder/inside.dcm"]
NON_UTF8_GOOD = os.fsdecode(b"latin1-caf\xe9.dcm")  # a name that is not valid UTF-8


def build_corpus(root: Path) -> tuple[dict[str, tuple[str, str, bool]], list[str]]:
    """Write the corpus; return ({relpath: (status, reason word, found by scan)}, good relpaths).

    status is "failed" (meant to be CT but broken) or "ignored" (not a CT
    image); "found by scan" is False for problems only visible once the
    pixels are decoded (`info` reads headers only, so it lists those files
    as CT)."""
    bad: dict[str, tuple[str, str, bool]] = {}
    write_series(root / "plain", 2)
    write_series(root / "with spaces", 2, names=["slice 1 of 2.dcm", "slice 2 of 2.dcm"])
    write_series(root / "ünïcödé", 2, names=["срез_β.dcm", "断面.dcm"])
    save(enhanced_ct_dataset(), root / "enhanced" / "per-frame-rescale.dcm")
    save(enhanced_ct_dataset(per_frame_rescale=False), root / "enhanced" / "shared-rescale.dcm")
    save(ct_dataset(), root / NON_UTF8_GOOD)
    write_series(root / "loop-holder", 1, names=["inside.dcm"])
    (root / "loop-holder" / "loop").symlink_to(root / "loop-holder", target_is_directory=True)
    good = [*GOOD, NON_UTF8_GOOD]

    raw = save(ct_dataset(phantom_hu(64, 64)), root.parent / "template.dcm").read_bytes()
    for pct in (10, 50, 90):
        (root / f"truncated-{pct}pct.dcm").write_bytes(raw[: len(raw) * pct // 100])
        bad[f"truncated-{pct}pct.dcm"] = ("failed", "truncated", True)
    (root / "zero-bytes.dcm").write_bytes(b"")
    bad["zero-bytes.dcm"] = ("failed", "empty", True)
    rng = np.random.default_rng(7)
    for k in range(3):
        (root / f"random-after-marker-{k}").write_bytes(b"\0" * 128 + b"DICM" + rng.bytes(2000))
        bad[f"random-after-marker-{k}"] = ("failed", "DICOM", True)

    def ct(name: str, status: str, word: str, ds: Dataset, by_scan: bool = True) -> None:
        save(ds, root / name)
        bad[name] = (status, word, by_scan)

    ds = ct_dataset()
    ds.PixelData = ds.PixelData[:-64]
    ct("pixeldata-short.dcm", "failed", "PixelData has", ds)
    ds = ct_dataset()
    ds.PixelData = ds.PixelData + bytes(64)
    ct("pixeldata-long.dcm", "failed", "PixelData has", ds)
    ds = ct_dataset(phantom_hu(64, 64))
    ds.Rows = 32  # the data holds 64 rows
    ct("rows-fewer-than-data.dcm", "failed", "expected", ds)
    ds = ct_dataset(phantom_hu(64, 64))
    ds.Columns = 80
    ct("columns-more-than-data.dcm", "failed", "expected", ds)
    ds = ct_dataset()
    ds.NumberOfFrames = 2**31 - 1  # must neither hang nor exhaust memory
    ct("frames-absurd.dcm", "failed", "NumberOfFrames", ds)
    for missing in ("RescaleSlope", "RescaleIntercept"):
        ds = ct_dataset()
        delattr(ds, missing)
        ct(f"missing-{missing}.dcm", "failed", "Rescale", ds)
    ds = ct_dataset()
    del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType
    ct("missing-all-rescale.dcm", "failed", "Rescale", ds)
    stored = np.full((32, 32), 100, np.int16)
    stored[4:12, 4:12] = 2600  # bone beyond the signed 12-bit range (max 2047)
    ct("bits-stored-12-overflow.dcm", "failed", "BitsStored 12",
       ct_from_stored(stored, bits_stored=12, signed=True), by_scan=False)
    ds = ct_dataset()
    ds.set_pixel_data(np.zeros((32, 32, 3), np.uint8), "RGB", 8)
    ct("rgb-marked-ct.dcm", "failed", "grayscale", ds)
    ds = ct_dataset()
    ds.set_pixel_data(np.zeros((32, 32), np.uint8), "MONOCHROME2", 8)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.RedPaletteColorLookupTableDescriptor = [256, 0, 16]
    ct("palette-marked-ct.dcm", "failed", "PALETTE COLOR", ds)
    ct("jpeg2000-no-decoder.dcm", "failed", "gdcm>=3.0.10", compressed_ct_dataset(syntax=JPEG2000Lossless))
    # The file meta names a SOP class (DICOMDIR's, same length) where the transfer syntax belongs.
    data = save(ct_dataset(), root.parent / "template2.dcm").read_bytes()
    (root / "bogus-transfer-syntax.dcm").write_bytes(
        data.replace(ExplicitVRLittleEndian.encode() + b"\0", b"1.2.840.10008.1.3.10", 1))
    bad["bogus-transfer-syntax.dcm"] = ("failed", "transfer syntax", True)

    for kind in ("MR", "SEG", "SR"):
        ct(f"other-{kind}.dcm", "ignored", "Modality" if kind != "SR" else "no PixelData", non_ct_dataset(kind))
    ct("other-US.dcm", "ignored", "Modality US", us_dataset())
    ct("media/DICOMDIR", "ignored", "DICOMDIR", dicomdir_dataset())
    (root / "readme.txt").write_text("not an image\n")
    bad["readme.txt"] = ("ignored", "not a DICOM", True)

    locked = save(ct_dataset(), root / "locked.dcm")
    locked.chmod(0)
    if can_read(locked):  # root (or CAP_DAC_OVERRIDE) reads it anyway: then it is just a good file
        good.append("locked.dcm")
    else:
        bad["locked.dcm"] = ("failed", "cannot read", True)
    return bad, good


def can_read(path: Path) -> bool:
    try:
        path.open("rb").close()
    except PermissionError:
        return False
    return True


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """The corpus folder, its expected outcomes, and a JPEG 2000 decoder made
    unavailable as when its plugin is not installed."""
    from pydicom.pixels.decoders import JPEG2000LosslessDecoder

    root = tmp_path / "corpus"
    root.mkdir()
    bad, good = build_corpus(root)
    monkeypatch.setattr(JPEG2000LosslessDecoder, "_available", {})
    monkeypatch.setattr(JPEG2000LosslessDecoder, "_unavailable",
                        {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0"), "gdcm": ("gdcm>=3.0.10",)})
    yield root, bad, good
    (root / "locked.dcm").chmod(0o644)


def digest(root: Path) -> dict[str, str]:
    locked = root / "locked.dcm"
    locked.chmod(0o644)  # read it for the digest (as a non-root user), then lock it again
    try:
        return tree_digest(root)
    finally:
        locked.chmod(0)


def assert_no_crash(result) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert PATIENT_ID not in result.output and PATIENT_NAME not in result.output


def test_denoise_reports_each_bad_file_once_and_processes_the_good_ones(tmp_path, corpus, tiny_model_path):
    root, bad, good = corpus
    before = digest(root)
    out = tmp_path / "out"
    result = runner.invoke(cli.app, ["denoise", str(root), str(out), "--model", str(tiny_model_path)])
    assert_no_crash(result)
    assert result.exit_code == 1, result.output
    assert digest(root) == before  # inputs byte-identical, nothing added inside the input folder
    lines = result.output.splitlines()
    for rel, (status, word, _by_scan) in bad.items():
        assert result.output.count(rel) == 1, (rel, result.output)
        prefix = "FAILED  " if status == "failed" else "ignored "
        (line,) = [ln for ln in lines if rel in ln]
        assert line.startswith(f"{prefix}{rel}: "), (rel, line)
        assert word in line, (rel, word, line)
        assert not (out / rel).exists(), rel
    for rel in good:
        assert rel not in result.output
        written = pydicom.dcmread(out / rel)
        assert "DERIVED" in written.ImageType and written.pixel_array.size > 0
    n_failed = sum(s == "failed" for s, _, _ in bad.values())
    n_ignored = len(bad) - n_failed
    assert f"{len(good)} written, 0 already done, {n_failed} failed, {n_ignored} ignored" in result.output
    assert not (out / "loop-holder" / "loop").exists()  # the symlink loop was not followed
    assert len([p for p in out.rglob("*") if p.is_file()]) == len(good)  # nothing else, no temp files
    for name in ("per-frame-rescale.dcm", "shared-rescale.dcm"):
        assert load_ct(out / "enhanced" / name).hu.shape == (2, 32, 32)


def test_info_reports_each_bad_file_once(corpus):
    root, bad, good = corpus
    before = digest(root)
    result = runner.invoke(cli.app, ["info", str(root)])
    assert_no_crash(result)
    assert result.exit_code == 0, result.output
    assert digest(root) == before
    lines = result.output.splitlines()
    for rel, (_status, word, by_scan) in bad.items():
        if not by_scan:  # a pixel-level problem: `info` reads headers only and lists the file as CT
            assert rel not in result.output
            continue
        assert result.output.count(rel) == 1, (rel, result.output)
        (line,) = [ln for ln in lines if rel in ln]
        assert line.startswith(f"skipped {rel}: ") and word in line, (rel, line)
    for rel in good:
        assert rel not in result.output
    n_skipped = sum(by_scan for _, _, by_scan in bad.values())
    assert f"{n_skipped} files skipped" in result.output

    as_json = runner.invoke(cli.app, ["info", str(root), "--json", "-"])
    assert_no_crash(as_json)
    assert as_json.exit_code == 0
    summary = json.loads(as_json.output)
    flags = {row["file"]: row["bad"] for row in summary["skipped"]}
    assert flags == {rel: status == "failed" for rel, (status, _, by_scan) in bad.items() if by_scan}
    # Every good file is one slice except the two 2-frame Enhanced CT files; plus the BitsStored
    # overflow file, which only fails once its pixels are read.
    assert sum(row["slices"] for row in summary["series"]) == len(good) + 2 + 1


def test_qa_reports_each_bad_file_once_and_measures_the_good_ones(tmp_path, corpus):
    root, bad, good = corpus
    before = digest(root)
    result = runner.invoke(cli.app, ["qa", str(root), "--json", str(tmp_path / "qa.json")])
    assert_no_crash(result)
    assert result.exit_code == 1, result.output
    assert digest(root) == before
    lines = result.output.splitlines()
    for rel, (status, word, _by_scan) in bad.items():
        mentions = [ln for ln in lines if ln.startswith(("FAILED  ", "ignored ")) and rel in ln]
        assert len(mentions) == 1, (rel, mentions)
        prefix = "FAILED  " if status == "failed" else "ignored "
        assert mentions[0].startswith(f"{prefix}{rel}: ") and word in mentions[0], (rel, mentions[0])
    data = json.loads((tmp_path / "qa.json").read_text())
    measured = {f["file"] for f in data["files"] if "failed" not in f}
    assert set(good) <= measured


def test_corrupt_jpeg2000_fails_with_one_short_line_naming_the_decoders_cause(tmp_path, tiny_model_path):
    pytest.importorskip("pylibjpeg")
    pytest.importorskip("openjpeg")  # pylibjpeg-openjpeg: the encoder here, and a decoder
    ds = compressed_ct_dataset(phantom_hu(64, 64), syntax=JPEG2000Lossless)
    data = bytearray(ds.PixelData)
    siz = data.index(b"\xff\x4f\xff\x51")  # the codestream's SOC and SIZ markers
    data[siz + 40:siz + 42] = b"\xff\xff"  # Csiz: 65535 components, which every decoder refuses
    ds.PixelData = bytes(data)
    save(ds, tmp_path / "in" / "corrupt-j2k.dcm")
    write_series(tmp_path / "in" / "good", 1)
    result = runner.invoke(cli.app, ["denoise", str(tmp_path / "in"), str(tmp_path / "out"), "--model",
                                     str(tiny_model_path), "--json", "-"])
    assert_no_crash(result)
    assert result.exit_code == 1, result.output
    (failed,) = [f for f in json.loads(result.stdout)["files"] if f["status"] == "failed"]
    reason = failed["reason"]
    assert failed["file"] == "corrupt-j2k.dcm"
    assert "\n" not in reason and "Traceback" not in reason and len(reason) <= 160, reason
    assert reason.startswith("cannot decode pixel data (")
    # pylibjpeg-openjpeg's own words survive the cap (today's GDCM plugin, tried first, says nothing useful)
    assert "pylibjpeg: Error decoding the J2K data: failed to read the header" in reason, reason
    (line,) = [ln for ln in result.stderr.splitlines() if "corrupt-j2k.dcm" in ln]
    assert line == f"FAILED  corrupt-j2k.dcm: {reason}"


def test_jpeg_2000_is_decoded_by_pylibjpeg_when_installed():
    """GDCM, pydicom's first choice, aborts the process on some corrupt JPEG 2000 headers (issue 28)."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEG2000, JPEG2000Lossless, RLELossless

    from denoise.dicom.pixels import preferred_plugin

    if "pylibjpeg" not in get_decoder(JPEG2000Lossless).available_plugins:
        pytest.skip("pylibjpeg-openjpeg is not installed")
    assert preferred_plugin(JPEG2000Lossless) == preferred_plugin(JPEG2000) == "pylibjpeg"
    assert preferred_plugin(RLELossless) == "" and preferred_plugin(None) == ""
