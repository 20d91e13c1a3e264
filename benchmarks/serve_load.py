"""Load on the DICOM node: several senders at once, real CT, peak memory.

``--senders`` storescu processes (dcmtk) each send ``--slices`` slices of a
different real series from ``../shared/data/ct`` (512x512; RICORD's are JPEG
lossless and travel as they are: ``storescu -xs`` proposes JPEG lossless too)
to one ``ct-denoise serve`` at the same time; the node forwards every derived
series to an Orthanc on loopback. Reported: instances acknowledged, derived
instances in the archive, receive time, time until the queue is empty, and the
node's peak resident memory (VmHWM, read from /proc before it stops), next to
the size of the decoded pixels sent, so bounded memory shows as a peak far
below the data volume.

    python benchmarks/serve_load.py --senders 3 --slices 100 --json benchmarks/results/serve_load.json
    env -u OPENBLAS_CORETYPE python benchmarks/serve_load.py   # OpenBLAS's own kernel choice

``--largest`` instead sends one Enhanced CT instance of exactly the node's
default ``--max-pixels`` (256 frames of 512x512, a noisy phantom), the
largest the limits admit, and reports the same figures for it: the memory a
node needs is set by this, not by the volume received.

Needs dcmtk, Orthanc and ../shared/data/ct.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from denoise.dicom import scan  # noqa: E402
from tests import peers  # noqa: E402  (the same loopback peers the tests use)

SHARED = ROOT.parent / "shared" / "data" / "ct"
SERIES = ("lidc-chest", "ricord-chest", "acrin-abdomen-pelvis", "rider-chest")  # the largest series of each


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peers_busy(out: Path) -> bool:
    """True while the node still has a series receiving or queued."""
    from pipelines.serve import status

    state = status(out)
    return bool(state["receiving"] or state["queue"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--senders", type=int, default=3)
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--largest", action="store_true", help="one instance of the default --max-pixels")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.largest:
        return largest(args.json)
    if not SHARED.is_dir() or not (peers.STORESCU and peers.ORTHANC):
        sys.exit("needs ../shared/data/ct, dcmtk's storescu and Orthanc")
    os.environ.setdefault("PYTHON", sys.executable)
    sources = []
    for name in SERIES[:args.senders]:
        files = max(scan(SHARED / name).series, key=lambda s: len(s.files)).files
        sources.append([f.path for f in files[:args.slices]])
    pixels_mib = sum(map(len, sources)) * 512 * 512 * 4 / 2 ** 20  # float32 HU, as the model sees them
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with peers.orthanc(tmp / "orthanc") as archive:
            node = peers.start_node(tmp / "out", "--forward", archive.address, "--series-timeout", "3")
            try:
                t0 = time.perf_counter()
                senders = [subprocess.Popen([peers.STORESCU, "-v", "-xs", "-aet", f"SCANNER{k}", "-aec", node.aet,
                                             "127.0.0.1", str(node.port), *map(str, files)],
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                           for k, files in enumerate(sources)]
                outputs = [s.communicate()[0] for s in senders]
                receive_s = time.perf_counter() - t0
                acked = sum(o.count("Received Store Response (Success)") for o in outputs)
                total = sum(map(len, sources))
                peers.wait_for(lambda: len(archive.get("/instances")) >= acked and not peers_busy(tmp / "out"),
                               3600, every=1.0)
                done_s = time.perf_counter() - t0
                peak = peak_rss_mib(node.proc.pid)
                arrived = len(archive.get("/instances"))
            finally:
                node.stop()
    result = {"senders": args.senders, "slices_each": args.slices, "acknowledged": acked, "sent": total,
              "arrived_in_archive": arrived, "receive_s": round(receive_s, 1), "all_forwarded_s": round(done_s, 1),
              "node_peak_rss_mib": round(peak, 1), "decoded_pixels_sent_mib_float32": round(pixels_mib, 1)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def largest(json_path: Path | None) -> None:
    import numpy as np
    from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import AE

    from denoise.node.admit import DEFAULT_MAX_PIXELS
    from tests import factory

    frames = DEFAULT_MAX_PIXELS // (512 * 512)
    rng = np.random.default_rng(0)
    hu = factory.body_phantom(512)[None] + rng.normal(0, 20, (frames, 512, 512))
    ds = factory.enhanced_ct_dataset(np.clip(hu + 1024, 0, 4095).astype(np.int16), rescales=((1.0, -1024.0),) * frames)
    os.environ.setdefault("PYTHON", sys.executable)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        node = peers.start_node(tmp / "out", "--series-timeout", "1", "--ensemble", "1")
        try:
            sender = AE(ae_title="SCANNER")
            sender.add_requested_context(EnhancedCTImageStorage, ExplicitVRLittleEndian)
            t0 = time.perf_counter()
            assoc = sender.associate("127.0.0.1", node.port, ae_title=node.aet)
            status = assoc.send_c_store(ds).Status
            assoc.release()
            receive_s = time.perf_counter() - t0
            peak_received = peak_rss_mib(node.proc.pid)
            peers.wait_for(lambda: not peers_busy(tmp / "out"), 3600, every=1.0)
            done_s = time.perf_counter() - t0
            peak = peak_rss_mib(node.proc.pid)
        finally:
            node.stop()
    result = {"instance": f"Enhanced CT, {frames} frames of 512x512 ({DEFAULT_MAX_PIXELS} pixels, the default "
              "--max-pixels)", "status": f"0x{status:04X}", "bytes_sent_mib": round(len(ds.PixelData) / 2 ** 20, 1),
              "receive_s": round(receive_s, 1), "node_peak_rss_after_receiving_mib": round(peak_received, 1),
              "denoised_s": round(done_s, 1), "node_peak_rss_mib": round(peak, 1), "ensemble": 1}
    print(json.dumps(result, indent=2))
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
