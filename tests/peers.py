"""Real DICOM peers for tests, on loopback only: an Orthanc archive started
in a temporary configuration and stopped by its PID, and dcmtk's storescu
as the sender. Tests that need a missing peer skip with a note."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ORTHANC = shutil.which("Orthanc")
STORESCU = shutil.which("storescu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Archive:
    pid: int
    aet: str
    dicom_port: int
    http_port: int

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as reply:
            return json.loads(reply.read())


@contextmanager
def orthanc(tmp: Path, aet: str = "ARCHIVE"):
    """An Orthanc on 127.0.0.1 with its storage under ``tmp``; killed by PID on exit."""
    dicom_port, http_port = free_port(), free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = {"Name": "ct-denoise-test", "StorageDirectory": str(tmp / "storage"),
              "IndexDirectory": str(tmp / "storage"), "DicomAet": aet, "DicomPort": dicom_port,
              "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "DicomCheckCalledAet": False, "Plugins": [], "HttpServerEnabled": True,
              "DicomServerEnabled": True, "StableAge": 1}
    (tmp / "orthanc.json").write_text(json.dumps(config))
    log = open(tmp / "orthanc.log", "wb")
    proc = subprocess.Popen([ORTHANC, str(tmp / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    archive = Archive(proc.pid, aet, dicom_port, http_port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                archive.get("/system")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start: {(tmp / 'orthanc.log').read_text()[-500:]}") from None
                time.sleep(0.2)
        yield archive
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def storescu(archive: Archive, *files: Path) -> subprocess.CompletedProcess:
    """Send ``files`` to ``archive`` with dcmtk's storescu (proposing the files' own transfer syntaxes)."""
    return subprocess.run([STORESCU, "-aec", archive.aet, "127.0.0.1", str(archive.dicom_port),
                           *map(str, files)], capture_output=True, text=True, timeout=60)
