"""``detector notify`` with webhooks: a real HTTP server in the test is the receiver. Every
event is posted as it is on the topic with its idempotency key and HMAC signature; a 4xx is
dead-lettered with the response and not retried; a 5xx is retried until accepted; SIGTERM lets
the request in flight finish and commits it."""

import hashlib
import hmac
import signal

import orjson
import pytest

from conftest import read_topic
from detector.io.broker import free_port
from integrations import NotifierDeployment, Recorder, metric, seed_events, wait_for

pytestmark = pytest.mark.kafka
__all__ = ["seed_events"]        # a fixture

SECRET = "test-secret-not-for-production"


def key_of(line: bytes) -> str:
    event = orjson.loads(line)
    return f"{event['id']}:{event['state']}:{event['detected_at']}"


def test_events_are_posted_signed_with_their_key_4xx_dead_lettered_5xx_retried(
        broker, tmp_path, seed_events):
    events = seed_events[:4]
    refused, flaky = key_of(events[1]), key_of(events[2])
    failures_left = {flaky: 2}

    def respond(request):
        key = request.headers["idempotency-key"]
        if key == refused:
            return 422, b'{"error": "unknown field: observed"}', 0
        if failures_left.get(key):
            failures_left[key] -= 1
            return 503, b"overloaded", 0
        return 202, b"", 0

    with Recorder(respond) as webhook:
        deployment = NotifierDeployment(broker, tmp_path)
        deployment.produce([*events, b"this is not an event"])
        port = free_port()
        notifier = deployment.start("--webhook-url", webhook.url, metrics_port=port,
                                    env={"DETECTOR_NOTIFY_WEBHOOK_SECRET": SECRET})
        wait_for("every message handled and committed",
                 lambda: deployment.committed() == {0: len(events) + 1}, timeout=30,
                 log=deployment.log)
        keys = [r.headers["idempotency-key"] for r in webhook.received]
        assert keys == [key_of(events[0]), refused, flaky, flaky, flaky, key_of(events[3])]
        for request in webhook.received:
            assert request.body in events                     # the bytes as on the topic
            assert request.headers["content-type"] == "application/json"
            expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(request.headers["x-otp-signature-256"], f"sha256={expected}")
        dead = {m.value(): dict(m.headers()) for m in read_topic(broker.bootstrap,
                                                                 deployment.dead_letter)}
        assert set(dead) == {events[1], b"this is not an event"}
        assert dead[events[1]]["receiver"] == b"webhook" and dead[events[1]]["status"] == b"422"
        assert dead[events[1]]["response"] == b'{"error": "unknown field: observed"}'
        assert dead[b"this is not an event"]["response"] == b"not_json"
        assert metric(port, "otp_notifier_sent_total", receiver="webhook") == 3
        assert metric(port, "otp_notifier_failed_total", receiver="webhook", status="422") == 1
        assert metric(port, "otp_notifier_retries_total", receiver="webhook") == 2
        assert metric(port, "otp_notifier_events_invalid_total", reason="not_json") == 1
        assert metric(port, "otp_notifier_receiver_up", receiver="webhook") == 1
        notifier.send_signal(signal.SIGTERM)
        assert notifier.wait(timeout=15) == 0


def test_sigterm_lets_the_request_in_flight_finish_and_commits_it(broker, tmp_path, seed_events):
    with Recorder(respond=lambda request: (200, b"ok", 1.5)) as webhook:
        deployment = NotifierDeployment(broker, tmp_path, notify={"request_timeout_s": 5})
        deployment.produce(seed_events[:3])
        notifier = deployment.start("--webhook-url", webhook.url)
        wait_for("the first request in flight", lambda: webhook.received, timeout=30,
                 log=deployment.log)
        notifier.send_signal(signal.SIGTERM)
        assert notifier.wait(timeout=15) == 0
        wait_for("the request answered, not cut", lambda: webhook.received[0].answered, timeout=2)
        assert len(webhook.received) == 1                # and no other started after SIGTERM
        assert deployment.committed() == {0: 1}
        assert '"msg":"stopped"' in deployment.log()
