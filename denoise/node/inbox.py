"""Where pynetdicom writes each incoming data set: a file in the spool's
``tmp/`` folder, written as the P-DATA fragments arrive (memory does not
grow with the instance's size).

pynetdicom opens that file itself (``NamedTemporaryFile`` in
``pynetdicom.dimse_messages``, with ``STORE_RECV_CHUNKED_DATASET``) and an
error writing it, a full disk, would abort the association. :class:`Inbox`
puts its own file object there for as long as the node runs: it remembers a
failed write instead of raising, and the C-STORE handler answers that
instance with 0xA700 (out of resources), which a sender retries later.

A data set whose association ends before it is complete (the sender killed
mid-instance) is never handed to the handler, and pynetdicom leaves its file;
:meth:`Inbox.discard_partial` removes it when the connection closes. The
files are written by the association's reader thread (pynetdicom's DUL),
which is how they are matched to their connection.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from pynetdicom import _config, dimse_messages


class _InboxFile:
    """The file object pynetdicom writes one data set into (``write``,
    ``file.flush``, ``close``, ``name``: what it uses)."""

    def __init__(self, inbox: Inbox):
        fd, self.name = tempfile.mkstemp(suffix=".dcm", dir=inbox.folder)
        self._fh = os.fdopen(fd, "wb")
        self._inbox = inbox
        self.writer = threading.current_thread()
        with inbox.lock:
            inbox.open[self.name] = self

    @property
    def file(self) -> _InboxFile:
        return self

    def _guard(self, op, *args) -> None:
        if self.name in self._inbox.failed:
            return
        try:
            op(*args)
        except OSError as exc:
            self._inbox.failed[self.name] = exc

    def write(self, data) -> int:
        self._guard(self._fh.write, data)
        return len(data)

    def flush(self) -> None:
        self._guard(self._fh.flush)

    def close(self) -> None:
        with self._inbox.lock:
            self._inbox.open.pop(self.name, None)
        self._guard(self._fh.close)
        if not self._fh.closed:  # close() failed flushing: close without the buffered data
            try:
                self._fh.close()
            except OSError:
                pass


class Inbox:
    """Receive data sets into files in ``folder`` while installed (:meth:`install`, :meth:`remove`)."""

    _installed: Inbox | None = None
    _lock = threading.Lock()

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.failed: dict[str, OSError] = {}
        self.open: dict[str, _InboxFile] = {}  # files pynetdicom has not closed yet
        self.lock = threading.Lock()
        self._saved = None

    def open_file(self, *args, **kwargs) -> _InboxFile:  # in NamedTemporaryFile's place
        return _InboxFile(self)

    def write_error(self, path: str | os.PathLike) -> OSError | None:
        """The error that kept the data set at ``path`` from being written whole, if any (forgotten once asked)."""
        return self.failed.pop(str(path), None)

    def discard_partial(self, writer: threading.Thread) -> int:
        """Remove the files ``writer`` (an association's reader thread) left
        unfinished: its connection has closed. Returns how many."""
        with self.lock:
            mine = [f for f in self.open.values() if f.writer is writer]
        for partial in mine:
            partial.close()
            self.failed.pop(partial.name, None)
            Path(partial.name).unlink(missing_ok=True)
        return len(mine)

    def install(self) -> None:
        with Inbox._lock:
            if Inbox._installed is not None:
                raise RuntimeError("another node's inbox is installed in this process")
            self._saved = (dimse_messages.NamedTemporaryFile, _config.STORE_RECV_CHUNKED_DATASET)
            dimse_messages.NamedTemporaryFile = self.open_file
            _config.STORE_RECV_CHUNKED_DATASET = True
            Inbox._installed = self

    def remove(self) -> None:
        with Inbox._lock:
            if Inbox._installed is self:
                dimse_messages.NamedTemporaryFile, _config.STORE_RECV_CHUNKED_DATASET = self._saved
                Inbox._installed = None
