"""The node's persistent spool and queue: everything is a file under one folder,
and every change of state is one atomic rename or one atomic write, so a
SIGKILL at any moment leaves a state a restart can finish.

Layout under ``root`` (``<S>`` is a short hash of the Series Instance UID, so
no path carries a patient identifier; ``<J>`` is ``<S>-<close stamp>``)::

    spool/tmp/                 instances being received (removed at start)
    spool/incoming/<S>/        instances acknowledged, series still open
    queue/<J>/                 a closed series waiting to be denoised and forwarded
    state/<J>.json             its stage, batch outcome, attempts, the file being denoised
    sent/<J>/<destination>.txt SOP Instance UIDs each destination acknowledged
    derived/<J>/               the job's derived series, made from this job's files only
    received/<J>/              originals of finished jobs, and job.json: what was done
    quarantine/<J>/            instances the node died on repeatedly, and job.json: why

An instance is received into ``spool/tmp`` and fsync'd, then renamed into
``spool/incoming/<S>``; only then does the sender get its success status. A
series closes (``incoming/<S>`` is renamed to ``queue/<J>``) when nothing has
arrived for the series timeout. A job is finished when ``queue/<J>`` is renamed
to ``received/<J>``; until then a restart redoes whatever its stage needs,
which is safe because denoising skips outputs of this job that are already
complete and forwarding is idempotent by SOP Instance UID. A series sent
again is a new job with its own derived folder: nothing made from an earlier
copy is taken for its result.

Files are created readable by the node's user only (umask 077, set by the
node); finished and quarantined jobs are removed after the retention period
(:meth:`Spool.sweep`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from denoise.atomic import is_temp, write_json
from denoise.hashing import short_hash

STAGES = ("denoise", "forward")
RECORD = "job.json"  # what was done, kept with a finished or quarantined job
STALE_TMP_S = 3600.0  # a file in spool/tmp untouched this long belongs to no transfer (PDUs have a 60 s deadline)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class JobState:
    """What is known of a queued job beyond its files (``state/<J>.json``)."""

    stage: str = "denoise"
    outcome: dict = field(default_factory=dict)  # batch counts: written, exists, failed, ignored
    failures: list = field(default_factory=list)  # "name: reason" of files not denoised (kept in job.json)
    attempts: dict = field(default_factory=dict)  # "denoise" or destination -> failed attempts in a row
    next_try: float = 0.0  # epoch seconds before which the job is not retried
    last_error: str = ""
    denoise_s: float = 0.0  # wall time of the denoising stage
    sent: dict = field(default_factory=dict)  # destination -> derived instances it holds from this job
    current: str = ""  # the file being denoised (set before it starts, cleared after: the node may die on it)
    crashes: dict = field(default_factory=dict)  # file -> times the node died while denoising it
    quarantined: list = field(default_factory=list)  # "name: reason" of files moved to quarantine/

    @classmethod
    def from_json(cls, data: dict) -> JobState:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        state = cls(**known)
        if state.stage not in STAGES:
            state.stage = "denoise"
        return state


class Spool:
    """The node's folder. Methods are safe to call from the receiving threads
    and the processing thread at once (one lock guards series closing)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.tmp = self.root / "spool" / "tmp"
        self.incoming = self.root / "spool" / "incoming"
        self.queue = self.root / "queue"
        self.state_dir = self.root / "state"
        self.sent = self.root / "sent"
        self.derived = self.root / "derived"
        self.received = self.root / "received"
        self.quarantine = self.root / "quarantine"
        self._lock = threading.Lock()
        self._last_arrival: dict[str, float] = {}

    # ------------------------------------------------------------------ start
    def open(self) -> None:
        """Create the folders; drop partial writes a killed node left behind;
        take the open series' last arrival times from their files."""
        for d in (self.tmp, self.incoming, self.queue, self.state_dir, self.sent, self.derived, self.received,
                  self.quarantine):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            leftover.unlink()
        for tmp in self.root.rglob(".*.tmp"):  # atomic writes a kill interrupted: derived copies, states
            if is_temp(tmp.name):
                tmp.unlink()
        for series in self.incoming.iterdir():
            stamps = [f.stat().st_mtime for f in series.iterdir()]
            if stamps:
                self._last_arrival[series.name] = max(stamps)
            else:
                series.rmdir()
        for state in self.state_dir.glob("*.json"):  # a job finished just before a kill
            if not (self.queue / state.stem).is_dir():
                state.unlink()
        for ledger in self.sent.iterdir():  # likewise
            if not (self.queue / ledger.name).is_dir():
                shutil.rmtree(ledger, ignore_errors=True)

    # ---------------------------------------------------------------- receive
    def store_file(self, series_uid: str, sop_uid: str, path: Path) -> Path:
        """Move a received file into its open series durably (fsync, then an
        atomic rename). The node's inbox writes into ``tmp/`` already; a file
        from elsewhere is copied there first, and the original left to its owner."""
        staged = path
        if path.parent != self.tmp:
            staged = self.tmp / f"{uuid.uuid4().hex}.dcm"
            shutil.copyfile(path, staged)
        try:
            with open(staged, "rb+") as fh:
                os.fsync(fh.fileno())
            return self._commit(series_uid, sop_uid, staged)
        finally:
            staged.unlink(missing_ok=True)

    def _commit(self, series_uid: str, sop_uid: str, staged: Path) -> Path:
        series = short_hash(series_uid)
        with self._lock:
            folder = self.incoming / series
            folder.mkdir(exist_ok=True)
            target = folder / f"{short_hash(sop_uid, 24)}.dcm"
            os.replace(staged, target)
            self._last_arrival[series] = time.time()
        _fsync_dir(folder)
        return target

    def close_idle(self, timeout_s: float) -> list[str]:
        """Move every series idle for ``timeout_s`` into the queue; return the new job ids."""
        jobs = []
        now = time.time()
        with self._lock:
            idle = sorted((last, series) for series, last in self._last_arrival.items() if now - last >= timeout_s)
            for k, (_, series) in enumerate(idle):  # in arrival order, which the stamps keep
                stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1e6) % 1_000_000:06d}"
                job = f"{series}-{stamp}{k:03d}"
                os.rename(self.incoming / series, self.queue / job)
                del self._last_arrival[series]
                jobs.append(job)
        if jobs:
            _fsync_dir(self.queue)
        return jobs

    # ------------------------------------------------------------------ queue
    def jobs(self) -> list[str]:
        """Queued jobs, oldest first."""
        return sorted((p.name for p in self.queue.iterdir() if p.is_dir()), key=lambda j: j.split("-", 1)[1])

    def file_in(self, job: str, name: str) -> Path:
        return self.queue / job / name

    @staticmethod
    def series_of(job: str) -> str:
        return job.split("-", 1)[0]

    def sources(self, job: str) -> list[Path]:
        return sorted((self.queue / job).glob("*.dcm"))

    def derived_dir(self, job: str) -> Path:
        return self.derived / job

    def state(self, job: str) -> JobState:
        path = self.state_dir / f"{job}.json"
        try:
            return JobState.from_json(json.loads(path.read_text()))
        except (OSError, ValueError):  # none yet (or unreadable): start from the first stage
            return JobState()

    def save_state(self, job: str, state: JobState) -> None:
        write_json(self.state_dir / f"{job}.json", state.__dict__)

    def ledger(self, job: str, destination: str) -> Path:
        return self.sent / job / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', destination)}.txt"

    def sent_uids(self, job: str, destination: str) -> set[str]:
        path = self.ledger(job, destination)
        return set(path.read_text().split()) if path.is_file() else set()

    def record_sent(self, job: str, destination: str, sop_uid: str) -> None:
        path = self.ledger(job, destination)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(sop_uid + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def finish(self, job: str, state: JobState) -> None:
        """The job is done: its originals and its record move to ``received/``, its bookkeeping goes."""
        write_json(self.queue / job / RECORD, {"job": job, "finished": time.time(), **state.__dict__})
        os.rename(self.queue / job, self.received / job)
        _fsync_dir(self.received)
        (self.state_dir / f"{job}.json").unlink(missing_ok=True)
        shutil.rmtree(self.sent / job, ignore_errors=True)

    def quarantine_file(self, job: str, name: str, reason: str) -> None:
        """Move one source file of a queued job to ``quarantine/<J>/``, with the reason in its record."""
        folder = self.quarantine / job
        folder.mkdir(exist_ok=True)
        record = folder / RECORD
        data = json.loads(record.read_text()) if record.is_file() else {"job": job, "files": {}}
        data["files"][name] = reason
        write_json(record, data)
        os.rename(self.queue / job / name, folder / name)
        _fsync_dir(folder)

    def sweep(self, keep_s: float, now: float | None = None) -> list[str]:
        """Remove finished and quarantined jobs (originals, record, derived
        series) older than ``keep_s`` seconds, and partial transfers; return the jobs' ids."""
        now = time.time() if now is None else now
        for partial in self.tmp.iterdir():  # a transfer aborted mid-instance leaves its file behind
            try:
                if now - partial.stat().st_mtime > STALE_TMP_S:
                    partial.unlink()
            except FileNotFoundError:  # admitted and moved meanwhile
                pass
        gone = []
        for where in (self.received, self.quarantine):
            for folder in where.iterdir():
                try:
                    age = now - (folder / RECORD).stat().st_mtime
                except FileNotFoundError:  # a record not yet written: the folder's own time
                    age = now - folder.stat().st_mtime
                if age < keep_s:
                    continue
                if where is self.received or not (self.queue / folder.name).is_dir():
                    shutil.rmtree(self.derived / folder.name, ignore_errors=True)
                shutil.rmtree(folder, ignore_errors=True)
                gone.append(folder.name)
        return gone

    # ----------------------------------------------------------------- status
    def status(self) -> dict:
        """The queue as plain data (for ``serve --status`` and the logs)."""
        receiving = []
        for series in sorted(p.name for p in self.incoming.iterdir() if p.is_dir()):
            try:
                files = list((self.incoming / series).glob("*.dcm"))
                last = max((f.stat().st_mtime for f in files), default=time.time())
            except FileNotFoundError:  # the node closed this series while we looked: it is in the queue now
                continue
            receiving.append({"series": series, "instances": len(files), "idle_s": round(time.time() - last, 1)})
        queued = []
        for job in self.jobs():
            st = self.state(job)
            queued.append({"job": job, "series": self.series_of(job), "instances": len(self.sources(job)),
                           "stage": st.stage, "attempts": st.attempts, "last_error": st.last_error,
                           "failures": st.failures,
                           "next_try_in_s": round(max(0.0, st.next_try - time.time()), 1)})
        quarantined = []
        for folder in sorted(self.quarantine.iterdir()):
            try:
                files = json.loads((folder / RECORD).read_text()).get("files", {})
            except (OSError, ValueError):
                files = {}
            quarantined.append({"job": folder.name, "series": self.series_of(folder.name), "files": files})
        finished = [p for p in self.received.iterdir() if p.is_dir()]
        return {"receiving": receiving, "queue": queued, "quarantined": quarantined, "finished_jobs": len(finished),
                "derived_series": len([p for p in self.derived.iterdir() if p.is_dir()])}
