"""The synthetic logs: what the contract and the scenarios promise, read back from the files.

Each single-event scenario is generated once, started at midnight (low night volume keeps this fast)
and cut a few minutes after its event; one scenario also runs at its default length. The checks
read the gzip files as a consumer would: lines in arrival order, three timestamp forms, duplicates
and malformed lines included.
"""

import gzip
import json
import re
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from detector.synth import SCENARIOS, generate, world
from detector.synth.scenarios import DELETED_DOMAIN, OVERLOADED_RESOLVER, REJECTING_TENANTS, SEED_DOMAIN

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
MIDNIGHT = datetime(2026, 11, 27, tzinfo=timezone.utc)
SINGLE = [name for name in SCENARIOS if name != "mixed"]
#: Incidents of a provider's traffic (a big sender's zone, a resolver at night, tenants) ...
INCIDENTS = [name for name in SINGLE if SCENARIOS[name].events[0].outcome
             and not SCENARIOS[name].events[0].where and not SCENARIOS[name].ambiguous_lookups]
#: ... and of one slice: a small sender, a resolver's creeping ramp.
LOCAL_INCIDENTS = [name for name in SINGLE if SCENARIOS[name].events[0].where]
DECOYS = [name for name in SINGLE if not SCENARIOS[name].events[0].outcome]
MAIL_STATUSES = {"delivered", "failed", "deferred", "quarantined", "filtered", "dropped",
                 "pending", "expanded", "getting_status"}
FAILURES = {"failed", "deferred", "quarantined", "filtered", "dropped"}
OTP_WORDS = re.compile(r"code|passcode|otp|2fa|mfa|verif", re.IGNORECASE)


def ts_of(value):
    """Epoch seconds of a contract timestamp, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value / 1000 if value > 1e11 else float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
    return None


def valid(obj, required):
    return (isinstance(obj, dict) and ts_of(obj.get("ts")) is not None
            and all(isinstance(obj.get(name), str) and obj[name] for name in required[1:]))


def name_of(qname):
    return qname.lower().rstrip(".")


def is_otp(mail):
    category = mail.get("category")
    return category == "otp" if category is not None else bool(OTP_WORDS.search(mail.get("subject", "")))


class Run:
    """A generated scenario read back: valid records in file order, and what was wrong with the rest."""

    def __init__(self, summary):
        self.summary = summary
        self.truth = json.loads(summary.truth_path.read_text())
        self.mail, self.mail_bad, self.mail_lines, self.mail_repeats = self._read(
            summary.mail_path, ("ts", "message_id", "status"))
        self.dns, self.dns_bad, self.dns_lines, _ = self._read(summary.dns_path, ("ts", "qname", "rcode"))
        for record in self.mail + self.dns:
            record["_t"] = ts_of(record["ts"])

    @staticmethod
    def _read(path, required):
        records, bad, seen, repeats = [], 0, set(), 0
        lines = gzip.decompress(path.read_bytes()).splitlines()
        for line in lines:
            try:
                obj = orjson.loads(line)
            except ValueError:
                obj = None
            if not valid(obj, required) or (required[2] == "status" and obj["status"] not in MAIL_STATUSES):
                bad += 1
            elif line in seen:
                repeats += 1
            else:
                seen.add(line)
                records.append(obj)
        return records, bad, len(lines), repeats

    def window(self, event=0):
        entry = (self.truth["incidents"] + self.truth["decoys"])[event]
        return ts_of(entry["start"]), ts_of(entry["end"])

    def otp_final(self, start, end, **match):
        return [m for m in self.mail if start <= m["_t"] < end and m["status"] not in ("pending", "expanded")
                and is_otp(m) and all(m.get(k) == v for k, v in match.items())]


def failure_rate(mails):
    return sum(m["status"] in FAILURES for m in mails) / max(1, len(mails))


@pytest.fixture(scope="module")
def run(request, tmp_path_factory):
    """The scenario started at midnight, cut 6 minutes after its event ends."""
    event = SCENARIOS[request.param].events[0]
    hours = (event.offset + event.duration).total_seconds() / 3600 + 0.1
    outdir = tmp_path_factory.mktemp(request.param)
    return Run(generate(request.param, outdir, seed=3, hours=hours, start=MIDNIGHT))


# --- the API and the scenario table ------------------------------------------------------------

def test_unknown_scenario_raises_and_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown scenario 'nope'.*seed-incident.*mixed"):
        generate("nope", tmp_path)
    with pytest.raises(ValueError, match="hours"):
        generate("mixed", tmp_path, hours=0)


def test_scenarios_place_their_events_after_warm_up_inside_their_default_length():
    for name, scenario in SCENARIOS.items():
        assert scenario.desc and scenario.events, name
        for event in scenario.events:
            assert event.offset >= timedelta(hours=2), name
            assert event.offset + event.duration <= timedelta(hours=scenario.hours), name
            assert event.outcome in (None, "SERVFAIL", "TIMEOUT", "NXDOMAIN", "NOERROR")
    night = [SCENARIOS[name].start + SCENARIOS[name].events[0].offset
             for name in ("resolver-timeout", "decoy-tiny-tenant")]
    assert all(1 <= moment.hour <= 4 for moment in night)
    mixed = sorted(SCENARIOS["mixed"].events, key=lambda event: event.offset)
    assert len(mixed) == 8 and len({event.kind for event in mixed}) == 8
    for before, after in zip(mixed, mixed[1:]):
        assert after.offset - (before.offset + before.duration) >= timedelta(hours=3)


def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(tmp_path):
    paths = []
    for directory, seed in (("a", 5), ("b", 5), ("c", 6)):
        summary = generate("resolver-timeout", tmp_path / directory, seed=seed, hours=0.25)
        paths.append((summary.mail_path, summary.dns_path, summary.truth_path))
    for first, again, other in zip(*paths):
        assert first.read_bytes() == again.read_bytes()
        if first.suffix == ".gz":
            assert first.read_bytes() != other.read_bytes()


def test_default_length_run_has_its_event_and_counts_its_lines(tmp_path):
    result = Run(generate("decoy-tiny-tenant", tmp_path))
    truth, summary = result.truth, result.summary
    assert (truth["start"], truth["end"]) == ("2026-11-27T00:30:00Z", "2026-11-27T06:30:00Z")
    assert truth["incidents"] == [] and len(truth["decoys"]) == 1
    assert result.mail_lines == summary.mail_records + summary.duplicates + summary.malformed_mail
    assert result.dns_lines == summary.dns_records + summary.malformed_dns
    start, end = result.window()
    burst = [m for m in result.otp_final(start, end, tenant=world.TINY_TENANT.name) if m["status"] == "failed"]
    assert len(burst) >= 4 and max(m["_t"] for m in burst) - min(m["_t"] for m in burst) <= 120
    tiny = result.otp_final(ts_of(truth["start"]), ts_of(truth["end"]), tenant=world.TINY_TENANT.name)
    assert 4 <= len(tiny) - len(burst) <= 25            # ~2 an hour ...
    assert 0.2 <= failure_rate([m for m in tiny if m not in burst]) <= 0.8   # ... half bouncing


def test_mixed_truth_is_well_formed(tmp_path):
    summary = generate("mixed", tmp_path, hours=0.2)
    truth = json.loads(summary.truth_path.read_text())
    Draft202012Validator(json.loads((SCHEMAS / "truth.schema.json").read_text())).validate(truth)
    assert truth["scenario"] == "mixed" and truth["start"] == "2026-11-27T00:00:00Z"
    assert truth["incidents"] == truth["decoys"] == []      # 12 minutes hold no event


# --- every single-event scenario, read back ----------------------------------------------------

@pytest.mark.parametrize("run", SINGLE, indirect=True)
def test_truth_and_records_follow_the_contract(run):
    truth, summary = run.truth, run.summary
    Draft202012Validator(json.loads((SCHEMAS / "truth.schema.json").read_text())).validate(truth)
    events = truth["incidents"] + truth["decoys"]
    assert len(events) == 1 and ts_of(truth["start"]) < ts_of(events[0]["start"]) < ts_of(events[0]["end"])
    assert (summary.incidents, summary.decoys) == (len(truth["incidents"]), len(truth["decoys"]))
    assert run.mail_bad == summary.malformed_mail and run.dns_bad == summary.malformed_dns
    assert run.mail_repeats == summary.duplicates
    assert len(run.mail) == summary.mail_records and len(run.dns) == summary.dns_records
    for kind, records in (("mail-flow-record", run.mail), ("dns-resolver-record", run.dns)):
        schema = Draft202012Validator(json.loads((SCHEMAS / f"{kind}.schema.json").read_text()))
        for record in records[:300]:
            schema.validate({k: v for k, v in record.items() if k != "_t"})
    forms = Counter(type(m["ts"]).__name__ for m in run.mail)
    assert 0.07 < forms["int"] / len(run.mail) < 0.13 and 0.01 < forms["float"] / len(run.mail) < 0.03
    domains = [name_of(m["sender"].partition("@")[2]) for m in run.mail] + [name_of(d["qname"]) for d in run.dns]
    assert all(re.search(r"(\.example|example\.(com|net|org)|\.test|\.10\.in-addr\.arpa)$", d) for d in domains)


@pytest.mark.parametrize("run", SINGLE, indirect=True)
def test_arrival_disorder_is_bounded_apart_from_rare_late_records(run):
    for records in (run.mail, run.dns):
        newest, late = float("-inf"), 0
        for record in records:
            if record["_t"] < newest - 11:         # shipping delay < 6 s, retried duplicates < 10 s
                late += 1
            newest = max(newest, record["_t"])
        assert late <= 3 + len(records) / 5_000


@pytest.mark.parametrize("run", SINGLE, indirect=True)
def test_otp_and_other_mail_are_marked_as_the_rules_expect(run):
    otp = [m for m in run.mail if is_otp(m)]
    other = [m for m in run.mail if not is_otp(m)]
    assert 0.5 < sum(m.get("category") == "otp" for m in otp) / len(otp) < 0.7
    assert all(m.get("category") in (None, "marketing", "notification", "transactional") for m in other)
    assert all(not OTP_WORDS.search(m["subject"]) for m in other)
    assert 0.2 < len(other) / len(run.mail) < 0.6


@pytest.mark.parametrize("run", SINGLE, indirect=True)
def test_each_delivery_finds_its_lookups_and_its_status_follows_them(run):
    checks = {t.name: t.checks_dns for t in world.TENANTS + (world.TINY_TENANT,)}
    times = defaultdict(list)
    for record in run.dns:
        times[(name_of(record["qname"]), record.get("client"))].append(record)
    for found in times.values():
        found.sort(key=lambda record: record["_t"])
    stamps = {key: [record["_t"] for record in found] for key, found in times.items()}
    consistent = deliveries = 0
    for mail in run.mail:
        if mail["status"] in ("pending", "expanded"):
            continue
        if not checks[mail["tenant"]]:
            assert mail["dns_lookups"] == []
            continue
        wanted = [name_of(lookup["qname"]) for lookup in mail.get("dns_lookups") or []] \
            or [mail["sender"].partition("@")[2]]
        answers = []
        for qname in wanted:
            key = (qname, mail["server"])
            low, high = bisect_left(stamps.get(key, []), mail["_t"] - 30), bisect_right(stamps.get(key, []), mail["_t"])
            assert high > low, f"no lookup of {qname} by {mail['server']} before {mail['ts']}"
            answers.append(times[key][high - 1])
            assert answers[-1]["resolver"] == world.RESOLVER_OF_SERVER[mail["server"]]
        rcodes = {a["rcode"] for a in answers}
        deliveries += 1
        code = mail.get("status_code")
        if rcodes & {"TIMEOUT", "SERVFAIL", "REFUSED"}:
            consistent += mail["status"] == "deferred" and code in ("4.4.3", "4.7.24")
        elif rcodes & {"NXDOMAIN", "NODATA"}:
            consistent += code in ("5.7.27", "5.7.23", "4.1.8")
        else:
            consistent += code not in ("4.4.3", "4.7.24", "5.7.27", "5.7.23", "4.1.8")
    # The nearest lookup before a delivery may be another delivery's lookup of the same name.
    assert consistent / deliveries > 0.97


# --- incidents and decoys show in the logs ----------------------------------------------------

@pytest.mark.parametrize("run", INCIDENTS, indirect=True)
def test_incident_window_shows_its_rcode_and_elevated_otp_failures(run):
    start, end = run.window()
    outcome = run.truth["incidents"][0]["outcome"]
    before, during = run.otp_final(start - 7200, start), run.otp_final(start, end)
    assert failure_rate(before) < 0.02
    assert failure_rate(during) > 3 * failure_rate(before) + 0.02
    if outcome == "NOERROR":
        rejected = [m for m in during if m.get("status_code") == "5.7.1"]
        assert {m["tenant"] for m in rejected} == set(REJECTING_TENANTS)
        assert failure_rate([m for m in during if m not in rejected]) < 0.02
        affected = lambda d: False                                      # noqa: E731
    elif outcome == "TIMEOUT":
        affected = lambda d: d["resolver"] == OVERLOADED_RESOLVER       # noqa: E731
    else:
        zone = SEED_DOMAIN if outcome == "SERVFAIL" else DELETED_DOMAIN
        affected = lambda d: name_of(d["qname"]).endswith(zone)         # noqa: E731
    hit = [d for d in run.dns if affected(d) and start <= d["_t"] < end]
    healthy = [d for d in run.dns if affected(d) and d["_t"] < start]
    share = {"SERVFAIL": 0.9, "TIMEOUT": 0.6, "NXDOMAIN": 0.99, "NOERROR": 0}[outcome]
    assert sum(d["rcode"] == outcome for d in hit) >= share * len(hit)
    assert sum(d["rcode"] == outcome for d in healthy) <= 0.01 * len(healthy)
    failing_per_minute = sum(m["status"] in FAILURES for m in during) / ((end - start) / 60)
    assert failing_per_minute >= 2.5
    if outcome == "TIMEOUT":        # the night-time outage must still be visible per minute
        assert failing_per_minute >= 8
        assert sum(d["rcode"] == "TIMEOUT" for d in hit) < 0.8 * len(hit)
        assert all(d["latency_ms"] >= 5000 for d in hit if d["rcode"] == "TIMEOUT")


@pytest.mark.parametrize("run", LOCAL_INCIDENTS, indirect=True)
def test_a_local_incident_shows_in_its_slice_and_hardly_provider_wide(run):
    start, end = run.window()
    (incident,) = run.truth["incidents"]
    outcome, (dimension, value) = incident["outcome"], SCENARIOS[run.summary.scenario].events[0].where
    if dimension == "sender_domain":
        in_slice = lambda m: m.get("sender", "").endswith("@" + value)               # noqa: E731
        answered = lambda d: name_of(d["qname"]).endswith(value)                      # noqa: E731
    else:
        in_slice = lambda m: world.RESOLVER_OF_SERVER.get(m.get("server")) == value  # noqa: E731
        answered = lambda d: d["resolver"] == value                                  # noqa: E731
    before = [m for m in run.otp_final(start - 7200, start) if in_slice(m)]
    during = [m for m in run.otp_final(start, end) if in_slice(m)]
    assert before and during
    assert failure_rate(before) < 0.02
    assert failure_rate(during) > failure_rate(before) + 0.1
    # Provider-wide, the same incident moves the OTP failure rate by little.
    assert failure_rate(run.otp_final(start, end)) < 0.1
    hit = [d for d in run.dns if answered(d) and start <= d["_t"] < end]
    assert sum(d["rcode"] == outcome for d in hit) >= 0.1 * len(hit)
    assert len(incident["first_failures"]) >= 4


@pytest.mark.parametrize("run", DECOYS, indirect=True)
def test_decoy_changes_traffic_but_not_the_otp_failure_rate(run):
    start, end = run.window()
    before, during = run.otp_final(start - 1800, start), run.otp_final(start, end)
    kind = SCENARIOS[run.summary.scenario].events[0].kind
    if kind == "otp_surge":
        assert len(during) > 3.5 * len(before)
    elif kind == "dns_storm":
        storm = [d for d in run.dns if d["qname"].endswith(world.STORM_ZONE)]
        assert len(storm) > 2000 * (end - start) / 60
        assert all(start <= d["_t"] < end + 10 for d in storm)
        assert all(d["rcode"] in ("SERVFAIL", "NXDOMAIN") for d in storm)
    elif kind == "bounce_wave":
        def bulk_failures(low, high):
            return sum(1 for m in run.mail if low <= m["_t"] < high and not is_otp(m) and m["status"] in FAILURES)
        assert bulk_failures(start, end) > 10 * bulk_failures(start - 1800, start)
    if kind != "tiny_burst":
        assert failure_rate(during) < 0.03


def test_duplicates_and_malformed_lines_come_at_their_rates(tmp_path):
    # Two day-time hours (~80,000 lines) show rates of 1 in 500 and, roughly, 1 in 20,000.
    result = Run(generate("seed-incident", tmp_path, hours=2.0))
    assert 0.001 < result.summary.duplicates / len(result.mail) < 0.0035
    expected_malformed = (result.mail_lines + result.dns_lines) / 20_000
    assert 0.25 < (result.mail_bad + result.dns_bad) / expected_malformed < 2.5
