"""Log lines written by a thread of their own, so the event loop only queues them.

:func:`install` sends the server's log records to stderr through a
:class:`LogWriter`: a record is appended to a list, and the writer's thread
formats and writes what gathered every :attr:`LogWriter.interval` seconds (at
once for a warning or worse). :func:`log_event` goes further for the lines
every job logs as it starts and ends: the event loop queues only the message
and its arguments, and the writer's thread makes the record and hands it to
the logger's handlers (so other handlers still see every line).
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from typing import Any

#: The writer :func:`install` set up, if any.
_installed: LogWriter | None = None


class LogWriter(logging.Handler):
    """Writes log lines to a stream from a thread of its own, a batch at a time.

    Written one by one on the server's event loop, with a system call each,
    the job lines took a tenth of its time.
    """

    interval = 0.05

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self.stream = stream
        # Log records, and (logger, time, message, args) of events to make records of.
        self._records: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dask-compute-log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)
        if record.levelno >= logging.WARNING:
            self._wake.set()

    def defer(self, logger: logging.Logger, message: str, args: tuple[Any, ...]) -> None:
        """Have this thread log ``message % args`` at INFO through ``logger``, as of now."""
        self._records.append((logger, time.time(), message, args))

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._write()
        self._write()

    def _write(self) -> None:
        lines = []
        while self._records:
            record = self._records.popleft()
            try:
                if isinstance(record, tuple):
                    self._handle_event(*record)  # its record comes back through emit
                    continue
                lines.append(self.format(record))
            except Exception:
                if isinstance(record, logging.LogRecord):
                    self.handleError(record)
        if lines:
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # the stream is gone
                pass

    @staticmethod
    def _handle_event(logger: logging.Logger, created: float, message: str, args: Any) -> None:
        record = logger.makeRecord(
            logger.name, logging.INFO, "(unknown file)", 0, message, args, None
        )
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        logger.handle(record)

    def close(self) -> None:
        """Write what is queued and stop the thread."""
        global _installed
        if _installed is self:
            _installed = None
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)
        super().close()


def install(level: str) -> LogWriter:
    """Send log lines to stderr from a thread of their own; returns its handler.

    Records skip what the format does not show (the caller's frame, thread
    and process), as the logging HOWTO's "Optimization" section suggests.
    """
    global _installed
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    writer = LogWriter(sys.stderr)
    writer.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(writer)
    _installed = writer
    return writer


def log_event(logger: logging.Logger, message: str, *args: Any) -> None:
    """``logger.info(message, *args)``, its record made off the caller's thread
    when a :class:`LogWriter` is installed (the same line, as of this call)."""
    writer = _installed
    if writer is None:
        logger.info(message, *args)
    elif logger.isEnabledFor(logging.INFO):
        writer.defer(logger, message, args)
