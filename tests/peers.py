"""Real DICOM peers for tests, on loopback only: the node and an Orthanc archive
come from ``benchmarks/_peers.py`` (started by the test, stopped by their
PID); here are dcmtk's storescu and echoscu as senders, pynetdicom's
storescp as a plain archive, and the node's queue as the tests read it.
Tests that need a missing peer skip with a note."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks._peers import (  # noqa: F401  (re-exported for the tests)
    ORTHANC,
    STORESCU,
    Archive,
    Node,
    dcmtk,
    free_port,
    orthanc,
    start_node,
    stop_by_pid,
    wait_for,
)


def storescu(archive: Archive, *files: Path) -> subprocess.CompletedProcess:
    """Send ``files`` to ``archive`` with dcmtk's storescu (proposing the files' own transfer syntaxes)."""
    return subprocess.run([STORESCU, "-aec", archive.aet, "127.0.0.1", str(archive.dicom_port),
                           *map(str, files)], capture_output=True, text=True, timeout=60)


ECHOSCU = dcmtk("echoscu")


@contextmanager
def node(out: Path, *args: str, **kw):
    """A running node, stopped by its PID on exit."""
    n = start_node(out, *args, **kw)
    try:
        yield n
    finally:
        n.stop()


def send(port: int, *files: Path, aet: str = "CTDENOISE", calling: str = "SCANNER",
         extra=()) -> subprocess.CompletedProcess:
    """dcmtk's storescu as the scanner (``-v``: one line per store response)."""
    return subprocess.run([STORESCU, "-v", "-aet", calling, "-aec", aet, *extra, "127.0.0.1", str(port),
                           *map(str, files)], capture_output=True, text=True, timeout=120)


def echo(port: int, aet: str = "CTDENOISE", calling: str = "SCANNER") -> subprocess.CompletedProcess:
    return subprocess.run([ECHOSCU, "-aet", calling, "-aec", aet, "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=30)


@dataclass
class StoreSCP:
    """pynetdicom's storescp app as a plain archive: one file per SOP Instance UID under ``folder``."""

    proc: subprocess.Popen
    port: int
    folder: Path
    aet: str = "STORESCP"

    @property
    def address(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def sop_uids(self) -> list[str]:
        import pydicom

        return [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in self.folder.iterdir()]


@contextmanager
def storescp(folder: Path):
    """pynetdicom's storescp on 127.0.0.1, storing under ``folder``; killed by PID on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([os.environ.get("PYTHON", "python"), "-m", "pynetdicom", "storescp", str(port),
                             "-ba", "127.0.0.1", "-aet", "STORESCP", "-od", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for(lambda: _listening(port), 30):
            raise RuntimeError("pynetdicom's storescp did not start")
        yield StoreSCP(proc, port, folder)
    finally:
        stop_by_pid(proc)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def queue_of(out: Path) -> dict:
    """``ct-denoise serve --status OUT --json -`` as data (through Typer's CliRunner)."""
    from typer.testing import CliRunner

    from cli import app

    result = CliRunner().invoke(app, ["serve", "--status", str(out), "--json", "-"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def settled(out: Path) -> bool:
    """True when the node folder ``out`` has nothing receiving and nothing queued."""
    state = queue_of(out)
    return not state["receiving"] and not state["queue"]
