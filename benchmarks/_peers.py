"""Loopback DICOM peers: a ``ct-denoise serve`` node and an Orthanc archive,
each started in a subprocess on 127.0.0.1 and stopped by its PID, and dcmtk's
storescu as the sender.

Only the installed package is used (the node runs as ``python -m denoise``),
so a benchmark runs from any folder. The tests take these peers from here and
add their own senders and checks (``tests/peers.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def dcmtk(tool: str) -> str | None:
    """dcmtk's ``tool`` on PATH, skipping same-named scripts of other packages
    (pynetdicom installs its own ``storescu`` and ``echoscu`` into the venv)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which(tool, path=folder)
        if path is None:
            continue
        try:
            found = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if "dcmtk" in (found.stdout + found.stderr).lower():
            return path
    return None


ORTHANC = shutil.which("Orthanc")
STORESCU = dcmtk("storescu")


def stop_by_pid(proc: subprocess.Popen, timeout: float = 10) -> int:
    """SIGTERM to the PID, SIGKILL if it has not ended after ``timeout`` s; the exit code."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 60, every: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; that value, or None at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


@dataclass
class Archive:
    pid: int
    aet: str
    dicom_port: int
    http_port: int

    @property
    def address(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def sop_uids(self) -> list[str]:
        """SOP Instance UIDs of every instance stored (one entry per stored instance)."""
        return [self.get(f"/instances/{i}/simplified-tags")["SOPInstanceUID"] for i in self.get("/instances")]

    def file(self, sop_uid: str) -> bytes:
        found = self.post("/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}})
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/instances/{found[0]}/file",
                                    timeout=10) as reply:
            return reply.read()

    def post(self, path: str, body: dict):
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read())

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as reply:
            return json.loads(reply.read())


@contextmanager
def orthanc(tmp: Path, aet: str = "ARCHIVE", dicom_port: int | None = None):
    """An Orthanc on 127.0.0.1 with its storage under ``tmp``; killed by PID on exit."""
    dicom_port, http_port = dicom_port or free_port(), free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = {"Name": "ct-denoise-benchmark", "StorageDirectory": str(tmp / "storage"),
              "IndexDirectory": str(tmp / "storage"), "DicomAet": aet, "DicomPort": dicom_port,
              "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "DicomCheckCalledAet": False, "Plugins": [], "HttpServerEnabled": True,
              "DicomServerEnabled": True, "StableAge": 1,
              "SyncStorageArea": False, "SaveJobs": False}
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
        stop_by_pid(proc)
        log.close()


@dataclass
class Node:
    proc: subprocess.Popen
    port: int
    out: Path
    aet: str = "CTDENOISE"

    def log(self) -> str:
        path = self.out / "node.log"
        return path.read_text() if path.is_file() else ""

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (a drain), then SIGKILL if it does not end; returns the exit code."""
        return stop_by_pid(self.proc, timeout)


def start_node(out: Path, *args: str, port: int | None = None, aet: str = "CTDENOISE", preexec_fn=None,
               timeout: float = 60) -> Node:
    """``ct-denoise serve`` (``python -m denoise serve``, ``$PYTHON`` else this
    interpreter) in a subprocess on 127.0.0.1; returns once it listens."""
    port = port or free_port()
    proc = subprocess.Popen([os.environ.get("PYTHON", sys.executable), "-m", "denoise", "serve", "--out", str(out),
                             "--aet", aet, "--port", str(port), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=preexec_fn)
    node = Node(proc, port, out, aet)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return node
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                node.stop()
                raise RuntimeError(f"the node did not start (exit {proc.returncode}): {node.log()[-800:]}") from None
            time.sleep(0.1)


def node_busy(out: Path) -> bool:
    """True while the node folder ``out`` still has a series receiving or queued."""
    from pipelines.serve import status

    state = status(out)
    return bool(state["receiving"] or state["queue"])
