"""server.logwriter: lines written by a thread of their own; job events made into records there."""

from __future__ import annotations

import io
import logging
import threading
import time

import pytest

from server import logwriter


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def logger():
    log = logging.getLogger(f"test-logwriter-{time.monotonic_ns()}")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    log.handlers.clear()


def test_an_event_is_made_into_a_record_on_the_writer_thread(logger, monkeypatch):
    stream = io.StringIO()
    writer = logwriter.LogWriter(stream)
    writer.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    other = _Collect()
    logger.addHandler(writer)
    logger.addHandler(other)
    monkeypatch.setattr(logwriter, "_installed", writer)
    before = time.time()
    logwriter.log_event(logger, "job=%s event=started owner=%s", "abc", "alice")
    assert not other.records, "the caller only queued it"
    writer.close()  # writes what is queued
    assert stream.getvalue() == f"INFO {logger.name}: job=abc event=started owner=alice\n"
    (record,) = other.records
    assert record.getMessage() == "job=abc event=started owner=alice"
    assert before <= record.created <= time.time(), "dated when it was logged, not written"
    assert record.thread != threading.get_ident(), "made on the writer thread"


def test_without_a_writer_an_event_is_logged_at_once(logger, monkeypatch):
    other = _Collect()
    logger.addHandler(other)
    monkeypatch.setattr(logwriter, "_installed", None)
    logwriter.log_event(logger, "job=%s event=finished", "abc")
    assert [r.getMessage() for r in other.records] == ["job=abc event=finished"]


def test_an_event_below_the_logger_level_is_dropped(logger, monkeypatch):
    stream = io.StringIO()
    writer = logwriter.LogWriter(stream)
    logger.addHandler(writer)
    logger.setLevel(logging.WARNING)
    monkeypatch.setattr(logwriter, "_installed", writer)
    logwriter.log_event(logger, "job=%s event=started", "abc")
    writer.close()
    assert stream.getvalue() == ""
