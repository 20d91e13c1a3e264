"""`ct-denoise serve`: a DICOM node tested with real peers on loopback only.

dcmtk's storescu/echoscu are the scanner, Orthanc is the archive; each is
started by the test on a free port and stopped by its PID. Without them the
tests skip with a note (``.ci/run`` installs them).
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless
from typer.testing import CliRunner

from cli import app
from denoise.node.forward import Destination, backoff
from pipelines import denoise_folder
from tests import factory, peers

pytestmark = pytest.mark.skipif(not (peers.STORESCU and peers.ECHOSCU and peers.ORTHANC),
                                reason="needs dcmtk (storescu, echoscu) and Orthanc: apt-get install dcmtk orthanc")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _python(monkeypatch):
    monkeypatch.setenv("PYTHON", sys.executable)


def expected_derived(src: Path, tmp: Path) -> dict[str, Path]:
    """What ``ct-denoise denoise`` writes for these sources: derived SOP UID -> file."""
    out = tmp / "reference-denoise"
    report = denoise_folder.run(src, out)
    assert report.count("written") == len(list(src.iterdir()))
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in out.rglob("*") if p.is_file()}


queue_of, settled = peers.queue_of, peers.settled


def acknowledged(storescu: subprocess.CompletedProcess) -> int:
    return storescu.stderr.count("Received Store Response (Success)") + \
        storescu.stdout.count("Received Store Response (Success)")


def test_destination_parsing_and_backoff():
    d = Destination.parse("PACS@10.0.0.5:104")
    assert (d.aet, d.host, d.port, str(d)) == ("PACS", "10.0.0.5", 104, "PACS@10.0.0.5:104")
    for bad in ("PACS", "PACS@host", "PACS@host:0", "TOO_LONG_AE_TITLE_X@h:1", "A\\B@h:1"):
        with pytest.raises(ValueError):
            Destination.parse(bad)
    waits = [backoff(k) for k in range(1, 12)]
    assert waits == sorted(waits) and waits[0] > 0 and waits[-1] == 300.0


def test_usage_errors_exit_2_with_one_line(tmp_path):
    cases = [["serve"], ["serve", "--out", str(tmp_path / "n"), "--forward", "nonsense"],
             ["serve", "--status", str(tmp_path)],
             ["serve", "--out", str(tmp_path / "n"), "--model", str(tmp_path / "missing.npz")],
             ["serve", "--out", str(tmp_path / "n"), "--aet", "A" * 17]]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "error:" in result.output and "Traceback" not in result.output


def test_second_node_on_one_folder_and_busy_port_are_refused(tmp_path):
    with peers.node(tmp_path / "out") as n:
        again = runner.invoke(app, ["serve", "--out", str(tmp_path / "out"), "--port", str(peers.free_port())])
        assert again.exit_code == 2 and "in use by another ct-denoise serve" in again.output
        busy = runner.invoke(app, ["serve", "--out", str(tmp_path / "other"), "--port", str(n.port)])
        assert busy.exit_code == 2 and "cannot listen" in busy.output
        assert queue_of(tmp_path / "out")["pid"] == n.proc.pid
    assert n.proc.returncode == 0  # SIGTERM drains and exits 0
    assert queue_of(tmp_path / "out")["pid"] is None


def test_verification_and_allow_list(tmp_path):
    with peers.node(tmp_path / "out", "--allow", "SCANNER") as n:
        assert peers.echo(n.port, calling="SCANNER").returncode == 0
        refused = peers.echo(n.port, calling="INTRUDER")
        assert refused.returncode != 0
        assert peers.echo(n.port, aet="SOMEONE_ELSE").returncode != 0  # not our called AE title
        assert peers.echo(n.port, calling="SCANNER").returncode == 0  # still serving
        assert peers.wait_for(lambda: "INTRUDER" in n.log(), 10)
        assert "association from INTRUDER" in n.log() and "calling AE title not allowed" in n.log()


def test_series_is_denoised_like_denoise_and_forwarded_to_the_archive(tmp_path):
    src = tmp_path / "src"
    factory.write_series(src, 6, rows=64, cols=64)
    expected = expected_derived(src, tmp_path)
    with peers.orthanc(tmp_path / "orthanc") as archive, \
            peers.node(tmp_path / "out", "--forward", archive.address, "--series-timeout", "1") as n:
        sent = peers.send(n.port, *sorted(src.iterdir()))
        assert sent.returncode == 0 and acknowledged(sent) == 6, sent.stderr
        assert peers.wait_for(lambda: len(archive.get("/instances")) == 6 and settled(n.out), 60)
        assert sorted(archive.sop_uids()) == sorted(expected)  # the same derived UIDs as `denoise`
        for uid, path in expected.items():  # and the same pixels
            got = pydicom.dcmread(pydicom.filebase.DicomBytesIO(archive.file(uid)))
            want = pydicom.dcmread(path)
            assert np.array_equal(got.pixel_array, want.pixel_array)
            assert got.ImageType[0] == "DERIVED" and got.SeriesInstanceUID == want.SeriesInstanceUID
        state = queue_of(n.out)
        assert state["finished_jobs"] == 1 and state["derived_series"] == 1
        log = n.log()
    assert "finished: 6 instances received, 6 denoised (0 already done, 0 failed, 0 ignored)" in log
    assert f"forwarded to {archive.address} (6 instances)" in log
    assert len([line for line in log.splitlines() if "INFO series" in line]) == 1  # one line per series
    assert factory.PATIENT_NAME not in log and factory.PATIENT_ID not in log
    status_text = runner.invoke(app, ["serve", "--status", str(tmp_path / "out")]).output
    assert "0 receiving, 0 queued, 0 quarantined, 1 finished jobs" in status_text


def test_compressed_ct_is_kept_as_sent_and_denoised(tmp_path):
    path = factory.save(factory.compressed_ct_dataset(factory.phantom_hu(64, 64)), tmp_path / "j2k.dcm")
    with peers.node(tmp_path / "out", "--series-timeout", "0.5") as n:
        sent = peers.send(n.port, path, extra=("-xv",))  # propose JPEG 2000 lossless (and uncompressed)
        assert acknowledged(sent) == 1, sent.stderr
        assert peers.wait_for(lambda: settled(n.out), 30)
    [kept] = (tmp_path / "out" / "received").rglob("*.dcm")
    assert pydicom.dcmread(kept).file_meta.TransferSyntaxUID == JPEG2000Lossless
    [derived] = (tmp_path / "out" / "derived").rglob("*.dcm")
    assert pydicom.dcmread(derived).ImageType[0] == "DERIVED"


def test_enhanced_ct_is_received_denoised_and_forwarded(tmp_path):
    path = factory.save(factory.enhanced_ct_dataset(), tmp_path / "enhanced.dcm")
    with peers.storescp(tmp_path / "archive") as archive, \
            peers.node(tmp_path / "out", "--forward", archive.address, "--series-timeout", "0.5") as n:
        assert acknowledged(peers.send(n.port, path)) == 1
        assert peers.wait_for(lambda: settled(n.out), 30)
        [derived] = archive.folder.iterdir()
    got = pydicom.dcmread(derived)
    source = pydicom.dcmread(path)
    assert got.SOPClassUID == source.SOPClassUID and got.NumberOfFrames == source.NumberOfFrames
    assert got.ImageType[0] == "DERIVED" and got.SOPInstanceUID != source.SOPInstanceUID


def test_refused_inputs_get_their_status_and_the_node_keeps_serving(tmp_path):
    mr = factory.save(factory.non_ct_dataset("MR"), tmp_path / "mr.dcm")
    no_series = factory.ct_dataset(factory.phantom_hu(32, 32))
    del no_series.SeriesInstanceUID
    no_series = factory.save(no_series, tmp_path / "noseries.dcm")
    good = factory.write_series(tmp_path / "good", 1)
    with peers.node(tmp_path / "out", "--series-timeout", "60") as n:
        refused = peers.send(n.port, mr)
        assert refused.returncode != 0 and acknowledged(refused) == 0  # no presentation context for MR
        bad = peers.send(n.port, no_series)
        assert "Received Store Response (Error: CannotUnderstand)" in bad.stderr, bad.stderr
        ok = peers.send(n.port, *good)
        assert ok.returncode == 0 and acknowledged(ok) == 1
        state = queue_of(n.out)
        assert [r["instances"] for r in state["receiving"]] == [1]
        assert "no SeriesInstanceUID" in n.log()


def test_full_disk_gives_the_sender_a_failure_not_a_lost_image(tmp_path):
    big = factory.write_series(tmp_path / "src", 2, rows=256, cols=256)  # 128 KiB each

    def small_disk():  # files the node writes may not exceed 64 KiB: as a full disk, writes fail
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    with peers.node(tmp_path / "out", "--series-timeout", "60", preexec_fn=small_disk) as n:
        sent = peers.send(n.port, *big)
        assert acknowledged(sent) == 0
        assert "Received Store Response (Refused: OutOfResources)" in sent.stderr, sent.stderr
        assert peers.echo(n.port).returncode == 0  # still serving
        assert not list((n.out / "spool").rglob("*.dcm"))  # nothing half-written
        assert "out of resources" in n.log()


def test_forwarding_retries_until_the_archive_is_up(tmp_path):
    src = tmp_path / "src"
    factory.write_series(src, 3, rows=32, cols=32)
    port = peers.free_port()
    with peers.node(tmp_path / "out", "--forward", f"ARCHIVE@127.0.0.1:{port}", "--series-timeout", "0.5") as n:
        assert peers.send(n.port, *sorted(src.iterdir())).returncode == 0
        failing = peers.wait_for(lambda: [q for q in queue_of(n.out)["queue"] if q["attempts"]], 30)
        assert failing and failing[0]["stage"] == "forward" and "cannot connect" in failing[0]["last_error"]
        with peers.orthanc(tmp_path / "orthanc", dicom_port=port) as archive:
            assert peers.wait_for(lambda: len(archive.get("/instances")) == 3 and settled(n.out), 60)
    assert "retry in" in n.log()


def _stage_reached(out: Path, stage: str, total: int) -> bool:
    """True once the node is inside ``stage`` for a series of ``total`` instances (not past it)."""
    try:
        return _inside(out, stage, total)
    except FileNotFoundError:  # the node renamed a folder while we listed it: look again
        return False


def _inside(out: Path, stage: str, total: int) -> bool:
    incoming = list((out / "spool" / "incoming").rglob("*.dcm"))
    derived = list((out / "derived").rglob("*.dcm"))
    sent = [line for f in (out / "sent").rglob("*.txt") for line in f.read_text().split()]
    if stage == "receive":
        return 5 <= len(incoming) < total
    if stage == "denoise":
        return 3 <= len(derived) < total
    return 3 <= len(sent) < total


N_FAULT = 40  # slices of the series the fault tests send


@pytest.fixture(scope="module")
def fault_series(tmp_path_factory):
    """40 slices of 192x192 and what `denoise` makes of them (derived SOP UID -> file)."""
    tmp = tmp_path_factory.mktemp("fault-series")
    factory.write_series(tmp / "src", N_FAULT, rows=192, cols=192)
    return tmp / "src", expected_derived(tmp / "src", tmp)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["receive", "denoise", "forward"])
def test_kill_9_then_restart_delivers_every_acknowledged_slice_once(tmp_path, stage, fault_series):
    n_slices = N_FAULT
    src, expected = fault_series
    by_source = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in src.iterdir()}
    out = tmp_path / "out"
    with peers.orthanc(tmp_path / "orthanc") as archive:
        args = ("--forward", archive.address, "--series-timeout", "1")
        first = peers.start_node(out, *args)
        try:
            sender = subprocess.Popen([peers.STORESCU, "-v", "-aet", "SCANNER", "-aec", "CTDENOISE", "127.0.0.1",
                                       str(first.port), *map(str, sorted(src.iterdir()))],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert peers.wait_for(lambda: _stage_reached(out, stage, n_slices), 90, every=0.01), stage
            first.kill()
            kept = [p for d in ("spool/incoming", "queue", "received") for p in (out / d).rglob("*.dcm")]
            in_spool = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in kept}
            sender_output = sender.communicate(timeout=60)[0]
        finally:
            first.stop()
        acked = sender_output.count("Received Store Response (Success)")
        assert len(in_spool) >= acked  # an acknowledged instance is always in the spool
        with peers.node(out, *args) as second:
            assert peers.wait_for(lambda: settled(out), 90)
            assert peers.wait_for(lambda: len(archive.get("/instances")) >= len(in_spool), 30)
            uids = archive.sop_uids()
            assert second.proc.poll() is None
    want = {uid for uid, p in expected.items() if str(pydicom.dcmread(p, stop_before_pixels=True)
                                                          .SourceImageSequence[0].ReferencedSOPInstanceUID) in in_spool}
    assert len(want) == len(in_spool) and set(in_spool) <= set(by_source)
    assert sorted(uids) == sorted(want)  # each acknowledged slice's derived slice, once per SOP UID
    assert not list(out.rglob(".*.tmp")) and not list((out / "spool" / "tmp").iterdir())


@pytest.mark.slow
def test_three_senders_at_once(tmp_path):
    n_each = 100
    folders = []
    for k in range(3):
        folders.append(tmp_path / f"src{k}")
        factory.write_series(folders[-1], n_each, rows=32, cols=32)
    with peers.storescp(tmp_path / "archive") as archive, \
            peers.node(tmp_path / "out", "--forward", archive.address, "--series-timeout", "2") as n:
        senders = [subprocess.Popen([peers.STORESCU, "-v", "-aet", f"SCANNER{k}", "-aec", "CTDENOISE", "127.0.0.1",
                                     str(n.port), *map(str, sorted(f.iterdir()))], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for k, f in enumerate(folders)]
        outputs = [s.communicate(timeout=120)[0] for s in senders]
        assert [s.returncode for s in senders] == [0, 0, 0]
        assert sum(o.count("Received Store Response (Success)") for o in outputs) == 3 * n_each
        assert peers.wait_for(lambda: settled(n.out), 180)
        uids = archive.sop_uids()
        assert len(uids) == len(set(uids)) == 3 * n_each
        assert queue_of(n.out)["finished_jobs"] == 3



@pytest.mark.slow
def test_sigterm_drains_and_a_restart_finishes_the_queue(tmp_path, fault_series):
    n_slices = N_FAULT
    src = fault_series[0]
    out = tmp_path / "out"
    with peers.storescp(tmp_path / "archive") as archive:
        args = ("--forward", archive.address, "--series-timeout", "1")
        first = peers.start_node(out, *args)
        try:
            assert acknowledged(peers.send(first.port, *sorted(src.iterdir()))) == n_slices
            assert peers.wait_for(lambda: _stage_reached(out, "denoise", n_slices), 60, every=0.01)
            assert first.stop() == 0  # SIGTERM: the file being denoised is finished, the rest stays queued
        finally:
            first.stop()
        state = queue_of(out)
        assert [q["stage"] for q in state["queue"]] == ["denoise"] and state["pid"] is None
        assert "draining" in (out / "node.log").read_text()
        with peers.node(out, *args):
            assert peers.wait_for(lambda: settled(out), 90)
        assert len(set(archive.sop_uids())) == n_slices


@pytest.mark.slow
def test_a_sender_that_disconnects_mid_series_leaves_nothing_half_written(tmp_path, fault_series):
    src = fault_series[0]
    with peers.node(tmp_path / "out", "--series-timeout", "1") as n:
        sender = subprocess.Popen([peers.STORESCU, "-aet", "SCANNER", "-aec", n.aet, "127.0.0.1", str(n.port),
                                   *map(str, sorted(src.iterdir()))], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        assert peers.wait_for(lambda: len(list((n.out / "spool" / "incoming").rglob("*.dcm"))) >= 5, 60,
                              every=0.005)
        sender.kill()  # gone mid-series, maybe mid-instance
        sender.wait()
        assert peers.wait_for(lambda: settled(n.out), 60)
        received = sorted((n.out / "received").rglob("*.dcm"))
        derived = sorted((n.out / "derived").rglob("*.dcm"))
        assert 5 <= len(received) < 40 and len(derived) == len(received)
        for path in received + derived:  # every kept file is whole
            assert pydicom.dcmread(path).pixel_array.shape == (192, 192)
        assert not list((n.out / "spool" / "tmp").iterdir())
        assert peers.echo(n.port).returncode == 0
