"""Logging for the worker: one JSON object per line for log shippers, or plain text for a terminal.

A JSON line carries ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger`` and ``msg``, then
every field the call passed in ``extra={...}``, then ``exc`` with the formatted traceback when there
is one. Fields go through orjson with ``default=str``; the few values orjson refuses even so (an
integer beyond 64 bits, a lone surrogate from a file name) go through the standard library
encoder, so an odd value never costs the line. ``configure_logging`` replaces its own handler on
the root logger, so calling it twice (tests, a reloaded configuration) never doubles each line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import TextIO

import orjson

FORMATS = ("json", "text")

_SURROGATE = re.compile("[\ud800-\udfff]")

# Every attribute a LogRecord has without ``extra``: what is left on a record is the caller's.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def timestamp(record: logging.LogRecord) -> str:
    """The record's creation time as RFC 3339 in UTC with milliseconds: ``2024-05-01T12:00:00.250Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def extra_fields(record: logging.LogRecord) -> dict[str, object]:
    """The fields the log call passed in ``extra={...}``."""
    return {key: value for key, value in vars(record).items()
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line.

    >>> record = logging.makeLogRecord({"name": "detector.worker", "levelname": "INFO",
    ...     "msg": "committed %d offsets", "args": (3,), "created": 0.25, "msecs": 250.0,
    ...     "partition": 7})
    >>> JsonFormatter().format(record)
    '{"ts":"1970-01-01T00:00:00.250Z","level":"INFO","logger":"detector.worker","msg":"committed 3 offsets","partition":7}'
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            # An extra named like a base field must not overwrite it, nor be lost.
            entry[f"extra_{key}" if key in entry else key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        try:
            return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:
            text = json.dumps(entry, default=str, ensure_ascii=False, skipkeys=True)
            # A lone surrogate has no UTF-8 form, and strict JSON readers reject "\udcff" too:
            # write it as the visible text \udcff instead.
            return _SURROGATE.sub(lambda found: f"\\\\u{ord(found.group()):04x}", text)


class TextFormatter(logging.Formatter):
    """A readable line: time, level, logger, message, then the extra fields as ``key=value``.

    >>> record = logging.makeLogRecord({"name": "detector.worker", "levelname": "WARNING",
    ...     "msg": "rebalance", "created": 0.0, "msecs": 0.0, "partition": 7})
    >>> TextFormatter().format(record)
    '1970-01-01T00:00:00.000Z WARNING detector.worker: rebalance partition=7'
    """

    def format(self, record: logging.LogRecord) -> str:
        line = f"{timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        extras = extra_fields(record)
        if extras:
            line += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class _DetectorHandler(logging.StreamHandler):
    """The handler configure_logging installs; its class marks it for replacement."""


def configure_logging(level: str | int = "INFO", fmt: str = "json",
                      stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records at ``level`` and above to ``stream`` in ``fmt``.

    ``stream`` defaults to ``sys.stderr`` as it is at the call. A handler installed by an earlier
    call is replaced; handlers installed by anyone else are left alone.
    """
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    if isinstance(level, str):
        levels = logging.getLevelNamesMapping()
        if level.upper() not in levels:
            raise ValueError(f"log level {level!r} is not one of "
                             f"{', '.join(sorted(levels, key=levels.__getitem__))}")
        level = levels[level.upper()]
    handler = _DetectorHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _DetectorHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
