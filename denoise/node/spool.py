"""The node's persistent spool and queue: everything is a file under one folder,
and every change of state is one atomic rename or one atomic write, so a
SIGKILL at any moment leaves a state a restart can finish.

Layout under ``root`` (``<S>`` is a short hash of the Series Instance UID, so
no path carries a patient identifier; ``<J>`` is ``<S>-<arrival stamp>``)::

    spool/tmp/                 instances being written (removed at start)
    spool/incoming/<S>/        instances acknowledged, series still open
    queue/<J>/                 a closed series waiting to be denoised and forwarded
    state/<J>.json             its stage, batch outcome and forwarding attempts
    sent/<J>/<destination>.txt SOP Instance UIDs each destination acknowledged
    derived/<S>/               the derived series (one per source series)
    received/<J>/              originals of finished jobs

An instance is written to ``spool/tmp`` and fsync'd, then renamed into
``spool/incoming/<S>``; only then does the sender get its success status. A
series closes (``incoming/<S>`` is renamed to ``queue/<J>``) when nothing has
arrived for the series timeout. A job is finished when ``queue/<J>`` is renamed
to ``received/<J>``; until then a restart redoes whatever its stage needs,
which is safe because denoising skips outputs that are already complete and
forwarding is idempotent by SOP Instance UID.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from denoise.atomic import write_json

STAGES = ("denoise", "forward")
_TEMP = re.compile(r"\..+\.\d+\.tmp")  # denoise.atomic's temporary names


def short_hash(text: str, n: int = 12) -> str:
    """A short stable name for a UID (folders and logs never show the UID itself)."""
    return hashlib.sha256(text.encode()).hexdigest()[:n]


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
    failures: list = field(default_factory=list)  # "name: reason" of files the batch could not denoise
    attempts: dict = field(default_factory=dict)  # destination -> failed forwarding attempts
    next_try: float = 0.0  # epoch seconds before which forwarding is not retried
    last_error: str = ""
    denoise_s: float = 0.0  # wall time of the denoising stage
    sent: dict = field(default_factory=dict)  # destination -> derived instances it holds from this job

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
        self._lock = threading.Lock()
        self._last_arrival: dict[str, float] = {}

    # ------------------------------------------------------------------ start
    def open(self) -> None:
        """Create the folders; drop partial writes a killed node left behind;
        take the open series' last arrival times from their files."""
        for d in (self.tmp, self.incoming, self.queue, self.state_dir, self.sent, self.derived, self.received):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            leftover.unlink()
        for tmp in self.derived.rglob(".*.tmp"):
            if _TEMP.fullmatch(tmp.name):
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

    # ---------------------------------------------------------------- receive
    def store(self, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write one instance durably (temporary file, fsync, rename into its
        open series). Raises OSError (a full disk, say) with nothing left behind."""
        tmp = self.tmp / f"{uuid.uuid4().hex}.dcm"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            series = short_hash(series_uid)
            with self._lock:
                folder = self.incoming / series
                folder.mkdir(exist_ok=True)
                target = folder / f"{short_hash(sop_uid, 24)}.dcm"
                os.replace(tmp, target)
                self._last_arrival[series] = time.time()
            _fsync_dir(folder)
            return target
        finally:
            if tmp.exists():
                tmp.unlink()

    def close_idle(self, timeout_s: float) -> list[str]:
        """Move every series idle for ``timeout_s`` into the queue; return the new job ids."""
        jobs = []
        now = time.time()
        with self._lock:
            for series, last in list(self._last_arrival.items()):
                if now - last < timeout_s:
                    continue
                job = f"{series}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{uuid.uuid4().hex[:6]}"
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

    @staticmethod
    def series_of(job: str) -> str:
        return job.split("-", 1)[0]

    def sources(self, job: str) -> list[Path]:
        return sorted((self.queue / job).glob("*.dcm"))

    def derived_dir(self, job: str) -> Path:
        return self.derived / self.series_of(job)

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

    def finish(self, job: str) -> None:
        """The job is done: its originals move to ``received/``, its bookkeeping goes."""
        os.rename(self.queue / job, self.received / job)
        _fsync_dir(self.received)
        (self.state_dir / f"{job}.json").unlink(missing_ok=True)
        shutil.rmtree(self.sent / job, ignore_errors=True)

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
                           "next_try_in_s": round(max(0.0, st.next_try - time.time()), 1)})
        finished = [p for p in self.received.iterdir() if p.is_dir()]
        return {"receiving": receiving, "queue": queued, "finished_jobs": len(finished),
                "derived_series": len([p for p in self.derived.iterdir() if p.is_dir()])}
