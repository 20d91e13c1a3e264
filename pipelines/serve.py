"""Job: a DICOM node (``ct-denoise serve``). It receives CT over the network,
denoises each series once it is complete, and forwards the derived series.

* Receiving: :mod:`denoise.node.scp` (pynetdicom Storage SCP + Verification);
  an instance is acknowledged only once it is admitted
  (:mod:`denoise.node.admit`: a decodable CT image within the limits, with
  valid UIDs) and durably in the spool.
* Processing (the main thread): a series is complete when nothing has arrived
  for ``series_timeout_s``; it is denoised by :func:`denoise.batch.run_batch`
  with the same transform as ``ct-denoise denoise``. A derived copy that
  cannot be written (a full disk) keeps the job in the denoise stage, retried
  with backoff; an instance the node died on ``MAX_STARTS`` times is moved to
  ``quarantine/`` and the rest of its series goes on.
* Forwarding (its own thread, so a slow destination never holds up
  receiving or denoising): :mod:`denoise.node.forward`, retried with
  backoff; a job stays queued until every destination has acknowledged every
  derived instance.
* Crash safety: :mod:`denoise.node.spool` keeps all state in files; a restart
  after SIGKILL finishes every acknowledged series.
* At rest: files readable by the node's user only; finished jobs removed
  after ``keep_days``.
* SIGTERM/SIGINT drain: no new associations, running ones get ``drain_s`` to
  finish, the file being denoised is finished and the rest stays queued.

Exit codes: 0 after a drain, 2 for a usage error (bad option, port in use,
folder in use by another node, model that does not load).
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Strict, ValidationError, model_validator

from denoise.batch import FileJob, FileOutcome, UsageError, run_batch
from denoise.conditioning import DEFAULT_STRENGTH
from denoise.config import options_error
from denoise.denoising import DenoiseJob, Prebuilt, build_checked
from denoise.inference import DEFAULT_ENSEMBLE
from denoise.logs import OneLineFormatter
from denoise.node.admit import DEFAULT_MAX_PIXELS, Limits
from denoise.node.forward import Destination, ForwardError, backoff, check_ae_title, send
from denoise.node.inbox import Inbox
from denoise.node.scp import StorageHandlers, build_ae
from denoise.node.spool import JobState, Spool
from denoise.text import one_line

log = logging.getLogger("ct_denoise.serve")
MAX_STARTS = 3  # the node died this many times on one instance: it goes to quarantine
SWEEP_EVERY_S = 60.0


def _check(test, message: str) -> AfterValidator:
    """A validator that refuses, with ``message`` (``{v}``: the value), what ``test`` rejects."""
    def check(value):
        if not test(value):
            raise ValueError(message.format(v=value))
        return value

    return AfterValidator(check)


def _ae_title(option: str) -> AfterValidator:
    return AfterValidator(lambda title: check_ae_title(title, option))


def _destination(value):
    return Destination.parse(value) if isinstance(value, str) else value


def _none_is_empty(value):
    return () if value is None else value


def _path_text(value):
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _seconds(option: str) -> AfterValidator:
    return _check(lambda v: 0 < v < math.inf, f"{option} must be > 0 seconds, got {{v}}")


Number = Annotated[float, Strict()]  # ints too, never booleans
Count = Annotated[int, Strict()]


class ServeOptions(BaseModel):
    """The node's settings, validated when made: a bad value is a
    :class:`UsageError` of one line naming the option (``--series-timeout
    must be > 0 seconds, got 0.0``); unknown fields are refused. ``forward``
    takes destinations or their ``AET@HOST:PORT`` text; ``forward`` and
    ``allow`` take None for none, ``model_path`` a path."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, validate_default=True)

    out: Path
    aet: Annotated[str, Strict(), _ae_title("--aet")] = "CTDENOISE"
    port: Annotated[Count, _check(lambda v: 0 <= v <= 65535, "--port must be 0..65535, got {v}")] = 11112
    bind: Annotated[str, Strict()] = "127.0.0.1"
    forward: Annotated[tuple[Annotated[Destination, BeforeValidator(_destination)], ...],
                       BeforeValidator(_none_is_empty)] = ()
    allow: Annotated[tuple[Annotated[str, Strict(), _ae_title("--allow")], ...], BeforeValidator(_none_is_empty)] = ()
    series_timeout_s: Annotated[Number, _check(lambda v: v > 0, "--series-timeout must be > 0 seconds, got {v}")] \
        = 10.0
    model_path: Annotated[str | None, BeforeValidator(_path_text)] = None
    strength: str | float = DEFAULT_STRENGTH
    ensemble: Count = DEFAULT_ENSEMBLE
    noise_sd_hu: Number | None = None
    poll_s: Annotated[Number, _seconds("poll_s")] = 0.2
    drain_s: Annotated[Number, _seconds("--drain")] = 30.0
    max_pixels: Annotated[Count, _check(lambda v: v >= 1, "--max-pixels must be >= 1, got {v}")] = DEFAULT_MAX_PIXELS
    keep_days: Annotated[Number, _check(lambda v: v >= 0, "--keep-days must be >= 0 (inf: keep forever), got {v}")] \
        = 7.0  # NaN is refused; inf keeps everything
    connect_timeout_s: Annotated[Number, _seconds("--connect-timeout")] = 10.0
    max_associations: Count = 16
    max_per_peer: Count = 4
    idle_timeout_s: Annotated[Number, _seconds("--idle-timeout")] = 30.0
    pdu_timeout_s: Annotated[Number, _seconds("--pdu-timeout")] = 60.0
    max_pdu: Annotated[Count, _check(lambda v: 1024 <= v <= 2 ** 31,
                                     "--max-pdu must be 1024..2147483648 bytes, got {v}")] = 16382

    def __init__(self, **values):
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise UsageError(options_error(exc, _option)) from None

    @model_validator(mode="before")
    @classmethod
    def _needs_out(cls, values):
        if isinstance(values, dict) and values.get("out") is None:
            raise ValueError("serve needs --out DIR (or --status DIR to show a node's queue)")
        return values

    @model_validator(mode="after")
    def _connections(self):
        if self.max_associations < 1 or self.max_per_peer < 1:
            raise ValueError(f"--max-associations and --max-per-peer must be >= 1, got {self.max_associations} "
                             f"and {self.max_per_peer}")
        return self


def _option(field: str) -> str:
    """The command-line option of a ServeOptions field (``series_timeout_s`` -> ``--series-timeout``)."""
    return "--model" if field == "model_path" else "--" + field.removesuffix("_s").removesuffix("_hu").replace("_", "-")


class Drained(Exception):
    """Raised between files when a drain was asked for: the job stays queued."""


@dataclass
class Node:
    options: ServeOptions
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.spool = Spool(self.options.out)
        job = DenoiseJob(self.options.model_path, ensemble=self.options.ensemble, strength=self.options.strength,
                         noise_sd_hu=self.options.noise_sd_hu)
        self.transform = build_checked(job)  # a bad --model is a usage error before anything listens
        self._next_sweep = 0.0

    # ------------------------------------------------------------ lifecycle
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or :attr:`stopping` is set); returns the exit code."""
        o = self.options
        umask = os.umask(0o077)  # patient data: readable by the node's user only
        try:
            o.out.mkdir(parents=True, exist_ok=True)
            o.out.chmod(0o700)  # also covers files an older node left readable
            lock = _lock_folder(o.out)
        except BaseException:
            os.umask(umask)
            raise
        file_log = logging.FileHandler(o.out / "node.log")
        file_log.setFormatter(OneLineFormatter())
        log.addHandler(file_log)
        inbox = Inbox(self.spool.tmp)
        try:
            self.spool.open()
            inbox.install()
            ae = build_ae(o.aet, o.allow, max_associations=o.max_associations, max_per_peer=o.max_per_peer,
                          idle_timeout_s=o.idle_timeout_s, pdu_timeout_s=o.pdu_timeout_s, max_pdu=o.max_pdu)
            handlers = StorageHandlers(self.spool, Limits(max_pixels=o.max_pixels), inbox)
            try:
                server = ae.start_server((o.bind, o.port), block=False, evt_handlers=handlers.handlers())
            except OSError as exc:
                raise UsageError(f"cannot listen on {o.bind}:{o.port}: {one_line(exc)}") from exc
            self._install_signals()
            port = server.server_address[1]
            log.info("node %s listening on %s:%s; out %s; forward to %s; series timeout %g s", o.aet, o.bind,
                     port, o.out, ", ".join(map(str, o.forward)) or "nowhere", o.series_timeout_s)
            (o.out / "node.port").write_text(f"{port}\n")
            forwarder = threading.Thread(target=self._forward_loop, name="ct-denoise-forward", daemon=True)
            forwarder.start()
            try:
                while not self.stopping.is_set():
                    if not self.step():
                        self.stopping.wait(o.poll_s)
            except Drained:
                pass
            self.stopping.set()
            server.shutdown()
            busy = [a for a in ae.active_associations if a.is_established]
            log.info("draining: no new associations; %d open ones get %g s to finish", len(busy), o.drain_s)
            deadline = time.monotonic() + o.drain_s
            while any(a.is_established for a in ae.active_associations) and time.monotonic() < deadline:
                time.sleep(0.1)
            ae.shutdown()
            forwarder.join(max(0.0, deadline - time.monotonic()) + 1.0)
            status = self.spool.status()
            log.info("stopped: %d series receiving, %d jobs queued", len(status["receiving"]), len(status["queue"]))
            return 0
        finally:
            inbox.remove()
            log.removeHandler(file_log)
            file_log.close()
            lock.close()
            os.umask(umask)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # in-process use (tests): stop with self.stopping.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())

    # ----------------------------------------------------------- processing
    def close_idle(self) -> None:
        for job in self.spool.close_idle(self.options.series_timeout_s):
            log.debug("series %s complete: %d instances queued as job %s", self.spool.series_of(job),
                      len(self.spool.sources(job)), job)

    def sweep(self) -> None:
        """Remove finished jobs past the retention period (once a minute)."""
        now = time.time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY_S
        for job in self.spool.sweep(self.options.keep_days * 86400.0, now):
            log.info("job %s removed: finished more than %g days ago (--keep-days)", job, self.options.keep_days)

    def due(self, stage: str) -> list[str]:
        now = time.time()
        return [job for job in self.spool.jobs()
                if (st := self.spool.state(job)).stage == stage and st.next_try <= now]

    def step(self) -> bool:
        """Close idle series, sweep old jobs and denoise one due job; False when idle."""
        self.close_idle()
        self.sweep()
        for job in self.due("denoise"):
            try:
                self.denoise(job)
            except Drained:
                raise
            except Exception as exc:  # noqa: BLE001 - the node goes on; the job is retried later
                self._retry_later(job, self.spool.state(job), "denoise", f"denoise failed: {one_line(exc)}")
                log.debug("job %s: traceback", job, exc_info=True)
            return True
        return False

    def _retry_later(self, job: str, state: JobState, key: str, error: str, level: int = logging.ERROR) -> None:
        """One more failed attempt at ``key`` (the denoise stage, or a destination): back off and say why."""
        state.attempts[key] = state.attempts.get(key, 0) + 1
        wait = backoff(state.attempts[key])
        state.next_try = time.time() + wait
        state.last_error = error
        self.spool.save_state(job, state)
        log.log(level, "series %s: %s (attempt %d); retry in %g s", self.spool.series_of(job), error,
                state.attempts[key], wait)

    def _count_crash(self, job: str, state: JobState) -> None:
        """``state.current`` is set: the node died while denoising it. Count
        that, and set the file aside once it has happened ``MAX_STARTS`` times."""
        name, series = state.current, self.spool.series_of(job)
        crashes = state.crashes[name] = state.crashes.get(name, 0) + 1
        state.current = ""
        if crashes >= MAX_STARTS and (self.spool.queue / job / name).is_file():
            reason = (f"the node stopped {crashes} times while denoising it (killed, out of memory?); "
                      "quarantined so that the rest of the queue goes on")
            self.spool.quarantine_file(job, name, reason)
            state.quarantined.append(f"{name}: {reason}")
            log.error("series %s: %s quarantined: %s", series, name, reason)
        else:
            log.warning("series %s: the node stopped while denoising %s (%d of %d times before it is quarantined)",
                        series, name, crashes, MAX_STARTS)
        self.spool.save_state(job, state)

    def denoise(self, job: str) -> None:
        state = self.spool.state(job)
        series = self.spool.series_of(job)
        if state.current:
            self._count_crash(job, state)
        t0 = time.perf_counter()

        def begin(file_job: FileJob) -> None:
            state.current = str(file_job.source.relpath)
            self.spool.save_state(job, state)

        def between_files(outcome: FileOutcome) -> None:
            state.current = ""
            self.spool.save_state(job, state)
            self.close_idle()  # other series complete while this one is denoised
            if self.stopping.is_set():
                raise Drained

        report = run_batch(self.spool.queue / job, self.spool.derived_dir(job), Prebuilt(self.transform),
                           on_outcome=between_files, on_begin=begin)
        for o in report.outcomes:  # those the scan set aside and those the batch could not denoise
            if o.status in ("failed", "ignored"):
                log.warning("series %s: %s not denoised: %s", series, o.relpath, o.reason)
        state.denoise_s += time.perf_counter() - t0
        retry = [o for o in report.outcomes if o.retry]
        if retry:  # a full disk: keep the job here, and try again once there may be room
            self._retry_later(job, state, "denoise", f"{len(retry)} of {len(report.outcomes)} derived copies "
                                                     f"not written ({retry[0].reason})")
            return
        counts = {s: report.count(s) for s in ("written", "exists", "failed", "ignored")}
        state.outcome = counts
        state.failures = [f"{o.relpath}: {o.reason}" for o in report.outcomes if o.status in ("failed", "ignored")]
        state.failures += state.quarantined
        state.attempts.pop("denoise", None)
        state.stage, state.next_try, state.last_error = "forward", 0.0, ""
        self.spool.save_state(job, state)
        log.debug("series %s: %d instances, %d denoised, %d already done, %d failed, %d ignored in %.1f s",
                  series, len(report.outcomes), counts["written"], counts["exists"], counts["failed"],
                  counts["ignored"], state.denoise_s)

    # ----------------------------------------------------------- forwarding
    def _forward_loop(self) -> None:
        """The forwarding thread: one due job at a time, until the node stops."""
        while not self.stopping.is_set():
            try:
                jobs = self.due("forward")
                for job in jobs[:1]:
                    self.forward(job)
            except Exception:  # noqa: BLE001 - never let the thread die: log it and go on
                log.exception("forwarding: internal error")
                jobs = []
            if not jobs:
                self.stopping.wait(self.options.poll_s)

    def derived_files(self, job: str) -> list[Path]:
        out = self.spool.derived_dir(job)
        return [out / p.name for p in self.spool.sources(job) if (out / p.name).is_file()]

    def forward(self, job: str) -> None:
        state = self.spool.state(job)
        series = self.spool.series_of(job)
        files = self.derived_files(job)
        pending = False
        for dest in self.options.forward:
            key = str(dest)
            already = self.spool.sent_uids(job, key)
            try:
                n = send(files, dest, self.options.aet, already, lambda uid, k=key: self.spool.record_sent(job, k, uid),
                         connect_timeout_s=self.options.connect_timeout_s, stop=self.stopping.is_set)
            except (ForwardError, OSError, ValueError) as exc:
                if self.stopping.is_set():
                    return  # a drain: the job stays queued as it is
                pending = True
                self._retry_later(job, state, key, f"forward to {key} failed: {one_line(exc)}", logging.WARNING)
                continue
            state.sent[key] = n + len(already)
            log.debug("series %s: forwarded %d derived instances to %s (%d sent before)", series, n, key,
                      len(already))
        if pending:
            return
        received = len(self.spool.sources(job))
        self.spool.finish(job, state)
        c = state.outcome
        where = ", ".join(f"{k} ({v} instances)" for k, v in state.sent.items()) or "nowhere (no --forward)"
        log.info("series %s finished: %d instances received, %d denoised (%d already done, %d failed, %d ignored) "
                 "in %.1f s; forwarded to %s; job %s", series, received,
                 c.get("written", 0), c.get("exists", 0), c.get("failed", 0), c.get("ignored", 0), state.denoise_s,
                 where, job)


def _lock_folder(out: Path):
    """One node per folder: an exclusive lock on ``node.lock`` holding the PID."""
    fh = open(out / "node.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        raise UsageError(f"{out}: in use by another ct-denoise serve (PID {pid})") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh  # closing it releases the lock


def node_running(out: Path) -> int | None:
    """The PID of the node serving ``out``, or None."""
    path = Path(out) / "node.lock"
    if not path.is_file():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            text = fh.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def status(out: Path) -> dict:
    """The queue of the node folder ``out`` as plain data."""
    out = Path(out)
    if not (out / "spool").is_dir():
        raise UsageError(f"{out}: not a ct-denoise serve folder (no spool/)")
    data = Spool(out).status()
    return {"pid": node_running(out), **data}


def run(options: ServeOptions) -> int:
    """Build the node (usage errors before anything listens) and serve."""
    return Node(options).run()
