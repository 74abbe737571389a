"""How the command line prints: JSON, tables, job records, progress while waiting or watching."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import itertools
import json
import logging
import time
from collections.abc import Sequence
from typing import IO, Any

import click

from client_sdk.types import JobInfo, JobState, JobUpdate

logger = logging.getLogger(__name__)


def plain(value: Any) -> Any:
    """``value`` with dataclasses, enums, tuples and datetimes as JSON types (bytes dropped)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not isinstance(getattr(value, f.name), bytes)
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON; objects with no JSON form print as their repr."""
    click.echo(json.dumps(plain(value), indent=2, default=repr))


def echo_value(value: Any, as_json: bool) -> None:
    """Print a job's value: strings as they are, anything else as JSON (or its repr)."""
    if isinstance(value, str) and not as_json:
        click.echo(value)
    else:
        click.echo(json.dumps(plain(value), default=repr))


def _when(moment: datetime.datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _clip(text: str, width: int = 40) -> str:
    """``text``, cut to ``width`` characters with "..." when longer."""
    return text if len(text) <= width else text[: width - 3] + "..."


def job_table(jobs: Sequence[JobInfo]) -> str:
    """Jobs as a text table, one line each."""
    header = ("JOB ID", "STATE", "SCHEDULER", "KIND", "TARGET", "SUBMITTED", "DURATION", "NAME")
    rows = [
        (
            j.job_id,
            j.state.value,
            j.scheduler,
            j.kind,
            _clip(j.target),
            _when(j.submitted),
            _seconds(j.duration),
            _clip(j.name),
        )
        for j in jobs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def job_details(job: JobInfo) -> str:
    """One job's record, a field a line."""
    lines = [
        f"job:        {job.job_id}",
        f"state:      {job.state.value}",
        f"scheduler:  {job.scheduler}",
        f"kind:       {job.kind}",
        f"target:     {job.target}",
        f"name:       {job.name or '-'}",
        f"submitted:  {_when(job.submitted)}",
        f"started:    {_when(job.started)}",
        f"finished:   {_when(job.finished)}",
        f"duration:   {_seconds(job.duration)}",
        f"result:     {'available' if job.result_available else '-'}",
    ]
    if job.error is not None:
        lines.append(f"error:      {job.error.type}: {job.error.message}")
    if job.cancel_reason:
        lines.append(f"cancelled:  {job.cancel_reason}")
    if job.depends_on:  # the jobs whose results it uses (it waits for them)
        lines.append(f"inputs:     {' '.join(job.depends_on)}")
    return "\n".join(lines)


class Progress:
    """Shows that a wait goes on: a spinner on a terminal, a plain line now and then otherwise.

    Args:
        label: What is being waited for, e.g. "job 1234".
        stream: Where to write (standard error, so standard output stays clean).
        tty: Whether ``stream`` is a terminal; ``None`` asks it.
        quiet_for: Seconds before anything is shown (short waits show nothing).
        every: Seconds between plain lines when not on a terminal.
    """

    #: How often the caller should call :meth:`tick`, in seconds.
    TICK = 0.1

    def __init__(
        self,
        label: str,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        quiet_for: float = 0.5,
        every: float = 5.0,
    ) -> None:
        self.label = label
        # click 8.5 deprecates get_text_stream: its module's __getattr__ gives it, typed object.
        self.stream = stream or click.get_text_stream("stderr")  # type: ignore[operator]
        self.tty = self.stream.isatty() if tty is None else tty
        self.quiet_for = quiet_for
        self.every = every
        self.start = time.monotonic()
        self._frames = itertools.cycle("|/-\\")
        self._next_line = quiet_for
        self._drawn = False

    def tick(self) -> None:
        """Redraw the spinner, or print a line if one is due."""
        elapsed = time.monotonic() - self.start
        if elapsed < self.quiet_for:
            return
        if self.tty:
            self.stream.write(f"\r{next(self._frames)} waiting for {self.label} ({elapsed:.1f}s)")
            self.stream.flush()
            self._drawn = True
        elif elapsed >= self._next_line:
            self.stream.write(f"waiting for {self.label} ({elapsed:.1f}s elapsed)\n")
            self.stream.flush()
            self._next_line = elapsed + self.every

    def finish(self) -> None:
        """Clear the spinner's line."""
        if self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _tasks(update: JobUpdate) -> str:
    done, total = update.progress.tasks_done, update.progress.tasks_total
    return f"{done}/{total} tasks" if total else "tasks not known yet"


class ProgressBar:
    """Draws a watched job's progress: a bar redrawn in place on a terminal, lines otherwise.

    Off a terminal a line is written when the job's state changes, and for
    progress at most every ``every`` seconds, so a log stays readable.

    Args:
        job_id: The job being watched.
        stream: Where to write (standard error, so standard output stays clean).
        tty: Whether ``stream`` is a terminal; ``None`` asks it.
        every: Seconds between progress lines when not on a terminal.
        width: Characters of the bar.
    """

    def __init__(
        self,
        job_id: str,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        every: float = 5.0,
        width: int = 30,
    ) -> None:
        self.job_id = job_id
        self.stream = stream or click.get_text_stream("stderr")  # type: ignore[operator]
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = every
        self.width = width
        self.start = time.monotonic()
        self._state: JobState | None = None
        self._next_line = 0.0
        self._drawn = False

    def bar(self, update: JobUpdate) -> str:
        """The bar for ``update``: ``[#######...........]  7/20 tasks  running  1.2s``."""
        fraction = update.progress.fraction
        filled = 0 if fraction is None else round(fraction * self.width)
        elapsed = time.monotonic() - self.start
        return (
            f"[{'#' * filled}{'.' * (self.width - filled)}]  {_tasks(update)}  "
            f"{update.job.state.value}  {elapsed:.1f}s"
        )

    def update(self, update: JobUpdate) -> None:
        """Show ``update``: redraw the bar, or write a line if one is due."""
        if self.tty:
            self.stream.write(f"\r{self.bar(update)}\033[K")
            self.stream.flush()
            self._drawn = True
            return
        elapsed = time.monotonic() - self.start
        if update.job.state is self._state and elapsed < self._next_line:
            return
        self._state = update.job.state
        self._next_line = elapsed + self.every
        fraction = update.progress.fraction
        percent = "" if fraction is None else f" ({fraction:.0%})"
        self.stream.write(
            f"job {self.job_id} {update.job.state.value}: {_tasks(update)}{percent}, "
            f"{elapsed:.1f}s\n"
        )
        self.stream.flush()

    def finish(self) -> None:
        """End the bar's line, so what follows starts on a line of its own."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def watch_summary(update: JobUpdate) -> str:
    """The line that says how a watched job ended."""
    job = update.job
    took = f" in {job.duration:.3f}s" if job.duration is not None else ""
    line = f"job {job.job_id} {job.state.value}{took} ({_tasks(update)})"
    if job.error is not None:
        line += f": {job.error.type}: {job.error.message}"
    elif job.cancel_reason:
        line += f": {job.cancel_reason}"
    return line
