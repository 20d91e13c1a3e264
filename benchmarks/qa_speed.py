"""Speed of ``ct-denoise qa`` on one 512x512 pair (target: under 0.5 s on 2 cores).

BEFORE is a real 512x512 CT slice (a shared series when ``../shared/data/ct``
is there, else pydicom-data's sample CT); AFTER is the bundled model's output
for it (``ct-denoise denoise``). Timed three ways:

- ``job``: ``pipelines.qa.run(before, after)`` in a warm process (reading
  both files, measuring, pairing): what qa costs per pair of a folder;
- ``measure``: only ``quality.plan`` + 2 x ``quality.measure`` + ``quality.residual``
  on arrays already in memory;
- ``process``: the whole ``ct-denoise qa BEFORE AFTER`` command as a new
  process (Python start-up and imports included).

    python benchmarks/qa_speed.py --repeats 20
    env -u OPENBLAS_CORETYPE python benchmarks/qa_speed.py   # OpenBLAS's own kernel choice

Prints min / median / max seconds of each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from denoise import quality  # noqa: E402
from denoise.dicom import load_ct, scan  # noqa: E402
from pipelines import denoise_folder, qa  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "ct" / "crlm-liver"


def pick_slice() -> Path:
    if SHARED.is_dir():
        files = scan(SHARED).series[0].files
        return files[len(files) // 2].path
    from denoise.samples import sample_ct_files

    return next(p for p in sample_ct_files() if load_ct(p).hu.shape[1:] == (512, 512))


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qa_speed_"))
    try:
        source = pick_slice()
        before = work / "before" / "slice.dcm"
        before.parent.mkdir(parents=True)
        shutil.copyfile(source, before)
        denoise_folder.run(before.parent, work / "after")
        after = work / "after" / "slice.dcm"
        b, a = load_ct(before).hu[0], load_ct(after).hu[0]
        spacing = scan(before).files[0].pixel_spacing
        print(f"pair: {b.shape[0]}x{b.shape[1]}, pixel {spacing[0]:.3g} mm, "
              f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")

        def measure():
            layout = quality.plan(b, spacing)
            quality.measure(b, layout).summary()
            quality.measure(a, layout).summary()
            quality.residual(b, a, layout)

        exe = Path(sys.executable).with_name("ct-denoise")
        command = [str(exe), "qa", str(before), str(after)] if exe.exists() else \
            [sys.executable, str(ROOT / "cli.py"), "qa", str(before), str(after)]
        rows = [("job", timed(lambda: qa.run(before, after), args.repeats)),
                ("measure", timed(measure, args.repeats)),
                ("process", timed(lambda: subprocess.run(command, check=True, capture_output=True),
                                  max(3, args.repeats // 4)))]
        for name, seconds in rows:
            print(f"{name:8s} min {min(seconds):.3f} s  median {statistics.median(seconds):.3f} s  "
                  f"max {max(seconds):.3f} s  ({len(seconds)} runs)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
