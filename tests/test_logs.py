"""Worker logging: given these log calls, these lines."""

import io
import logging
import re

import orjson
import pytest

from detector.logs import JsonFormatter, configure_logging

RFC3339_MS_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def root_logger():
    """The root logger's handlers and level, put back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_a_log_call_becomes_one_json_line_with_its_extra_fields(root_logger):
    out = io.StringIO()
    configure_logging(stream=out)
    logging.getLogger("detector.worker").info(
        "committed %d offsets", 3, extra={"topic": "mail", "partition": 7, "offsets": [10, 11]})
    [line] = json_lines(out)
    assert RFC3339_MS_UTC.fullmatch(line.pop("ts"))
    assert line == {"level": "INFO", "logger": "detector.worker", "msg": "committed 3 offsets",
                    "topic": "mail", "partition": 7, "offsets": [10, 11]}


def test_an_exception_is_logged_with_its_traceback(root_logger):
    out = io.StringIO()
    configure_logging(stream=out)
    try:
        {}["outcome"]
    except KeyError:
        logging.getLogger("detector.worker").exception("batch failed", extra={"offset": 42})
    [line] = json_lines(out)
    assert (line["level"], line["msg"], line["offset"]) == ("ERROR", "batch failed", 42)
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert line["exc"].endswith("KeyError: 'outcome'")


def test_odd_values_never_cost_the_line(root_logger):
    class Resolver:
        def __str__(self):
            return "res-a"

    out = io.StringIO()
    handler = configure_logging(stream=out)
    log = logging.getLogger("detector.worker")
    log.warning("odd", extra={"resolver": Resolver(), "ts": "not the timestamp"})
    log.warning("huge", extra={"offset": 2**70})
    # A surrogate-escaped file name, through the same handler but not up to pytest's own log
    # capture, which cannot ship a lone surrogate between test processes (pytest-xdist).
    quiet = logging.getLogger("detector.test-surrogate")
    quiet.propagate = False
    quiet.addHandler(handler)
    try:
        quiet.warning("path %s", "/var/log/mail-\udcff.jsonl")
    finally:
        quiet.removeHandler(handler)
    odd, huge, path = json_lines(out)
    assert odd["resolver"] == "res-a"
    assert odd["extra_ts"] == "not the timestamp" and RFC3339_MS_UTC.fullmatch(odd["ts"])
    assert huge["offset"] == 2**70
    assert path["msg"] == "path /var/log/mail-\\udcff.jsonl"


def test_the_level_filters_and_text_format_is_readable(root_logger):
    out = io.StringIO()
    configure_logging(level="warning", fmt="text", stream=out)
    log = logging.getLogger("detector.worker")
    log.info("not shown")
    log.warning("rebalance", extra={"partition": 7})
    [line] = out.getvalue().splitlines()
    stamp, rest = line.split(" ", 1)
    assert RFC3339_MS_UTC.fullmatch(stamp)
    assert rest == "WARNING detector.worker: rebalance partition=7"


def test_configuring_twice_replaces_the_handler_and_keeps_foreign_ones(root_logger):
    foreign = logging.NullHandler()
    root_logger.addHandler(foreign)
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    logging.getLogger("detector.worker").warning("once")
    assert first.getvalue() == ""
    assert [line["msg"] for line in json_lines(second)] == ["once"]
    assert foreign in root_logger.handlers
    assert sum(isinstance(h.formatter, JsonFormatter) for h in root_logger.handlers) == 1


@pytest.mark.parametrize("settings, reason", [
    ({"fmt": "xml"}, "not one of json, text"),
    ({"level": "LOUD"}, "log level 'LOUD' is not one of"),
])
def test_unknown_settings_are_refused(root_logger, settings, reason):
    with pytest.raises(ValueError, match=reason):
        configure_logging(**settings)
