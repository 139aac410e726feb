"""One HTTP request to one receiver, and what its answer means for the delivery.

An answer is *accepted* (2xx), *refused* (any other status, except 408 and 429: the request
itself is wrong, so sending it again cannot help: the event is dead-lettered with the response),
or *retry* (no answer: refused connection, reset, timeout; or 408, 429, 5xx: the receiver is in
trouble, not the request). Redirects are not followed: a POST silently turned into a GET by a
redirect would lose the event, so a 3xx is a refusal that names the new location. Credentials
in a URL (``https://user:password@host/...``) are sent as HTTP basic authentication.

Webhook requests carry the event's bytes as they are on the topic (``Content-Type:
application/json``), an ``Idempotency-Key`` (``<id>:<state>:<detected_at>``: the same for every
re-delivery of one event, different for each state change of one anomaly) and, when a secret is
set, ``X-OTP-Signature-256: sha256=<hex HMAC-SHA256 of the body>`` (the scheme GitHub's webhooks
use, so receivers' existing verifiers work).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

USER_AGENT = "otp-dns-detector-notifier/0.1"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_HEADER = "X-OTP-Signature-256"
#: Response bytes kept for the dead-letter topic and the log.
KEEP_BODY = 2048
RETRYABLE_STATUS = (408, 429)


@dataclass(frozen=True, slots=True)
class Answer:
    """A receiver's answer: ``status`` None when there was none (``error`` says why)."""

    status: int | None
    body: bytes = b""
    error: str = ""
    #: With no status: False when the request itself could not be made (a header value with a
    #: newline from the event, say), which no retry cures.
    retryable: bool = True

    @property
    def verdict(self) -> str:
        """``accepted``, ``refused`` or ``retry`` (see the module docstring).

        >>> [Answer(s).verdict for s in (200, 202, 400, 404, 301, 408, 429, 500, 503, None)]
        ['accepted', 'accepted', 'refused', 'refused', 'refused', 'retry', 'retry', 'retry', 'retry', 'retry']
        >>> Answer(None, error="ValueError: Invalid header value", retryable=False).verdict
        'refused'
        """
        if self.status is None:
            return "retry" if self.retryable else "refused"
        if self.status >= 500 or self.status in RETRYABLE_STATUS:
            return "retry"
        return "accepted" if 200 <= self.status < 300 else "refused"

    def describe(self) -> str:
        if self.status is None:
            return self.error
        return f"HTTP {self.status}: {self.body[:200].decode('utf-8', 'replace')}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None          # the 3xx is raised as an HTTPError and read as a refusal


def tls_context(verify: bool, ca_file: str = "") -> ssl.SSLContext:
    """Certificate and host name verified unless ``verify`` is false; ``ca_file`` for a private CA."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def split_credentials(url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Credentials in a URL (``https://user:password@host/...``) as HTTP basic authentication:
    the URL without them, and ``headers`` with the ``Authorization`` header they make.

    >>> split_credentials("http://am:s%40cret@127.0.0.1:9093/api", {})
    ('http://127.0.0.1:9093/api', {'Authorization': 'Basic YW06c0BjcmV0'})
    """
    parts = urlsplit(url)
    if parts.username is None:
        return url, headers
    credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    headers = {**headers, "Authorization": "Basic " + base64.b64encode(
        credentials.encode()).decode()}
    netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), headers


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float,
         context: ssl.SSLContext | None) -> Answer:
    """POST ``body`` to ``url``; never raises for a network or HTTP problem. Credentials in the
    URL are sent as HTTP basic authentication (``split_credentials``)."""
    url, headers = split_credentials(url, headers)
    opener = urllib.request.build_opener(_NoRedirect(),
                                         urllib.request.HTTPSHandler(context=context))
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
    try:
        with opener.open(request, timeout=timeout_s) as response:
            return Answer(response.status, response.read(KEEP_BODY))
    except urllib.error.HTTPError as err:
        body = err.read(KEEP_BODY) if err.fp is not None else b""
        if 300 <= err.code < 400:
            body = f"redirect to {err.headers.get('Location', '?')} not followed".encode()
        return Answer(err.code, body)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        # refused, reset, timeout, TLS, a garbled or cut answer: the receiver's trouble
        reason = getattr(err, "reason", err)
        return Answer(None, error=f"{type(reason).__name__}: {reason}")
    except ValueError as err:          # a request that cannot be made (a header with a newline)
        return Answer(None, error=f"{type(err).__name__}: {err}", retryable=False)


class AlertmanagerReceiver:
    """Alertmanager's API v2: a list of alerts per ``POST /api/v2/alerts``."""

    kind = "alertmanager"

    def __init__(self, name: str, base_url: str, timeout_s: float,
                 context: ssl.SSLContext | None) -> None:
        self.name = name
        self.url = base_url.rstrip("/") + "/api/v2/alerts"
        self.timeout_s = timeout_s
        self.context = context

    def post_alerts(self, alerts: list[dict[str, Any]]) -> Answer:
        return post(self.url, orjson.dumps(alerts), {}, self.timeout_s, self.context)


class WebhookReceiver:
    """A URL that takes every event as it is, one per POST."""

    kind = "webhook"

    def __init__(self, name: str, url: str, timeout_s: float, context: ssl.SSLContext | None,
                 secret: str = "") -> None:
        self.name = name
        self.url = url
        self.timeout_s = timeout_s
        self.context = context
        self.secret = secret.encode()

    def headers(self, raw: bytes, event: dict[str, Any]) -> dict[str, str]:
        """The idempotency key, and the signature when a secret is set.

        >>> receiver = WebhookReceiver("webhook", "https://hooks.example/otp", 5, None, "k")
        >>> receiver.headers(b"{}", {"id": "servfail-1", "state": "open",
        ...                          "detected_at": "2026-11-27T10:00:25Z"})[IDEMPOTENCY_HEADER]
        'servfail-1:open:2026-11-27T10:00:25Z'
        """
        headers = {IDEMPOTENCY_HEADER: idempotency_key(event)}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, raw)
        return headers

    def post_event(self, raw: bytes, event: dict[str, Any]) -> Answer:
        return post(self.url, raw, self.headers(raw, event), self.timeout_s, self.context)


def idempotency_key(event: dict[str, Any]) -> str:
    return f"{event['id']}:{event['state']}:{event.get('detected_at', '')}"


def signature(secret: bytes, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``body`` under ``secret``.

    >>> signature(b"It's a Secret to Everybody", b"Hello, World!")
    'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17'
    """
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
