"""The notifier's pure parts and its configuration: given these anomaly events, these alerts;
given this file, environment and flags, these settings. The receivers' TLS check runs against a
real HTTPS server on loopback with a certificate made here."""

import hashlib
import hmac
import re
import subprocess

import orjson
import pytest

from conftest import DETECTOR
from detector.core.config import ConfigError
from detector.notify.alerts import (ALERTNAME, EventError, OpenAnomalies, alert_labels,
                                    read_event, render)
from detector.notify.receivers import post, signature, tls_context
from detector.notify.settings import NotifySettings, load_notify_settings
from detector.settings import load_settings
from integrations import Recorder, binary

NOW = 1796200000.0          # 2026-12-02T08:26:40Z, after every event below

OPEN = {"id": "servfail-1eac3b0b6b218bb8", "state": "open", "key": {"outcome": "SERVFAIL"},
        "detected_at": "2026-11-27T10:00:25Z", "since": "2026-11-27T09:59:20Z",
        "observed": {"attempts": 192, "failures": 8, "failure_rate": 0.041667},
        "expected": {"attempts": 119.15, "failures": 0.054, "failure_rate": 0.000279},
        "severity": "warning", "reason": "SERVFAIL OTP failures 8/192 (4.2%) vs expected 0.03%",
        "evidence": {"sender_domains": [{"value": "auth.bank1.example", "count": 8}],
                     "resolvers": [{"value": "res-a.dns.example", "count": 5},
                                   {"value": "res-b.dns.example", "count": 2}]}}


def event(**changes) -> dict:
    return {**OPEN, **changes}


def labels_of(key: dict, severity: str = "warning") -> dict:
    return dict(alert_labels(event(key=key, severity=severity)))


def test_every_key_field_becomes_a_label_outcome_first_then_the_slices():
    assert labels_of({"outcome": "SERVFAIL"}) == {
        "alertname": ALERTNAME, "outcome": "SERVFAIL", "severity": "warning"}
    assert labels_of({"outcome": "SERVFAIL", "sender_domain": "auth.bank1.example"}) == {
        "alertname": ALERTNAME, "outcome": "SERVFAIL", "sender_domain": "auth.bank1.example",
        "severity": "warning"}
    assert labels_of({"outcome": "TIMEOUT", "resolver": "res-b"}, "critical") == {
        "alertname": ALERTNAME, "outcome": "TIMEOUT", "resolver": "res-b", "severity": "critical"}
    assert list(labels_of({"outcome": "ALL", "tenant": "t1", "resolver": "r"})) == [
        "alertname", "outcome", "tenant", "resolver", "severity"]


def test_a_key_field_never_overwrites_the_notifiers_own_labels_or_breaks_prometheus_rules():
    labels = labels_of({"outcome": "NXDOMAIN", "severity": "low", "alertname": "x",
                        "mail-server": "mx1", "__name__": "y", "shard": 3})
    assert labels == {"alertname": ALERTNAME, "outcome": "NXDOMAIN", "key_severity": "low",
                      "key_alertname": "x", "mail_server": "mx1", "key___name__": "y",
                      "shard": "3", "severity": "warning"}


def test_an_open_alert_carries_summary_description_id_links_and_starts_at_the_onset():
    [intent] = OpenAnomalies().apply(event(related=["servfail-auth-1"]), b"{}", partition=0)
    alert = render(intent, NOW, horizon_s=240, generator_url="https://grafana.example/d?id={id}",
                   runbook_url="https://runbooks.example/otp#{id}")
    assert alert["startsAt"] == "2026-11-27T09:59:20.000Z"
    assert alert["endsAt"] == "2026-12-02T08:30:40.000Z"            # now + 4 re-send intervals
    assert alert["generatorURL"] == "https://grafana.example/d?id=servfail-1eac3b0b6b218bb8"
    assert alert["annotations"] == {
        "summary": OPEN["reason"],
        "description": "8/192 OTP deliveries failed (4.17%), expected 0.03%. Top sender domains: "
                       "auth.bank1.example (8). Top resolvers: res-a.dns.example (5), "
                       "res-b.dns.example (2).",
        "anomaly_id": "servfail-1eac3b0b6b218bb8",
        "related": "servfail-auth-1",
        "runbook_url": "https://runbooks.example/otp#servfail-1eac3b0b6b218bb8"}


def test_a_severity_change_ends_the_alert_under_the_old_labels_in_the_same_step():
    book = OpenAnomalies()
    book.apply(event(), b"open", partition=0)
    ended, firing = book.apply(event(state="update", severity="critical",
                                     detected_at="2026-11-27T10:01:25Z"), b"update", partition=0)
    assert dict(ended.labels)["severity"] == "warning" and dict(firing.labels)["severity"] == "critical"
    assert render(ended, NOW, 240)["endsAt"] == "2026-11-27T10:01:25.000Z"
    assert firing.ended_at is None and firing.raw == b"update"
    assert [dict(i.labels)["severity"] for i in book.firing()] == ["critical"]


def test_resolved_ends_the_alert_under_the_labels_it_fired_with_and_leaves_the_book():
    book = OpenAnomalies()
    book.apply(event(severity="critical"), b"open", partition=0)
    [end] = book.apply(event(state="resolved", severity="warning",
                             detected_at="2026-11-27T10:45:55Z"), b"resolved", partition=0)
    assert dict(end.labels)["severity"] == "critical"
    assert render(end, NOW, 240)["endsAt"] == "2026-11-27T10:45:55.000Z"
    assert len(book) == 0 and book.firing() == []


def test_times_ahead_of_this_clock_are_clamped_so_alertmanager_accepts_the_alert():
    ahead = event(since="2027-01-01T00:00:00Z", detected_at="2027-01-01T00:01:00Z")
    [intent] = OpenAnomalies().apply(ahead, b"", partition=0)
    firing = render(intent, NOW, 240)
    assert firing["startsAt"] <= firing["endsAt"]
    [end] = OpenAnomalies().apply(dict(ahead, state="resolved"), b"", partition=0)
    resolved = render(end, NOW, 240)
    assert resolved["endsAt"] == resolved["startsAt"] == "2026-12-02T08:26:40.000Z"


def test_a_partition_moved_to_another_member_takes_its_anomalies_with_it():
    book = OpenAnomalies()
    book.apply(event(id="a"), b"", partition=0)
    book.apply(event(id="b", key={"outcome": "TIMEOUT"}), b"", partition=1)
    book.forget({0})
    assert [i.anomaly_id for i in book.firing()] == ["b"]


@pytest.mark.parametrize("value, reason", [
    (b"{oops", "not_json"), (b"[1]", "not_object"), (b'{"state": "open"}', "missing_field:id"),
    (b'{"id": 1, "state": "open", "key": {}}', "wrong_type:id"),
    (b'{"id": "x", "state": "closed", "key": {"outcome": "A"}}', "bad_value:state"),
    (b'{"id": "x", "state": "open", "key": {"resolver": "r"}}', "missing_field:key.outcome"),
    (b'{"id": "x", "state": "open", "key": {"outcome": "A"}, "since": "yesterday"}', "bad_ts:since"),
])
def test_a_message_that_is_not_an_anomaly_event_is_named_by_its_reason(value, reason):
    with pytest.raises(EventError) as raised:
        read_event(value)
    assert raised.value.reason == reason


# ----------------------------------------------------------------------------- settings

def test_notify_settings_defaults_file_environment_flags_in_that_order(tmp_path):
    assert NotifySettings().group_id == "otp-notifier"
    assert NotifySettings().resend_interval_s == 60 and NotifySettings().tls_verify is True
    path = tmp_path / "detector.toml"
    path.write_text('[kafka]\nbootstrap_servers = "k:9092"\n'
                    '[notify]\nalertmanager_urls = ["http://am-file:9093"]\n'
                    'resend_interval_s = 30\nrunbook_url = "https://rb.example/{id}"\n')
    environ = {"DETECTOR_NOTIFY_RESEND_INTERVAL_S": "20", "DETECTOR_NOTIFY_TLS_VERIFY": "false",
               "DETECTOR_NOTIFY_WEBHOOK_URLS": "https://a.example/h, https://b.example/h",
               "DETECTOR_NOTIFY_WEBHOOK_SECRET": "s3cret"}
    settings = load_notify_settings(str(path), environ, overrides={
        "alertmanager_urls": ("http://am-flag:9093",), "webhook_urls": (), "group_id": None})
    assert settings.alertmanager_urls == ("http://am-flag:9093",)          # flag beats file
    assert settings.webhook_urls == ("https://a.example/h", "https://b.example/h")   # env
    assert settings.resend_interval_s == 20 and settings.tls_verify is False
    assert settings.runbook_url == "https://rb.example/{id}" and settings.group_id == "otp-notifier"
    assert settings.webhook_secret == "s3cret" and settings.describe()["webhook_secret"] == "***"
    # The worker's loader reads the same file: [notify] is not an unknown table to it.
    assert load_settings(str(path), environ={}).kafka.bootstrap_servers == "k:9092"


@pytest.mark.parametrize("text, message", [
    ('[notify]\nwebhook_secret = "x"\n', "DETECTOR_NOTIFY_WEBHOOK_SECRET"),
    ('[notify]\nresend_every = 5\n', "unknown key notify.resend_every"),
    ('[notify]\nwebhook_urls = ["ftp://x"]\n', "notify.webhook_urls: 'ftp://x' is not an http"),
    ('[notify]\nresend_interval_s = "soon"\n', "notify.resend_interval_s"),
])
def test_a_bad_notify_table_fails_with_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "n.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_notify_settings(str(path), environ={})
    done = subprocess.run([*DETECTOR, "notify", "--config", str(path), "--alertmanager-url",
                           "http://127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_notify_without_any_receiver_is_a_usage_error():
    done = subprocess.run([*DETECTOR, "notify", "--bootstrap-servers", "127.0.0.1:1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == ("detector: error: no receiver: give --alertmanager-url or "
                           "--webhook-url (or notify.alertmanager_urls / notify.webhook_urls)\n")


# ----------------------------------------------------------------------------- receivers

@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 (openssl, in Debian's base system)."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([binary("openssl", install="apt-get install openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


def test_tls_is_verified_by_default_and_a_private_ca_file_is_trusted(certificate):
    cert, key = certificate
    with Recorder(certfile=cert, keyfile=key) as receiver:
        refused = post(receiver.url, b"{}", {}, 5, tls_context(verify=True))
        assert refused.status is None and "CERTIFICATE_VERIFY_FAILED" in refused.error
        assert refused.verdict == "retry" and receiver.received == []
        trusted = post(receiver.url, b"{}", {}, 5, tls_context(verify=True, ca_file=str(cert)))
        assert trusted.verdict == "accepted" and len(receiver.received) == 1
        unverified = post(receiver.url, b"{}", {}, 5, tls_context(verify=False))
        assert unverified.verdict == "accepted"


def test_a_redirect_is_not_followed_and_the_event_is_refused_not_turned_into_a_get():
    with Recorder(respond=lambda request: (307, b"", 0)) as receiver:
        answer = post(receiver.url, b'{"id": "x"}', {}, 5, None)
        assert answer.status == 307 and answer.verdict == "refused"
        assert [r.path for r in receiver.received] == ["/hook"]


def test_credentials_in_the_url_are_sent_as_basic_authentication_not_in_the_request_line():
    with Recorder() as receiver:
        url = receiver.url.replace("http://", "http://otp%40bot:s3cr%3At@")
        assert post(url, b"{}", {}, 5, None).verdict == "accepted"
        [request] = receiver.received
        assert request.headers["authorization"] == "Basic b3RwQGJvdDpzM2NyOnQ="   # otp@bot:s3cr:t
        assert request.path == "/hook"


def test_an_event_that_cannot_make_a_request_is_refused_not_retried_forever():
    from detector.notify.receivers import WebhookReceiver

    with Recorder() as receiver:
        webhook = WebhookReceiver("webhook", receiver.url, 5, None)
        answer = webhook.post_event(b"{}", event(id="bad\r\nX-Injected: 1"))
        assert answer.verdict == "refused" and "header" in answer.error
        assert receiver.received == []


def test_the_signature_is_the_hmac_sha256_of_the_exact_body():
    body = orjson.dumps(OPEN)
    assert signature(b"k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
