"""Apply an HU -> HU operation to every CT file under a path, writing one
derived series per input series that mirrors the input's relative paths.

The rules every batch job follows:

* inputs are never modified and nothing is written inside the input folder;
* each output is written atomically (temp file + rename);
* an output that exists and is *this operation's* result for *this source*
  is kept (so an interrupted batch resumes), anything else at that path is
  only replaced with ``force``;
* one bad file is reported with a one-line reason and the batch goes on;
* files are streamed one at a time (optionally in worker processes), never
  loaded all at once;
* a single input file given an output path ending in ``.dcm`` (not an
  existing folder) is written to that file, by the same rules.

Exit codes (:attr:`BatchReport.exit_code`): 0 every CT file has its output,
1 at least one file failed, 3 no CT image was found in the input.
"""

from __future__ import annotations

import errno
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

import numpy as np

from denoise.dicom.identity import Derivation, expected_sop_uid
from denoise.dicom.pixels import load_ct
from denoise.dicom.scan import CTFile, ScanResult, SkipFile, inspect_file, scan
from denoise.dicom.write import derive_dataset, output_path, write_atomic
from denoise.neighbours import neighbourhood
from denoise.text import one_line

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_NOTHING = 0, 1, 2, 3


class Transform(Protocol):
    """An operation on one file's frames: (frames, H, W) HU -> same shape HU.

    A transform whose output depends on a per-file input besides the pixels
    and the derivation (e.g. a noise stream) names it in ``uid_entropy(source)``,
    which goes into the output's SOP Instance UID. One that takes a slice's
    neighbours (a 2.5-D model) says how many on each side in ``context``; it
    is then called with ``neighbours=`` (:meth:`denoise.inference.Denoiser.stack`)
    where the series has them.
    """

    derivation: Derivation

    def __call__(self, hu: np.ndarray, source: CTFile) -> np.ndarray: ...


def uid_entropy(transform: Transform, source: CTFile) -> str:
    method = getattr(transform, "uid_entropy", None)
    return method(source) if method is not None else ""


class TransformFactory(Protocol):
    """Picklable recipe that builds a :class:`Transform` (once per worker)."""

    def build(self) -> Transform: ...


@dataclass(frozen=True)
class FileOutcome:
    relpath: str
    status: str  # "written" | "exists" | "failed" | "ignored"
    reason: str = ""
    seconds: float = 0.0  # time spent on this file (0 for files skipped at the scan)
    retry: bool = False  # failed for want of a resource (the output could not be written): may succeed later
    frames: int = 0  # slices the file held (written or already done; 0 where it was not read)


@dataclass
class BatchReport:
    input: str
    output: str
    outcomes: list[FileOutcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        if self.count("written") + self.count("exists") + self.count("failed") == 0:
            return EXIT_NOTHING
        return EXIT_PARTIAL if self.count("failed") else EXIT_OK

    def summary(self) -> str:
        return (f"{self.count('written')} written, {self.count('exists')} already done, "
                f"{self.count('failed')} failed, {self.count('ignored')} ignored (not HU CT images)")

    seconds: float = 0.0  # wall time of the whole batch
    to_file: bool = False  # ``output`` is the one file written (a single input file, OUTPUT ending in .dcm)
    with_neighbours: int = 0  # files planned with neighbour slices (their series gives a 2.5-D model some)
    settings: dict = field(default_factory=dict)  # what the operation ran with (the job fills it in)

    def to_dict(self) -> dict:
        """The JSON summary: counts, per-file outcome and output path, timings, exit code."""
        files = []
        for o in self.outcomes:
            path = None
            if o.status in ("written", "exists"):
                path = self.output if self.to_file else str(output_path(Path(self.output), PurePosixPath(o.relpath)))
            files.append({"file": o.relpath, "status": o.status, "reason": o.reason or None, "output": path,
                          "seconds": round(o.seconds, 4)})
        return {"input": self.input, "output": self.output,
                "counts": {s: self.count(s) for s in ("written", "exists", "failed", "ignored")},
                "seconds": round(self.seconds, 3), "exit_code": self.exit_code, "files": files}


class UsageError(ValueError):
    """The request itself is wrong (bad paths); nothing was processed."""


@dataclass(frozen=True)
class FileJob:
    source: CTFile
    output: Path
    neighbours: tuple[Path | None, ...] = ()  # denoise.neighbours.Neighbourhood.paths of the slice


def output_file(input_path: Path, output: Path) -> Path | None:
    """The one file to write, when ``input_path`` is a file and ``output`` ends in ``.dcm`` and is not
    an existing folder (``denoise scan.dcm out/scan-dn.dcm``); None: ``output`` is the output folder."""
    if Path(input_path).is_file() and Path(output).suffix.lower() == ".dcm" and not Path(output).is_dir():
        return Path(output)
    return None


def check_paths(input_path: Path, output_root: Path) -> None:
    """Refuse output locations that would write into (or over) the input."""
    if not input_path.exists():
        raise UsageError(f"{input_path}: no such file or folder")
    src = input_path.resolve()
    out = output_root.resolve()
    if output_file(input_path, output_root) is not None:
        if out == src:
            raise UsageError(f"{output_root}: writing there would overwrite the input file {input_path}")
        check_writable(output_root.parent)
        return
    if output_root.exists() and not output_root.is_dir():
        raise UsageError(f"{output_root}: output must be a folder, not a file")
    if src.is_dir() and (out == src or src in out.parents):
        raise UsageError(f"{output_root}: output folder is inside the input folder {input_path}; "
                         "choose a folder outside it")
    if src.is_file() and out / src.name == src:
        raise UsageError(f"{output_root}: writing there would overwrite the input file {input_path}")
    check_writable(output_root)


def check_writable(output_root: Path) -> None:
    """Refuse (UsageError, one line naming the path and the cause) an output folder
    that cannot be created or written: under a regular file, read-only, immutable,
    on a read-only file system... before any file is processed. Proven by creating
    and removing a temporary file in the output folder, or, while it does not exist
    yet, in the nearest folder above it that does (where it will be created): no
    folder is made here, so nothing appears and disappears for other processes."""
    folder = output_root.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{output_root}: cannot write the output there: {folder} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".ct-denoise-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        cause = (exc.strerror or one_line(exc)).lower()
        cause += " (an immutable folder?)" if exc.errno == errno.EPERM else ""
        raise UsageError(f"{output_root}: cannot write the output there: {cause}") from exc


def plan(result: ScanResult, output_root: Path, file: Path | None = None) -> tuple[list[FileJob], list[FileOutcome]]:
    """One job per CT file; skipped inputs become outcomes straight away. ``file``: the one
    output file of a single input file (:func:`output_file`), instead of a path under ``output_root``."""
    jobs, outcomes = [], []
    for skipped in result.skipped:
        status = "failed" if skipped.bad else "ignored"
        outcomes.append(FileOutcome(str(skipped.relpath), status, skipped.reason))
    for series in result.series:
        around = neighbourhood(series).paths
        for ct in series.files:
            try:
                target = file if file is not None else output_path(output_root, ct.relpath)
                jobs.append(FileJob(ct, target, around.get(ct.path, ())))
            except ValueError as exc:
                outcomes.append(FileOutcome(str(ct.relpath), "failed", str(exc)))
    return jobs, outcomes


def is_done(job: FileJob, expected_uid: str) -> bool:
    """True if ``job.output`` is a complete, readable result of this
    operation on this source: it has the deterministic SOP Instance UID
    (:func:`denoise.dicom.identity.expected_sop_uid`) the result would get."""
    if not job.output.is_file():
        return False
    try:
        found = inspect_file(job.output, job.source.relpath, allow_non_hu=True)
    except SkipFile:
        return False
    return found.sop_uid == expected_uid


def read_neighbours(paths: tuple[Path | None, ...], n: int) -> list[np.ndarray | None]:
    """The ``n`` nearest neighbour slices on each side (HU) of a job's ``neighbours``; one that
    cannot be read is None (the slice stands in for it), so a bad neighbour never fails a file."""
    span = len(paths) // 2
    out = []
    for path in paths[span - n:span + n]:
        try:
            out.append(None if path is None else load_ct(path).hu[0])
        except Exception:  # noqa: BLE001 - its own job reports what is wrong with that file
            out.append(None)
    return out


def process_file(job: FileJob, transform: Transform, *, force: bool) -> FileOutcome:
    """Run one job; never raises for a problem with this file."""
    rel = str(job.source.relpath)
    t0 = time.perf_counter()
    try:
        image = load_ct(job.source.path)
        extra = uid_entropy(transform, job.source)
        if job.output.exists() and not force:
            if is_done(job, expected_sop_uid(image.dataset, image.rescales, transform.derivation, extra)):
                return FileOutcome(rel, "exists", seconds=time.perf_counter() - t0, frames=len(image.hu))
            return FileOutcome(rel, "failed", f"output {job.output} exists and is not this "
                               "operation's result; use --force to overwrite it", time.perf_counter() - t0)
        context = getattr(transform, "context", 0)
        if context and job.neighbours:
            hu = transform(image.hu, job.source, neighbours=read_neighbours(job.neighbours, context))
        else:
            hu = transform(image.hu, job.source)
        if hu.shape != image.hu.shape:
            raise ValueError(f"operation changed the image shape {image.hu.shape} -> {hu.shape}")
        ds = derive_dataset(image.dataset, hu, image.rescales, transform.derivation,
                            padding=image.padding, extra=extra)
        try:
            write_atomic(ds, job.output)
        except OSError as exc:  # a full disk, a quota, permissions: not the file's fault
            return FileOutcome(rel, "failed", f"cannot write {job.output.name}: {one_line(exc)}",
                               time.perf_counter() - t0, retry=True)
    except Exception as exc:  # batch boundary: report the file, keep going
        return FileOutcome(rel, "failed", one_line(exc), time.perf_counter() - t0)
    return FileOutcome(rel, "written", seconds=time.perf_counter() - t0, frames=len(hu))


_WORKER: dict = {}


def _init_worker(factory: TransformFactory) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # N processes x 1 BLAS thread, no oversubscription
    _WORKER["transform"] = factory.build()


def _run_in_worker(job: FileJob, force: bool) -> FileOutcome:
    return process_file(job, _WORKER["transform"], force=force)


_DASK_CACHE: dict = {}


def _run_on_dask_worker(factory: TransformFactory, job: FileJob, force: bool) -> FileOutcome:
    """Dask task: the transform (the model) is built once per worker process and reused."""
    transform = _DASK_CACHE.get(factory)
    if transform is None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        transform = _DASK_CACHE[factory] = factory.build()
    return process_file(job, transform, force=force)


def execute_dask(jobs: list[FileJob], factory: TransformFactory, *, force: bool, scheduler: str,
                 workers: int) -> Iterator[FileOutcome]:
    """Run the jobs on a ``dask.distributed`` cluster: ``scheduler`` is a
    scheduler address (``tcp://host:port``) or ``"local"`` (a LocalCluster of
    ``workers`` single-threaded processes). Outcomes come back in job order; a
    task that dies on a worker becomes a failed outcome for its file."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise UsageError("Dask is not installed: pip install .[dask]") from exc
    cluster = None
    try:
        if scheduler == "local":
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout=30)
    except (OSError, TimeoutError, ValueError) as exc:
        if cluster is not None:
            cluster.close()
        raise UsageError(f"cannot connect to the Dask scheduler {scheduler}: {one_line(exc)}") from exc
    try:
        futures = [client.submit(_run_on_dask_worker, factory, job, force, pure=False) for job in jobs]
        for job, future in zip(jobs, futures, strict=True):
            try:
                yield future.result()
            except Exception as exc:  # the task itself died (worker lost, unpicklable result...)
                yield FileOutcome(str(job.source.relpath), "failed", f"on a Dask worker: {one_line(exc)}")
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def execute(jobs: list[FileJob], factory: TransformFactory, *, force: bool,
            workers: int, scheduler: str | None = None,
            on_begin: Callable[[FileJob], None] | None = None) -> Iterator[FileOutcome]:
    """Yield one outcome per job, using ``workers`` processes (or a Dask
    cluster when ``scheduler`` is given). With processes, outcomes come as
    files finish (a slow file holds nobody up); if a worker dies, the files
    whose result had come back keep it, and only the others are reported
    failed. ``on_begin(job)`` is called before each file in a single process
    (the node records what it was doing, should it die)."""
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if scheduler is not None:
        yield from execute_dask(jobs, factory, force=force, scheduler=scheduler, workers=workers)
        return
    if workers == 1 or len(jobs) <= 1:
        transform = factory.build()
        for job in jobs:
            if on_begin is not None:
                on_begin(job)
            yield process_file(job, transform, force=force)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx,
                             initializer=_init_worker, initargs=(factory,)) as pool:
        existed = {job.output: job.output.exists() for job in jobs}
        futures = {pool.submit(_run_in_worker, job, force): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            try:
                yield future.result()
            except BrokenProcessPool:  # a worker was killed (OOM, signal) or crashed: no result came back
                if not existed[job.output] and job.output.exists():  # written (atomically) before the crash
                    yield FileOutcome(str(job.source.relpath), "written", frames=job.source.n_frames)
                else:
                    yield FileOutcome(str(job.source.relpath), "failed", "no result: a worker process died "
                                      "(killed or crashed) during the batch; run it again to finish")


def run_batch(input_path: str | os.PathLike, output_root: str | os.PathLike,
              factory: TransformFactory, *, force: bool = False, workers: int = 1,
              scheduler: str | None = None, on_outcome: Callable[[FileOutcome], None] | None = None,
              on_plan: Callable[[int], None] | None = None, allow_non_hu: bool = False,
              on_scan: Callable[[int, int], None] | None = None,
              on_begin: Callable[[FileJob], None] | None = None) -> BatchReport:
    """Scan ``input_path``, run the factory's transform on every CT file and
    write derived DICOM under ``output_root``. See the module docstring.
    CT whose values are not HU is ignored with its reason unless ``allow_non_hu``."""
    input_path, output_root = Path(input_path), Path(output_root)
    check_paths(input_path, output_root)
    target = output_file(input_path, output_root)
    result = scan(input_path, allow_non_hu=allow_non_hu, on_file=on_scan)
    jobs, outcomes = plan(result, output_root, target)
    report = BatchReport(str(input_path), str(output_root), to_file=target is not None,
                         with_neighbours=sum(bool(job.neighbours) for job in jobs))
    if on_plan is not None:
        on_plan(len(jobs))
    for outcome in outcomes:
        report.outcomes.append(outcome)
    t0 = time.perf_counter()
    try:
        if jobs:
            for outcome in execute(jobs, factory, force=force, workers=workers, scheduler=scheduler,
                                   on_begin=on_begin):
                report.outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
    finally:
        report.seconds = time.perf_counter() - t0
    # files finish in any order: list them in job order
    order = {str(job.source.relpath): k for k, job in enumerate(jobs)}
    skipped = len(outcomes)
    report.outcomes[skipped:] = sorted(report.outcomes[skipped:], key=lambda o: order.get(o.relpath, len(order)))
    return report


@dataclass
class VolumeReport:
    """What ``denoise`` did with NIfTI: a NIfTI input, or a DICOM input written as NIfTI (``--format nifti``)."""

    input: str
    output: str
    volumes: list[dict] = field(default_factory=list)  # per volume: input, series, slices, output (or reason)
    settings: dict = field(default_factory=dict)
    command: str = "denoise"

    @property
    def exit_code(self) -> int:
        if not self.volumes:
            return EXIT_NOTHING
        return EXIT_PARTIAL if any("reason" in v for v in self.volumes) else EXIT_OK

    def to_dict(self) -> dict:
        return {"command": self.command, "format": "nifti", "input": self.input, "output": self.output,
                "exit_code": self.exit_code, "volumes": self.volumes, "settings": self.settings}
