"""Data manifests: split by patient, checksums verified, no patient IDs stored."""

from __future__ import annotations

import json

import pydicom
import pytest
from typer.testing import CliRunner

import cli
from denoise.manifest import ManifestError, build_manifest, load_manifest, save_manifest, split_files
from tests.factory import PATIENT_ID, PATIENT_NAME, write_series


def patients_folder(root, n_patients=6, slices=3):
    """``n_patients`` patients, one 3-slice series each, PatientID P<k> + the secret."""
    for p in range(n_patients):
        for path in write_series(root / f"pat{p}", slices, rows=16, cols=16):
            ds = pydicom.dcmread(path)
            ds.PatientID = f"{PATIENT_ID}-{p}"
            ds.save_as(path)
    return root


@pytest.fixture
def repo(tmp_path):
    """(data folder, manifest path) laid out like the repo: data beside data_manifests/."""
    data = patients_folder(tmp_path / "data")
    return data, tmp_path / "repo" / "data_manifests" / "m.json"


def test_split_is_by_patient_and_ids_are_not_stored(repo):
    data, out = repo
    manifest = build_manifest([data], out, val=0.2, test=0.2, seed=0)
    save_manifest(manifest, out)
    text = out.read_text()
    assert PATIENT_ID not in text and PATIENT_NAME.split("^")[0] not in text
    assert manifest["split_by"] == "patient"
    by_group: dict[str, set] = {}
    for e in manifest["files"]:
        by_group.setdefault(e["group"], set()).add(e["split"])
        assert e["path"].startswith("../data/pat")  # relative to the manifest folder's parent
    assert len(by_group) == 6 and all(len(s) == 1 for s in by_group.values())
    counts = manifest["counts"]
    assert counts["val"]["groups"] >= 1 and counts["test"]["groups"] >= 1 and counts["train"]["groups"] >= 1
    assert sum(c["files"] for c in counts.values()) == 18
    files = load_manifest(out)
    assert all(f.path.is_file() for f in files)
    assert {f.split for f in split_files(files, "test")} == {"test"}


def test_same_seed_same_split_different_salt(repo):
    data, out = repo
    a = build_manifest([data], out, seed=3)
    b = build_manifest([data], out, seed=3)
    split = lambda m: [(e["path"], e["split"]) for e in m["files"]]  # noqa: E731
    assert split(a) == split(b)
    assert a["files"][0]["group"] != b["files"][0]["group"]  # salted hash, salt not kept


def test_load_refuses_changed_file_and_patient_leak(repo):
    data, out = repo
    save_manifest(build_manifest([data], out, seed=0), out)
    manifest = json.loads(out.read_text())
    victim = out.parent.parent / manifest["files"][0]["path"]
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(ManifestError, match="checksum mismatch"):
        load_manifest(out)
    assert load_manifest(out, verify=False)
    other = "val" if manifest["files"][1]["split"] != "val" else "train"
    manifest["files"][1]["group"] = manifest["files"][0]["group"]
    manifest["files"][1]["split"] = other if manifest["files"][0]["split"] != other else "test"
    out.write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="more than one split"):
        load_manifest(out, verify=False)


def test_cli_manifest_build(repo):
    data, out = repo
    result = CliRunner().invoke(cli.app, ["manifest", "build", str(data), "--out", str(out), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "18 files in 6 series, split by patient" in result.output
    assert load_manifest(out)
    missing = CliRunner().invoke(cli.app, ["manifest", "build", str(data / "nope"), "--out", str(out)])
    assert missing.exit_code == 2 and "not a folder" in missing.output


def test_committed_manifests_load_and_hold_the_test_patient_out(shared_ct):
    root = cli.__file__ and __import__("pathlib").Path(cli.__file__).parent / "data_manifests"
    for name in ("chest.json", "shared_ct.json"):
        files = load_manifest(root / name)
        test_series = {f.series_uid for f in split_files(files, "test")}
        train_series = {f.series_uid for f in split_files(files, "train")}
        assert test_series and train_series and not test_series & train_series
        assert all("rider-chest" in str(f.path) for f in split_files(files, "test"))


def test_held_out_folders_take_every_file_of_their_patients(repo, tmp_path):
    data, out = repo
    # pat0's patient also has a second series in another folder: it must follow into test.
    for path in write_series(data / "elsewhere", 2, rows=16, cols=16):
        ds = pydicom.dcmread(path)
        ds.PatientID = f"{PATIENT_ID}-0"
        ds.save_as(path)
    manifest = build_manifest([data], out, val=0, test=0, holdout={data / "pat0": "test", data / "pat1": "val"})
    sides = {}
    for e in manifest["files"]:
        sides.setdefault(e["path"].split("/")[-2], set()).add(e["split"])
    assert sides["pat0"] == sides["elsewhere"] == {"test"}
    assert sides["pat1"] == {"val"}
    assert all(sides[f"pat{k}"] == {"train"} for k in range(2, 6))
    assert manifest["split_settings"]["held_out"] == {"../data/pat0": "test", "../data/pat1": "val"}  # as paths

    result = CliRunner().invoke(cli.app, ["manifest", "build", str(data), "--out", str(out), "--val", "0",
                                          "--test", "0", "--test-from", str(data / "pat0"),
                                          "--val-from", str(data / "elsewhere")])
    assert result.exit_code == 2 and "a patient there is also held out for val" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli.app, ["manifest", "build", str(data), "--out", str(out),
                                          "--test-from", str(empty)])
    assert result.exit_code == 2 and "no CT image of the scanned folders lies under it" in result.output
