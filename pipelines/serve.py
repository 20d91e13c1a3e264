"""Job: a DICOM node (``ct-denoise serve``). It receives CT over the network,
denoises each series once it is complete, and forwards the derived series.

* Receiving: :mod:`denoise.node.scp` (pynetdicom Storage SCP + Verification);
  every acknowledged instance is already durably in the spool.
* Processing: a series is complete when nothing has arrived for
  ``series_timeout_s``; it is denoised by :func:`denoise.batch.run_batch` with
  the same transform as ``ct-denoise denoise`` (same rules, same derived UIDs).
* Forwarding: :mod:`denoise.node.forward`, retried with backoff; a job stays
  queued until every destination has acknowledged every derived instance.
* Crash safety: :mod:`denoise.node.spool` keeps all state in files; a restart
  after SIGKILL finishes every acknowledged series.
* SIGTERM/SIGINT drain: no new associations, running ones get ``drain_s`` to
  finish, the file being denoised is finished and the rest stays queued.

Exit codes: 0 after a drain, 2 for a usage error (bad option, port in use,
folder in use by another node, model that does not load).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from denoise.batch import FileOutcome, UsageError, run_batch
from denoise.inference import DEFAULT_ENSEMBLE, DEFAULT_STRENGTH
from denoise.node.forward import Destination, ForwardError, backoff, check_ae_title, send
from denoise.node.scp import StorageHandlers, build_ae
from denoise.node.spool import Spool
from denoise.text import one_line
from pipelines.denoise_folder import DenoiseJob, Prebuilt, build_checked

log = logging.getLogger("ct_denoise.serve")
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


@dataclass(frozen=True)
class ServeOptions:
    out: Path
    aet: str = "CTDENOISE"
    port: int = 11112
    bind: str = "127.0.0.1"
    forward: tuple[Destination, ...] = ()
    allow: tuple[str, ...] = ()
    series_timeout_s: float = 10.0
    model_path: str | None = None
    strength: str | float = DEFAULT_STRENGTH
    ensemble: int = DEFAULT_ENSEMBLE
    noise_sd_hu: float | None = None
    poll_s: float = 0.2
    drain_s: float = 30.0

    def checked(self) -> ServeOptions:
        try:
            check_ae_title(self.aet, "--aet")
            for a in self.allow:
                check_ae_title(a, "--allow")
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        if not 0 <= self.port <= 65535:
            raise UsageError(f"--port must be 0..65535, got {self.port}")
        if not self.series_timeout_s > 0:
            raise UsageError(f"--series-timeout must be > 0 seconds, got {self.series_timeout_s}")
        return self


class Drained(Exception):
    """Raised between files when a drain was asked for: the job stays queued."""


@dataclass
class Node:
    options: ServeOptions
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self.options = self.options.checked()
        self.spool = Spool(self.options.out)
        job = DenoiseJob(self.options.model_path, ensemble=self.options.ensemble, strength=self.options.strength,
                         noise_sd_hu=self.options.noise_sd_hu)
        self.transform = build_checked(job)  # a bad --model is a usage error before anything listens

    # ------------------------------------------------------------ lifecycle
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or :attr:`stopping` is set); returns the exit code."""
        o = self.options
        o.out.mkdir(parents=True, exist_ok=True)
        lock = _lock_folder(o.out)
        file_log = logging.FileHandler(o.out / "node.log")
        file_log.setFormatter(logging.Formatter(LOG_FORMAT))
        log.addHandler(file_log)
        try:
            self.spool.open()
            ae = build_ae(o.aet, o.allow)
            handlers = StorageHandlers(self.spool)
            try:
                server = ae.start_server((o.bind, o.port), block=False, evt_handlers=handlers.handlers())
            except OSError as exc:
                raise UsageError(f"cannot listen on {o.bind}:{o.port}: {one_line(exc)}") from exc
            self._install_signals()
            port = server.server_address[1]
            log.info("node %s listening on %s:%s; out %s; forward to %s; series timeout %g s", o.aet, o.bind,
                     port, o.out, ", ".join(map(str, o.forward)) or "nowhere", o.series_timeout_s)
            (o.out / "node.port").write_text(f"{port}\n")
            try:
                while not self.stopping.is_set():
                    if not self.step():
                        self.stopping.wait(o.poll_s)
            except Drained:
                pass
            server.shutdown()
            busy = [a for a in ae.active_associations if a.is_established]
            log.info("draining: no new associations; %d open ones get %g s to finish", len(busy), o.drain_s)
            deadline = time.monotonic() + o.drain_s
            while any(a.is_established for a in ae.active_associations) and time.monotonic() < deadline:
                time.sleep(0.1)
            ae.shutdown()
            status = self.spool.status()
            log.info("stopped: %d series receiving, %d jobs queued", len(status["receiving"]), len(status["queue"]))
            return 0
        finally:
            log.removeHandler(file_log)
            file_log.close()
            lock.close()

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

    def step(self) -> bool:
        """Close idle series and advance one due job by one stage; False when idle."""
        self.close_idle()
        now = time.time()
        for job in self.spool.jobs():
            state = self.spool.state(job)
            if state.stage == "forward" and state.next_try > now:
                continue
            if state.stage == "denoise":
                self.denoise(job)
            else:
                self.forward(job)
            return True
        return False

    def denoise(self, job: str) -> None:
        state = self.spool.state(job)
        series = self.spool.series_of(job)
        t0 = time.perf_counter()

        def between_files(outcome: FileOutcome) -> None:
            if outcome.status == "failed":
                log.warning("series %s: %s not denoised: %s", series, outcome.relpath, outcome.reason)
            self.close_idle()  # other series complete while this one is denoised
            if self.stopping.is_set():
                raise Drained

        report = run_batch(self.spool.queue / job, self.spool.derived_dir(job), Prebuilt(self.transform),
                           on_outcome=between_files)
        counts = {s: report.count(s) for s in ("written", "exists", "failed", "ignored")}
        state.outcome = counts
        state.failures = [f"{o.relpath}: {o.reason}" for o in report.outcomes if o.status in ("failed", "ignored")]
        state.stage = "forward"
        state.denoise_s = time.perf_counter() - t0
        self.spool.save_state(job, state)
        log.debug("series %s: %d instances, %d denoised, %d already done, %d failed, %d ignored in %.1f s",
                  series, len(report.outcomes), counts["written"], counts["exists"], counts["failed"],
                  counts["ignored"], state.denoise_s)

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
                n = send(files, dest, self.options.aet, already, lambda uid, k=key: self.spool.record_sent(job, k, uid))
            except (ForwardError, OSError, ValueError) as exc:
                pending = True
                state.attempts[key] = state.attempts.get(key, 0) + 1
                wait = backoff(state.attempts[key])
                state.next_try = time.time() + wait
                state.last_error = f"{key}: {one_line(exc)}"
                log.warning("series %s: forward to %s failed (attempt %d): %s; retry in %g s", series, key,
                            state.attempts[key], one_line(exc), wait)
                continue
            state.sent[key] = n + len(already)
            log.debug("series %s: forwarded %d derived instances to %s (%d sent before)", series, n, key,
                      len(already))
        if pending:
            self.spool.save_state(job, state)
            return
        received = len(self.spool.sources(job))
        self.spool.finish(job)
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
