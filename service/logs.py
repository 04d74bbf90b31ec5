"""Logging setup: one line per event worth knowing, as text or JSON (`JOBHOOK_LOG_FORMAT`).

Lines are written by a thread of their own (a QueueHandler in front of the stream): the event loop
never waits on stderr, whether it is a pipe whose reader is slow or a file on a disk busy with fsyncs.
"""

from __future__ import annotations

import atexit
import copy
import logging
import logging.handlers
import queue
import sys

import orjson


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry).decode()


class _Handoff(logging.handlers.QueueHandler):
    """Hands records to the writing thread with their message and traceback already made (the
    arguments may change after the call), leaving the formatting to the stream's own formatter."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        ready = copy.copy(record)
        ready.msg, ready.args = record.getMessage(), None
        if record.exc_info:
            ready.exc_text = logging.Formatter().formatException(record.exc_info)
        ready.exc_info = None
        return ready


_listener: logging.handlers.QueueListener | None = None


def setup(log_format: str, level: int = logging.INFO) -> None:
    global _listener
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    if _listener is not None:
        _listener.stop()
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = logging.handlers.QueueListener(lines, handler)
    _listener.start()
    root = logging.getLogger("jobhook")
    root.handlers[:] = [_Handoff(lines)]
    root.setLevel(level)
    root.propagate = False
    # httpx logs every request URL at INFO: a Slack webhook URL is a credential, as are callback tokens.
    logging.getLogger("httpx").setLevel(logging.WARNING)


@atexit.register
def _flush() -> None:
    """Write what is queued before the process ends (not after SIGKILL: logs are not the record)."""
    if _listener is not None:
        _listener.stop()
