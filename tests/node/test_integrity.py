"""`ct-denoise serve` under the faults of issue 28: a full disk, re-sent
slices, instances it cannot process, a node that dies on one instance, a
destination that never answers, data at rest and forged log lines.

Real peers on loopback: the node as a subprocess stopped by its PID, dcmtk's
storescu and Orthanc or pynetdicom's storescp; malformed instances come from
a pynetdicom sender in the test (dcmtk would not send them).
"""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import stat
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless
from pynetdicom import AE, _config
from typer.testing import CliRunner

from cli import app
from denoise.node.admit import DEFAULT_MAX_PIXELS, Refused, check_uid
from denoise.node.spool import JobState, Spool
from tests import factory, peers

pytestmark = pytest.mark.skipif(not (peers.STORESCU and peers.ECHOSCU and peers.ORTHANC),
                                reason="needs dcmtk (storescu, echoscu) and Orthanc: apt-get install dcmtk orthanc")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _python(monkeypatch):
    monkeypatch.setenv("PYTHON", os.environ.get("PYTHON") or __import__("sys").executable)


queue_of, settled = peers.queue_of, peers.settled


def store(port: int, *datasets, aet: str = "CTDENOISE") -> list[int | None]:
    """C-STORE each data set (or file, sent as it is: its file meta makes the
    request) with a pynetdicom sender; the status of each (None: no answer)."""
    sender = AE(ae_title="HOSTILE")
    for sop_class in (CTImageStorage, EnhancedCTImageStorage):
        for syntax in (ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless):  # a context accepts one syntax
            sender.add_requested_context(sop_class, syntax)
    assoc = sender.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established
    try:
        statuses = []
        for ds in datasets:
            _config.STORE_SEND_CHUNKED_DATASET = isinstance(ds, Path)
            try:
                reply = assoc.send_c_store(ds)
            finally:
                _config.STORE_SEND_CHUNKED_DATASET = False
            statuses.append(reply.Status if reply and "Status" in reply else None)
        return statuses
    finally:
        if assoc.is_established:
            assoc.release()


def slice_ds(rows: int = 32, cols: int = 32, seed: int = 0, **attrs) -> pydicom.Dataset:
    ds = factory.ct_dataset(factory.phantom_hu(rows, cols, seed=seed))
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


# ----------------------------------------------------------------- 1. full disk
def test_a_full_disk_while_denoising_keeps_the_job_until_there_is_room(tmp_path):
    """Before: derived copies failed with ENOSPC/EFBIG, the job was marked finished, only the rest was forwarded."""
    src = factory.write_series(tmp_path / "src", 4, rows=64, cols=64)
    largest = max(p.stat().st_size for p in src)

    def small_disk():  # room for what arrives (the spool), not for the larger derived copies
        resource.setrlimit(resource.RLIMIT_FSIZE, (largest + 400, resource.RLIM_INFINITY))

    with peers.storescp(tmp_path / "archive") as archive, \
            peers.node(tmp_path / "out", "--forward", archive.address, "--series-timeout", "0.5",
                       preexec_fn=small_disk) as n:
        sent = peers.send(n.port, *src)
        assert sent.stderr.count("Received Store Response (Success)") == 4, sent.stderr
        waiting = peers.wait_for(lambda: [q for q in queue_of(n.out)["queue"] if q["attempts"].get("denoise")], 60)
        assert waiting and waiting[0]["stage"] == "denoise" and "not written" in waiting[0]["last_error"]
        time.sleep(1.0)
        assert archive.sop_uids() == [] and queue_of(n.out)["finished_jobs"] == 0  # nothing half-forwarded
        room = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        resource.prlimit(n.proc.pid, resource.RLIMIT_FSIZE, room)  # the disk has room again
        assert peers.wait_for(lambda: settled(n.out), 60)  # the retry (after 2 s) finishes the job
        assert len(set(archive.sop_uids())) == 4
    assert "derived copies not written" in n.log() and "retry in" in n.log()


# ------------------------------------------------------------ 2. re-sent slices
def test_a_resent_slice_is_denoised_again_never_taken_from_an_earlier_copy(tmp_path):
    """Before: the re-sent slice was "already done" and the old derived object (old patient) was forwarded."""
    wrong = slice_ds(PatientName="Wrong^Patient", PatientID="WRONG01")
    with peers.orthanc(tmp_path / "orthanc") as archive, \
            peers.node(tmp_path / "out", "--forward", archive.address, "--series-timeout", "0.5") as n:
        assert store(n.port, wrong) == [0]
        assert peers.wait_for(lambda: settled(n.out) and len(archive.get("/instances")) == 1, 60)
        corrected = slice_ds(PatientName="Right^Patient", PatientID="RIGHT01",
                             SOPInstanceUID=wrong.SOPInstanceUID, SeriesInstanceUID=wrong.SeriesInstanceUID,
                             StudyInstanceUID=wrong.StudyInstanceUID)
        assert store(n.port, corrected) == [0]
        assert peers.wait_for(lambda: settled(n.out) and len(archive.get("/instances")) == 2, 60)
        new_pixels = slice_ds(seed=5, PatientName="Right^Patient", PatientID="RIGHT01",
                              SOPInstanceUID=wrong.SOPInstanceUID, SeriesInstanceUID=wrong.SeriesInstanceUID,
                              StudyInstanceUID=wrong.StudyInstanceUID)
        assert store(n.port, new_pixels) == [0]
        assert peers.wait_for(lambda: settled(n.out) and len(archive.get("/instances")) == 3, 60)
        got = [pydicom.dcmread(pydicom.filebase.DicomBytesIO(archive.file(uid))) for uid in archive.sop_uids()]
        log = n.log()
    names = sorted(str(d.PatientName) for d in got)
    assert names == ["Right^Patient", "Right^Patient", "Wrong^Patient"]
    assert {str(d.SourceImageSequence[0].ReferencedSOPInstanceUID) for d in got} == {str(wrong.SOPInstanceUID)}
    pixels = [d.pixel_array for d in got if str(d.PatientName) == "Right^Patient"]
    assert not np.array_equal(*pixels)  # the new pixels were denoised, not the old ones sent again
    assert "already done" in log and "0 already done" in log and "1 already done" not in log
    assert "failed" not in log.replace("0 failed", "")


# --------------------------------------------- 7, 8, 11. what is acknowledged
def disguised(ds: pydicom.Dataset, path: Path) -> Path:
    """``ds`` in a file whose meta names a valid CT request: what a hostile
    sender puts in the data set then reaches the node as it is."""
    good = slice_ds()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = good.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.preamble = b"\x00" * 128
    ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
    return path


def _broken_instances(tmp: Path) -> dict[str, pydicom.Dataset | Path]:
    cases = {}
    ds = slice_ds()
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    cases["pixel data truncated"] = ds
    for rows, cols in ((256, 256), (65535, 65535), (0, 0)):
        ds = slice_ds()
        ds.Rows, ds.Columns = rows, cols
        cases[f"Rows/Columns {rows}x{cols} for 32x32 pixels"] = ds
    ds = slice_ds()
    ds.NumberOfFrames = 5000
    cases["5000 frames declared on one"] = ds
    ds = slice_ds()
    ds.compress(RLELossless)
    fragments = bytearray(ds.PixelData)
    fragments[-40:] = b"\xff" * 40  # a corrupt RLE segment
    ds.PixelData = bytes(fragments)
    cases["corrupt RLE fragment"] = ds
    for k, uid in enumerate(("1." * 4999 + "1", "1.2.3\x00", "1.2.3\n4", "1.2.\u00e93", "1.2.3/../../x")):
        cases[f"SOP Instance UID {uid[:12]!r}"] = disguised(slice_ds(SOPInstanceUID=uid), tmp / f"uid{k}.dcm")
    forged = slice_ds()
    forged.SOPClassUID = CTImageStorage + "\n2026-01-01 00:00:00,000 INFO series forged finished"
    cases["newline in the SOP Class UID"] = disguised(forged, tmp / "forged.dcm")
    cases["another SOP Instance UID than the request's"] = disguised(slice_ds(), tmp / "other.dcm")
    return cases


def test_unprocessable_instances_are_refused_not_acknowledged(tmp_path):
    """Before: all of these got 0x0000 and were dropped (or passed on) later."""
    cases = _broken_instances(tmp_path)
    with peers.node(tmp_path / "out", "--series-timeout", "60") as n:
        statuses = {name: store(n.port, ds)[0] for name, ds in cases.items()}
        assert store(n.port, slice_ds()) == [0]  # and a good one still goes in
        log = n.log()
        state = queue_of(n.out)
    assert all(s is not None and 0xA900 <= s <= 0xCFFF for s in statuses.values()), \
        {k: hex(v) if v is not None else None for k, v in statuses.items()}
    assert [r["instances"] for r in state["receiving"]] == [1]
    assert log.count("refused with 0x") == len(cases)
    assert "does not decode" in log and "invalid SOPInstanceUID" in log and "invalid SOPClassUID" in log
    for line in log.splitlines():  # one record per line: nothing forged
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ", line), line
    assert "SOPClassUID '1.2.840.10008.5.1.4.1.1.2\\n2026-01-01 00:00:00,000 INFO series forged" in log  # escaped


def test_uid_check_refuses_what_the_derived_objects_could_not_carry():
    assert check_uid("1.2.840.10008.5.1.4.1.1.2", "SOPClassUID") == "1.2.840.10008.5.1.4.1.1.2"
    for bad in ("1." * 4999 + "1", "1.2.3\x00", "1.2.3\n4", "1.2.\u00e93", "1.2.3/../../x", "", "1.02.3", "1..2"):
        with pytest.raises(Refused, match="invalid SOPInstanceUID") as caught:
            check_uid(bad, "SOPInstanceUID")
        assert caught.value.status == 0xC000 and len(str(caught.value)) < 120 and "\n" not in str(caught.value)


def test_an_instance_over_the_pixel_limit_is_refused_at_once(tmp_path):
    """The issue's decompression bomb: 400 frames of 512x512 zeros, about 70 kB as RLE, over the default limit."""
    bomb = factory.enhanced_ct_dataset(np.zeros((400, 512, 512), np.int16), rescales=((1.0, -1024.0),) * 400)
    bomb.compress(JPEG2000Lossless)
    assert len(bomb.PixelData) < 100_000 and 400 * 512 * 512 > DEFAULT_MAX_PIXELS
    small = factory.enhanced_ct_dataset(np.zeros((8, 64, 64), np.int16), rescales=((1.0, -1024.0),) * 8)
    with peers.node(tmp_path / "out", "--series-timeout", "60", "--max-pixels", str(8 * 64 * 64 - 1)) as n:
        t0 = time.monotonic()
        assert store(n.port, small) == [0xC000]
        assert time.monotonic() - t0 < 10
        assert "32768 pixels, over the node's limit of 32767" in n.log()
    with peers.node(tmp_path / "out2", "--series-timeout", "60") as n:
        t0 = time.monotonic()
        assert store(n.port, bomb) == [0xC000]
        assert time.monotonic() - t0 < 10  # refused from the header: nothing was decoded
        assert f"over the node's limit of {DEFAULT_MAX_PIXELS}" in n.log()


# ------------------------------------------------------ 9. memory per instance
def _peak_rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


def test_receiving_a_large_instance_does_not_hold_it_in_memory(tmp_path):
    """Before: a 250 MB instance peaked at 827 MiB (whole message in memory, then copies)."""
    frames = np.random.default_rng(0).integers(0, 2000, (192, 512, 512), dtype=np.int16)  # 96 MiB of pixels
    big = factory.enhanced_ct_dataset(frames, rescales=((1.0, -1024.0),) * 192)
    with peers.node(tmp_path / "out", "--series-timeout", "600") as n:
        assert store(n.port, slice_ds()) == [0]  # the node has received, admitted and stored one instance
        before = _peak_rss_mib(n.proc.pid)
        assert store(n.port, big) == [0]
        grew = _peak_rss_mib(n.proc.pid) - before
    assert grew < 32, f"peak memory grew by {grew:.0f} MiB receiving a 96 MiB instance"


# ----------------------------------------------- 3. a node that dies on a file
def _current(out: Path) -> tuple[str, int]:
    """The file the node is denoising and how many times it died on it before."""
    for state in (out / "state").glob("*.json"):
        try:
            data = json.loads(state.read_text())
        except (OSError, ValueError):  # being replaced: look again
            return "", -1
        return data.get("current", ""), data.get("crashes", {}).get(data.get("current", ""), 0)
    return "", -1


def _is_big(out: Path, name: str) -> bool:
    return any(p.stat().st_size > 1_000_000 for p in (out / "queue").glob(f"*/{name}")) if name else False


@pytest.mark.slow
def test_an_instance_the_node_dies_on_three_times_is_quarantined(tmp_path):
    """Before: every restart took the same job first and died again (an OOM kill in a 600 MB limit)."""
    big = factory.enhanced_ct_dataset(np.random.default_rng(1).integers(0, 1500, (96, 256, 256)).astype(np.int16),
                                      rescales=((1.0, -1024.0),) * 96)
    smalls = [slice_ds(seed=k, SeriesInstanceUID=big.SeriesInstanceUID, StudyInstanceUID=big.StudyInstanceUID)
              for k in range(3)]
    out = tmp_path / "out"
    args = ("--series-timeout", "3", "--ensemble", "1")  # one series, one job, however long the big one takes
    for attempt in range(1, 4):  # each time the node begins the big instance it is killed, as by the OOM killer
        n = peers.start_node(out, *args)
        try:
            if attempt == 1:
                assert store(n.port, big, *smalls) == [0, 0, 0, 0]
            began = peers.wait_for(lambda k=attempt - 1: (c := _current(out))[1] == k and _is_big(out, c[0]) and c,
                                   60, every=0.005)
            assert began, _current(out)
        finally:
            n.kill()
    big_name = began[0]
    with peers.node(out, *args) as n:
        assert peers.wait_for(lambda: settled(out), 60)
        state = queue_of(out)
        log = n.log()
    assert [q["files"] for q in state["quarantined"]] and big_name in state["quarantined"][0]["files"]
    assert (out / "quarantine" / state["quarantined"][0]["job"] / big_name).is_file()
    assert state["finished_jobs"] == 1
    record = json.loads(next((out / "received").glob("*/job.json")).read_text())
    assert record["outcome"]["written"] + record["outcome"]["exists"] == 3
    assert any(big_name in f for f in record["failures"])
    assert "quarantined" in log and "stopped 3 times" in log
    text = runner.invoke(app, ["serve", "--status", str(out)]).output
    assert "quarantine series" in text and "1 quarantined" in text


# ------------------------------------------- 6. a destination that never answers
def test_a_destination_that_drops_connections_does_not_hold_up_the_node(tmp_path):
    """Before: one forwarding attempt blocked the processing loop for 131 s; other series waited."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    port = blackhole.getsockname()[1]
    fillers = []
    for _ in range(3):  # fill the accept queue: further SYNs are dropped, as by a firewall
        s = socket.socket()
        s.settimeout(0.3)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            pass
        fillers.append(s)
    a, b = factory.write_series(tmp_path / "a", 2), factory.write_series(tmp_path / "b", 2)
    try:
        with peers.node(tmp_path / "out", "--forward", f"PACS@127.0.0.1:{port}", "--series-timeout", "0.5",
                        "--connect-timeout", "3") as n:
            assert peers.send(n.port, *a).returncode == 0
            assert peers.wait_for(lambda: [q for q in queue_of(n.out)["queue"] if q["stage"] == "forward"], 30)
            t0 = time.monotonic()
            assert peers.send(n.port, *b).returncode == 0
            both = peers.wait_for(lambda: [q["stage"] for q in queue_of(n.out)["queue"]] == ["forward", "forward"]
                                  and not queue_of(n.out)["receiving"], 30)
            assert both and time.monotonic() - t0 < 15  # denoised while the first forward hangs
            failing = peers.wait_for(lambda: [q for q in queue_of(n.out)["queue"] if q["attempts"]], 30)
            assert failing and "no answer within 3 s" in failing[0]["last_error"]
    finally:
        for s in fillers:
            s.close()
        blackhole.close()


# -------------------------------------------------- 10. patient data at rest
def test_patient_data_is_private_to_the_node_and_removed_after_the_retention(tmp_path):
    """Before: received/ and derived/ files were 0644 under the default umask and kept forever."""
    src = factory.write_series(tmp_path / "src", 2)
    with peers.node(tmp_path / "out", "--series-timeout", "0.5") as n:
        assert peers.send(n.port, *src).returncode == 0
        assert peers.wait_for(lambda: settled(n.out) and queue_of(n.out)["finished_jobs"] == 1, 60)
        modes = {p: stat.S_IMODE(p.stat().st_mode) for p in n.out.rglob("*")}
    assert stat.S_IMODE(n.out.stat().st_mode) == 0o700
    loose = {str(p.relative_to(n.out)): oct(m) for p, m in modes.items() if m & 0o077}
    assert not loose, loose
    assert len(list((n.out / "received").rglob("*.dcm"))) == 2 and len(list((n.out / "derived").rglob("*.dcm"))) == 2
    with peers.node(tmp_path / "out", "--keep-days", "0") as n:  # a restart with no retention: swept at once
        assert peers.wait_for(lambda: not list((n.out / "received").iterdir()), 30)
        assert not list((n.out / "derived").iterdir())
        assert "removed: finished more than 0 days ago" in n.log()


def test_sweep_keeps_young_jobs_and_the_derived_series_of_queued_ones(tmp_path):
    spool = Spool(tmp_path)
    spool.open()
    for job in ("aaa-1", "bbb-2"):
        (spool.received / job).mkdir()
        (spool.received / job / "x.dcm").write_bytes(b"x")
        (spool.derived / job).mkdir()
    (spool.received / "aaa-1" / "job.json").write_text("{}")
    old = time.time() - 8 * 86400
    os.utime(spool.received / "aaa-1" / "job.json", (old, old))
    (spool.received / "bbb-2" / "job.json").write_text("{}")
    assert spool.sweep(7 * 86400) == ["aaa-1"]
    assert not (spool.derived / "aaa-1").exists() and (spool.derived / "bbb-2").is_dir()


# ----------------------------------------------------------------- 15. leftovers
def test_restart_removes_an_orphan_ledger_and_orders_jobs_by_arrival(tmp_path):
    spool = Spool(tmp_path)
    spool.open()
    (spool.sent / "gone-job").mkdir()
    (spool.sent / "gone-job" / "PACS.txt").write_text("1.2.3\n")
    spool.open()  # a kill between finishing a job and removing its ledger
    assert not (spool.sent / "gone-job").exists()
    for series, arrived in (("bbbb", 100.0), ("aaaa", 200.0), ("cccc", 50.0)):
        (spool.incoming / series).mkdir()
        (spool.incoming / series / "x.dcm").write_bytes(b"x")
        spool._last_arrival[series] = arrived
    jobs = spool.close_idle(1.0)  # all in one second
    assert [spool.series_of(j) for j in jobs] == ["cccc", "bbbb", "aaaa"]
    assert spool.jobs() == jobs
    spool.save_state(jobs[0], JobState(current="x.dcm", crashes={"x.dcm": 2}))
    assert spool.state(jobs[0]).crashes == {"x.dcm": 2}


@contextmanager
def memory_cgroup(limit_bytes: int):
    """A cgroup (v1 memory controller) of ``limit_bytes``; yields a preexec_fn that moves a child into it."""
    root = Path("/sys/fs/cgroup/memory")
    group = root / f"ct-denoise-test-{uuid.uuid4().hex[:8]}"
    try:
        group.mkdir()
        (group / "memory.limit_in_bytes").write_text(str(limit_bytes))
    except OSError as exc:
        pytest.skip(f"no memory cgroup to limit the node with here ({exc.strerror})")

    def enter():
        (group / "cgroup.procs").write_text(str(os.getpid()))

    try:
        yield enter
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:  # a killed member not yet reaped
                time.sleep(0.1)


@pytest.mark.slow
def test_in_a_memory_limit_the_instance_that_kills_the_node_is_quarantined(tmp_path):
    """The issue's crash loop, with the OOM killer itself: a 400 MB cgroup, an instance
    whose denoising needs more (128 frames of 512x512), and a restart after each death."""
    frames = np.random.default_rng(2).integers(0, 1500, (128, 512, 512), dtype=np.int16)
    big = factory.enhanced_ct_dataset(frames, rescales=((1.0, -1024.0),) * 128)
    del frames
    smalls = [slice_ds(seed=k, SeriesInstanceUID=big.SeriesInstanceUID, StudyInstanceUID=big.StudyInstanceUID)
              for k in range(2)]
    out = tmp_path / "out"
    args = ("--series-timeout", "3", "--ensemble", "1")  # the big one takes a while to arrive: one series, one job
    deaths = []
    with memory_cgroup(400 * 2 ** 20) as enter:
        for start in range(6):
            n = peers.start_node(out, *args, preexec_fn=enter)
            if start == 0:
                assert store(n.port, big, *smalls) == [0, 0, 0]
            peers.wait_for(lambda node=n: node.proc.poll() is not None or settled(out), 120, every=0.2)
            if n.proc.poll() is not None:
                deaths.append(n.proc.returncode)
                continue
            state = queue_of(out)
            n.stop()
            break
    assert deaths == [-9, -9, -9], deaths  # killed by the OOM killer three times, then it went on
    assert len(state["quarantined"]) == 1 and state["finished_jobs"] == 1
    assert "stopped 3 times" in next(iter(state["quarantined"][0]["files"].values()))


def test_sweep_removes_what_an_aborted_transfer_left_in_spool_tmp(tmp_path):
    spool = Spool(tmp_path)
    spool.open()
    stale, fresh = spool.tmp / "tmpabc.dcm", spool.tmp / "tmpdef.dcm"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"arriving")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    spool.sweep(float("inf"))
    assert not stale.exists() and fresh.exists()


def test_the_connection_limits_are_options_of_serve(tmp_path):
    src = factory.write_series(tmp_path / "src", 1)
    with peers.node(tmp_path / "out", "--max-pdu", "4096", "--max-per-peer", "1", "--idle-timeout", "3") as n:
        time.sleep(3.5)  # start_node's probe connection holds its slot until the idle timeout
        sent = peers.send(n.port, *src)
        assert "Max Send PDV: 4084" in sent.stderr and "Received Store Response (Success)" in sent.stderr
        time.sleep(0.5)
        silent = socket.create_connection(("127.0.0.1", n.port))  # holds this host's one connection...
        time.sleep(0.3)
        try:
            assert peers.echo(n.port).returncode != 0  # ...so another from it is closed at once
            assert peers.wait_for(lambda: peers.echo(n.port).returncode == 0, 10)  # until the silent one is dropped
        finally:
            silent.close()
    bad = runner.invoke(app, ["serve", "--out", str(tmp_path / "x"), "--max-per-peer", "0"])
    assert bad.exit_code == 2


def test_an_instance_cut_off_mid_transfer_leaves_nothing_in_the_spool(tmp_path):
    """pynetdicom leaves the file of a data set whose connection died mid-transfer (a killed sender)."""
    import threading

    frames = np.random.default_rng(3).integers(0, 2000, (128, 512, 512), dtype=np.int16)
    big = factory.enhanced_ct_dataset(frames, rescales=((1.0, -1024.0),) * 128)
    with peers.node(tmp_path / "out", "--series-timeout", "60") as n:
        sender = AE(ae_title="SCANNER")
        sender.add_requested_context(EnhancedCTImageStorage, ExplicitVRLittleEndian)
        assoc = sender.associate("127.0.0.1", n.port, ae_title=n.aet)
        tmp = n.out / "spool" / "tmp"
        sending = threading.Thread(target=lambda: assoc.send_c_store(big), daemon=True)
        sending.start()
        assert peers.wait_for(lambda: any(p.stat().st_size > 4 << 20 for p in tmp.iterdir()), 30, every=0.01)
        assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)  # the sender dies mid-instance
        sending.join(30)
        assert peers.wait_for(lambda: not list(tmp.iterdir()), 10), list(tmp.iterdir())
        assert peers.wait_for(lambda: "its partial data was dropped" in n.log(), 5)
        assert not queue_of(n.out)["receiving"]  # nothing of it was kept
