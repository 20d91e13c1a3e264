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

import _peers as peers  # benchmarks/_peers.py: the node, Orthanc and storescu on loopback
from pydicom.dataset import Dataset

from denoise.dicom import scan

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "ct"
SERIES = ("lidc-chest", "ricord-chest", "acrin-abdomen-pelvis", "rider-chest")  # the largest series of each


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


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
                peers.wait_for(lambda: len(archive.get("/instances")) >= acked and not peers.node_busy(tmp / "out"),
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
    from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian
    from pynetdicom import AE

    from denoise.node.admit import DEFAULT_MAX_PIXELS

    frames = DEFAULT_MAX_PIXELS // (512 * 512)
    ds = noisy_phantom(frames)
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
            peers.wait_for(lambda: not peers.node_busy(tmp / "out"), 3600, every=1.0)
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


def noisy_phantom(frames: int, size: int = 512, spacing_mm: float = 0.7) -> Dataset:
    """An Enhanced CT instance of ``frames`` frames of ``size`` x ``size``: a
    40 HU disk in air (its edge blurred by a Gaussian of 0.5 mm) with white
    noise of 20 HU, shifted by +1024 and clipped to 0..4095, as HU (a rescale
    of slope 1, intercept -1024 per frame). What it costs the node depends on
    its size, not on its values."""
    import numpy as np
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid
    from scipy import special

    yy, xx = np.mgrid[:size, :size]
    r = np.hypot((yy - size / 2 + 0.3) * spacing_mm, (xx - size / 2 + 0.2) * spacing_mm)
    disk = -1000.0 + 1040.0 * special.ndtr((38.0 - r) / 0.5)
    hu = disk[None] + np.random.default_rng(0).normal(0, 20, (frames, size, size))
    stored = (np.clip(hu + 1024, 0, 4095).astype(np.int16) + 1024).astype(np.int16)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = EnhancedCTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID = "BENCHMARK^PHANTOM", "BENCHMARK"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.SeriesNumber, ds.SeriesDescription, ds.BodyPartExamined = 3, "SYNTH SERIES", "CHEST"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    shared, orient, measures = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness = [spacing_mm, spacing_mm], 1.0
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    per_frame = []
    for k in range(frames):
        item, position, rescale = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [-10.0, -10.0, float(k)]
        rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1.0, -1024.0, "HU"
        item.PlanePositionSequence = Sequence([position])
        item.PixelValueTransformationSequence = Sequence([rescale])
        per_frame.append(item)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.set_pixel_data(stored, "MONOCHROME2", 16)
    ds.NumberOfFrames = frames
    return ds


if __name__ == "__main__":
    main()
