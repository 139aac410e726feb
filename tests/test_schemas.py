"""The contract as JSON Schema: the schemas are well-formed draft 2020-12, and they accept and reject
exactly what tests/fixtures/record_examples.json says, for the reason the table gives.

The example table is shared with the parser's tests, so it is checked here for shape as well as
content: a mistake in it would otherwise show up as a parser bug.
"""
import calendar
import copy
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
EXAMPLES = json.loads((ROOT / "tests" / "fixtures" / "record_examples.json").read_text())
SCHEMA_FILES = {
    "mail": "mail-flow-record.schema.json",
    "dns": "dns-resolver-record.schema.json",
    "event": "anomaly-event.schema.json",
    "truth": "truth.schema.json",
}
REASON = re.compile(r"^(not_json|not_object|bad_ts|(missing_field|wrong_type|bad_value):[a-z_]+)$")
JSON_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")


def load_schema(kind):
    return json.loads((SCHEMAS / SCHEMA_FILES[kind]).read_text())


def validator(kind):
    return Draft202012Validator(load_schema(kind))


def example_params(stream):
    return [pytest.param(row, id=row["name"]) for row in EXAMPLES[stream]]


# --- the schemas themselves -------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(SCHEMA_FILES))
def test_schema_declares_draft_2020_12_and_passes_the_metaschema(kind):
    schema = load_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_input_timestamp_pattern_is_the_same_in_every_input_schema():
    mail, dns, truth = load_schema("mail"), load_schema("dns"), load_schema("truth")
    assert mail["$defs"]["ts"] == dns["$defs"]["ts"]
    ts_string = mail["$defs"]["ts"]["anyOf"][0]["pattern"]
    incident = truth["properties"]["incidents"]["items"]["properties"]
    decoy = truth["properties"]["decoys"]["items"]["properties"]
    for times in (incident, decoy):
        assert times["start"]["pattern"] == times["end"]["pattern"] == ts_string


def input_ts_pattern():
    return re.compile(load_schema("mail")["$defs"]["ts"]["anyOf"][0]["pattern"])


def event_ts_pattern():
    return re.compile(load_schema("event")["properties"]["detected_at"]["pattern"])


@pytest.mark.parametrize("year", [1900, 1970, 2000, 2024, 2026, 2100, 2400])
def test_timestamp_patterns_accept_exactly_the_calendar_dates_python_accepts(year):
    input_ts, event_ts = input_ts_pattern(), event_ts_pattern()
    for month in range(0, 14):
        for day in range(0, 33):
            real = 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]
            stamp = f"{year:04d}-{month:02d}-{day:02d}T10:15:02Z"
            assert bool(input_ts.search(stamp)) is real, stamp
            assert bool(event_ts.search(stamp)) is real, stamp


def test_timestamp_patterns_accept_exactly_the_valid_times_of_day():
    input_ts, event_ts = input_ts_pattern(), event_ts_pattern()
    for hour in range(0, 25):
        for minute in range(0, 61):
            for second in (0, 59, 60, 61):
                stamp = f"2026-11-27T{hour:02d}:{minute:02d}:{second:02d}Z"
                clock_ok = hour <= 23 and minute <= 59
                # Inputs may carry a leap second; the detector never writes one.
                assert bool(input_ts.search(stamp)) is (clock_ok and second <= 60), stamp
                assert bool(event_ts.search(stamp)) is (clock_ok and second <= 59), stamp


def test_event_timestamps_must_be_utc_with_upper_case_t_and_z():
    event_ts = event_ts_pattern()
    assert event_ts.search("2026-11-27T10:15:02Z")
    assert event_ts.search("2026-11-27T10:15:02.123456Z")
    for stamp in ("2026-11-27T10:15:02", "2026-11-27T10:15:02+00:00", "2026-11-27t10:15:02z",
                  "2026-11-27T10:15:02Z\n", "2026-11-27 10:15:02Z"):
        assert not event_ts.search(stamp), stamp


def case_variants(word):
    return {word.lower(), word.upper(), word.title(), word.swapcase(), word[:1].upper() + word[1:].lower()}


ENUMS = [
    ("mail", ("properties", "status", "pattern"),
     ["delivered", "failed", "deferred", "quarantined", "filtered", "dropped",
      "pending", "expanded", "getting_status"]),
    ("mail", ("properties", "direction", "anyOf", 1, "pattern"), ["inbound", "outbound"]),
    ("mail", ("properties", "dns_outcome", "anyOf", 1, "pattern"),
     ["NOERROR", "NODATA", "NXDOMAIN", "SERVFAIL", "REFUSED", "TIMEOUT", "FORMERR", "NOTIMP",
      "OTHER", "UNMATCHED", "NO_LOOKUP"]),
    ("truth", ("$defs", "outcome", "pattern"),
     ["NOERROR", "NODATA", "NXDOMAIN", "SERVFAIL", "REFUSED", "TIMEOUT", "FORMERR", "NOTIMP",
      "OTHER", "UNMATCHED", "NO_LOOKUP", "ALL"]),
]


@pytest.mark.parametrize("kind,path,words", ENUMS, ids=["mail_status", "mail_direction", "mail_dns_outcome", "truth_outcome"])
def test_case_insensitive_enum_patterns_accept_every_casing_and_nothing_else(kind, path, words):
    node = load_schema(kind)
    for step in path:
        node = node[step]
    pattern = re.compile(node)
    for word in words:
        for variant in case_variants(word):
            assert pattern.search(variant), variant
        for near_miss in (word + "x", "x" + word, " " + word, word + " ", word + "\n", word[:-1]):
            assert not pattern.search(near_miss), repr(near_miss)
    assert not pattern.search("")


def test_event_key_outcomes_are_upper_case_outcomes_and_all():
    outcome = load_schema("event")["properties"]["key"]["properties"]["outcome"]
    assert outcome["enum"] == ["NOERROR", "NODATA", "NXDOMAIN", "SERVFAIL", "REFUSED", "TIMEOUT",
                               "FORMERR", "NOTIMP", "OTHER", "UNMATCHED", "NO_LOOKUP", "ALL"]


# --- the example table ------------------------------------------------------------------------

def test_example_table_has_the_shape_the_parser_tests_rely_on():
    assert set(EXAMPLES) == {"mail", "dns"}
    assert len(EXAMPLES["mail"]) >= 25 and len(EXAMPLES["dns"]) >= 15
    for stream, rows in EXAMPLES.items():
        names = [row["name"] for row in rows]
        assert len(names) == len(set(names)), f"duplicate example names in {stream}"
        for row in rows:
            assert set(row) == {"name", "record", "valid", "reason"}, row
            assert isinstance(row["name"], str) and row["name"]
            assert isinstance(row["valid"], bool)
            if row["valid"]:
                assert row["reason"] is None, row["name"]
            else:
                assert REASON.match(row["reason"]), row["name"]


@pytest.mark.parametrize("row", example_params("mail"))
def test_mail_flow_example_is_accepted_or_rejected_as_the_table_says(row):
    errors = list(validator("mail").iter_errors(row["record"]))
    assert (not errors) is row["valid"], [e.message for e in errors]


@pytest.mark.parametrize("row", example_params("dns"))
def test_dns_resolver_example_is_accepted_or_rejected_as_the_table_says(row):
    errors = list(validator("dns").iter_errors(row["record"]))
    assert (not errors) is row["valid"], [e.message for e in errors]


def declared_types(schema, node):
    """The JSON types a (sub)schema admits, following local $refs and anyOf branches."""
    if "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/")
        node = {**schema["$defs"][ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
    types = set()
    if "type" in node:
        types |= {node["type"]} if isinstance(node["type"], str) else set(node["type"])
    for branch in node.get("anyOf", ()):
        types |= declared_types(schema, branch)
    return types


def json_type(check, value):
    # The narrowest JSON type: an integral number is an "integer", which a "number" also admits.
    return next(t for t in JSON_TYPES if check.is_type(value, t))


@pytest.mark.parametrize("stream,row", [
    pytest.param(stream, row, id=f"{stream}-{row['name']}")
    for stream in ("mail", "dns") for row in EXAMPLES[stream] if not row["valid"]
])
def test_rejection_reason_in_the_table_follows_from_the_schema(stream, row):
    """The reason column is derived, not invented: the schema's errors concern the named field, and
    the field's JSON type is (bad_value, bad_ts) or is not (wrong_type) one the schema declares.
    A null required field counts as missing, as null means absent everywhere in the inputs."""
    schema = load_schema(stream)
    check = Draft202012Validator(schema)
    record, reason = row["record"], row["reason"]
    errors = list(check.iter_errors(record))
    assert errors
    if reason == "not_object":
        assert not isinstance(record, dict)
        assert any(e.validator == "type" and not e.absolute_path for e in errors)
        return
    assert isinstance(record, dict)
    kind, _, field = reason.partition(":") if reason != "bad_ts" else ("bad_ts", "", "ts")
    if kind == "missing_field":
        assert field in schema["required"]
        assert record.get(field) is None
        assert any(
            (e.validator == "required" and f"'{field}'" in e.message)
            or (list(e.absolute_path) == [field] and e.instance is None)
            for e in errors
        )
        return
    assert all(list(e.absolute_path)[:1] == [field] for e in errors), [e.message for e in errors]
    allowed = declared_types(schema, schema["properties"][field]) - {"null"}
    actual = json_type(check.TYPE_CHECKER, record[field])
    admitted = actual in allowed or (actual == "integer" and "number" in allowed)
    if kind == "wrong_type":
        assert not admitted, f"{field}={record[field]!r} has a declared type: reason should be bad_value"
    else:
        assert kind in ("bad_value", "bad_ts")
        assert admitted, f"{field}={record[field]!r} has an undeclared type: reason should be wrong_type"


# --- anomaly events -------------------------------------------------------------------------

OPEN_EVENT = {
    "id": "servfail-1a2b3c4d5e6f7a8b",
    "state": "open",
    "key": {"outcome": "SERVFAIL"},
    "detected_at": "2026-11-27T10:20:00Z",
    "since": "2026-11-27T10:15:00Z",
    "window": {"start": "2026-11-27T10:15:00Z", "end": "2026-11-27T10:20:00Z"},
    "observed": {"attempts": 412, "failures": 97, "failure_rate": 0.2354},
    "expected": {"attempts": 398.5, "failures": 2.1, "failure_rate": 0.0053},
    "score": 14.2,
    "severity": "critical",
    "rule": "short",
    "reason": "97 of 412 OTP deliveries failed with SERVFAIL in 5 minutes, against about 2 expected.",
    "evidence": {
        "sender_domains": [{"value": "bank.example", "count": 81}, {"value": "shop.example", "count": 16}],
        "resolvers": [{"value": "10.0.0.53", "count": 97}],
        "tenants": [{"value": "corp.example", "count": 60}],
        "status_codes": [{"value": "4.4.3", "count": 97}],
        "sample_message_ids": ["<otp-1@mx.bank.example>", "<otp-2@mx.bank.example>"],
    },
}

RESOLVED_DRILL_DOWN_EVENT = {
    **copy.deepcopy(OPEN_EVENT),
    "id": "all-00ff00ff00ff00ff",
    "state": "resolved",
    "key": {"outcome": "ALL", "resolver": "10.0.0.53", "tenant": "corp.example", "sender_domain": "bank.example"},
    "detected_at": "2026-11-27T11:05:00.250Z",
    "window": {"start": "2026-11-27T10:15:00Z", "end": "2026-11-27T11:05:00.250Z"},
    "observed": {"attempts": 0, "failures": 0, "failure_rate": 0},
    "expected": {"attempts": 0, "failures": 0, "failure_rate": 0},
    "score": 0,
    "severity": "warning",
    "rule": "long",
    "evidence": {"sender_domains": [], "resolvers": [], "tenants": [], "status_codes": [],
                 "sample_message_ids": []},
}


@pytest.mark.parametrize("event", [
    pytest.param(OPEN_EVENT, id="open_servfail"),
    pytest.param(RESOLVED_DRILL_DOWN_EVENT, id="resolved_all_outcomes_drill_down_empty_evidence"),
    pytest.param({**OPEN_EVENT, "id": "no_lookup-0123456789abcdef", "key": {"outcome": "NO_LOOKUP"},
                  "state": "update"}, id="update_no_lookup"),
])
def test_well_formed_anomaly_event_is_valid(event):
    Draft202012Validator(load_schema("event")).validate(event)


def mutated(path, value):
    """OPEN_EVENT with the field at `path` replaced, or deleted when value is DELETE."""
    event = copy.deepcopy(OPEN_EVENT)
    node = event
    for step in path[:-1]:
        node = node[step]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return event


DELETE = object()

BAD_EVENTS = [
    ("unknown_top_level_field", ("tenant",), "corp.example"),
    ("id_upper_case_prefix", ("id",), "SERVFAIL-1a2b3c4d5e6f7a8b"),
    ("id_short_hash", ("id",), "servfail-1a2b3c"),
    ("id_upper_case_hash", ("id",), "servfail-1A2B3C4D5E6F7A8B"),
    ("state_unknown", ("state",), "closed"),
    ("key_outcome_lower_case", ("key", "outcome"), "servfail"),
    ("key_outcome_unknown", ("key", "outcome"), "BOUNCED"),
    ("key_without_outcome", ("key", "outcome"), DELETE),
    ("key_unknown_drill_down", ("key", "server"), "mx-out-03"),
    ("key_drill_down_null", ("key", "tenant"), None),
    ("detected_at_with_offset", ("detected_at",), "2026-11-27T12:20:00+02:00"),
    ("detected_at_without_offset", ("detected_at",), "2026-11-27T10:20:00"),
    ("detected_at_epoch_number", ("detected_at",), 1795774800),
    ("since_unparseable", ("since",), "yesterday"),
    ("window_without_end", ("window", "end"), DELETE),
    ("window_extra_field", ("window", "buckets"), 5),
    ("observed_attempts_fractional", ("observed", "attempts"), 1.5),
    ("observed_failures_negative", ("observed", "failures"), -1),
    ("observed_failure_rate_above_one", ("observed", "failure_rate"), 1.5),
    ("expected_failure_rate_negative", ("expected", "failure_rate"), -0.1),
    ("expected_attempts_negative", ("expected", "attempts"), -3.0),
    ("expected_extra_field", ("expected", "stddev"), 1.2),
    ("score_negative", ("score",), -0.5),
    ("score_string", ("score",), "high"),
    ("severity_unknown", ("severity",), "info"),
    ("rule_unknown", ("rule",), "medium"),
    ("reason_empty", ("reason",), ""),
    ("evidence_count_zero", ("evidence", "resolvers"), [{"value": "10.0.0.53", "count": 0}]),
    ("evidence_count_string", ("evidence", "resolvers"), [{"value": "10.0.0.53", "count": "97"}]),
    ("evidence_entry_without_value", ("evidence", "tenants"), [{"count": 3}]),
    ("evidence_entry_extra_field", ("evidence", "tenants"), [{"value": "corp.example", "count": 3, "share": 0.5}]),
    ("evidence_missing_status_codes", ("evidence", "status_codes"), DELETE),
    ("evidence_eleven_sample_ids", ("evidence", "sample_message_ids"), [f"<m{i}@x>" for i in range(11)]),
    ("evidence_duplicate_sample_ids", ("evidence", "sample_message_ids"), ["<m1@x>", "<m1@x>"]),
]


@pytest.mark.parametrize("path,value", [pytest.param(p, v, id=name) for name, p, v in BAD_EVENTS])
def test_malformed_anomaly_event_is_invalid(path, value):
    assert not Draft202012Validator(load_schema("event")).is_valid(mutated(path, value))


@pytest.mark.parametrize("field", sorted(OPEN_EVENT))
def test_anomaly_event_without_a_required_field_is_invalid(field):
    assert not Draft202012Validator(load_schema("event")).is_valid(mutated((field,), DELETE))


# --- truth.json -----------------------------------------------------------------------------

GOOD_TRUTH = {
    "scenario": "servfail_storm",
    "seed": 7,
    "start": "2026-11-27T00:00:00Z",
    "end": "2026-11-28T00:00:00Z",
    "incidents": [
        {"outcome": "SERVFAIL", "start": "2026-11-27T10:15:00Z", "end": "2026-11-27T10:45:00Z",
         "desc": "resolver 10.0.0.53 returns SERVFAIL for bank.example"},
        {"outcome": "nxdomain", "start": "2026-11-27T14:00:00+01:00", "end": "2026-11-27T14:20:00+01:00",
         "desc": "shop.example delegation lapsed", "resolver": "10.0.0.54"},
    ],
    "decoys": [
        {"start": "2026-11-27T18:00:00Z", "end": "2026-11-27T18:30:00Z", "desc": "evening OTP volume peak"},
        {"outcome": "NODATA", "start": "2026-11-27T20:00:00Z", "end": "2026-11-27T20:05:00Z",
         "desc": "NODATA on AAAA for a sender that never has one"},
    ],
}


@pytest.mark.parametrize("truth", [
    pytest.param(GOOD_TRUTH, id="incidents_decoys_and_extra_fields"),
    pytest.param({"incidents": [], "decoys": []}, id="nothing_happened"),
    pytest.param({"incidents": GOOD_TRUTH["incidents"]}, id="decoys_absent_means_none"),
])
def test_well_formed_truth_is_valid(truth):
    Draft202012Validator(load_schema("truth")).validate(truth)


def truth_with(**changes):
    truth = copy.deepcopy(GOOD_TRUTH)
    truth.update(changes)
    return truth


def first_incident_with(**changes):
    incident = {**GOOD_TRUTH["incidents"][0], **changes}
    return truth_with(incidents=[{k: v for k, v in incident.items() if v is not DELETE}])


@pytest.mark.parametrize("truth", [
    pytest.param({"decoys": []}, id="missing_incidents"),
    pytest.param(truth_with(incidents={"outcome": "SERVFAIL"}), id="incidents_not_a_list"),
    pytest.param(first_incident_with(outcome=DELETE), id="incident_without_outcome"),
    pytest.param(first_incident_with(desc=DELETE), id="incident_without_desc"),
    pytest.param(first_incident_with(end=DELETE), id="incident_without_end"),
    pytest.param(first_incident_with(outcome="BOUNCED"), id="incident_unknown_outcome"),
    pytest.param(first_incident_with(start="yesterday"), id="incident_start_unparseable"),
    pytest.param(first_incident_with(start=1795774500), id="incident_start_epoch_number"),
    pytest.param(first_incident_with(end="2026-11-27T25:00:00Z"), id="incident_end_hour_25"),
    pytest.param(truth_with(decoys=[{"start": "2026-11-27T18:00:00Z", "desc": "peak"}]), id="decoy_without_end"),
    pytest.param(truth_with(decoys=[{"outcome": 2, "start": "2026-11-27T18:00:00Z",
                                     "end": "2026-11-27T18:30:00Z", "desc": "peak"}]), id="decoy_outcome_number"),
    pytest.param([GOOD_TRUTH], id="not_an_object"),
])
def test_malformed_truth_is_invalid(truth):
    assert not Draft202012Validator(load_schema("truth")).is_valid(truth)

