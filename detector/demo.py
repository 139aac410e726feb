"""``make demo``: the main job end to end on an embedded default, on a fresh machine.

It starts a local broker, generates the seed-incident scenario (an OTP sender's SPF lookups
SERVFAIL after a zone misconfiguration), produces its logs to the input topics, runs the stream
worker until it has consumed them, prints the anomaly events read back from ``otp-anomalies`` as a
table with the evaluation against the scenario's truth, stops everything it started, and writes
the HTML report of those events (the per-minute series from a replay of the same files, which
gives the same events) to ``demo-out/report.html``.

**With Alertmanager** (``--alertmanager-url URL``, which ``make demo ALERTMANAGER_URL=URL``
passes, or the notifier's own ``DETECTOR_NOTIFY_ALERTMANAGER_URLS``; ``--with-alertmanager``
starts Debian's on loopback: ``make demo-alertmanager``) the demo also runs the notifier
(``detector notify``'s ``Notifier``, in a thread, Alertmanager its only receiver) on the demo's
anomalies topic, and shows the alert in Alertmanager. Alertmanager's API lists only active
alerts, and the incident ends long before the data does, so the logs go in two parts: up to
``FIRING_FOR_S`` into the incident (by the scenario's truth), then the rest. After part one the
demo waits until Alertmanager lists the alert and prints it; after part two, until it no longer
does, and prints the resolution. The files are cut at a line, not sorted by time, so the two
parts in order are the files exactly.

The worker runs twice on one group, as a deployed worker restarts: the first run is stopped
(checkpoint, commit, leave the group) once it has read part one and the alert has been shown, and
the second restores that checkpoint, reads on, and exits when idle as the plain demo does. The
first run never counts a partition as idle (``idle_timeout_s`` is a day), so to the detector the
pause between the parts is a stream that is late, not one that ended: no step is judged before its
records are in, and the events are the ones a single run over the whole files gives. The demo's
alerts are told from anything else in that Alertmanager by their ``anomaly_id``: the ids of the
events on the demo's anomalies topic, which it follows.

Alertmanager unreachable at the start, or not listing (or not dropping) the alert in time: one
line saying so, and the demo goes on and writes its report.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import orjson

from .core.config import ConfigError
from .core.records import Rejected, parse_ts
from .evaluate import evaluate, format_table
from .io.broker import LocalBroker, free_port, stop_process
from .io.clients import ensure_topics, make_consumer
from .io.files import JsonLinesSink, LineSource
from .io.produce import produce_files
from .logs import configure_logging
from .notify.receivers import split_credentials, tls_context
from .notify.settings import NotifySettings
from .replay import replay
from .report import events_table
from .settings import Settings, load_settings
from .synth import generate
from .worker import Worker

OUT = Path("demo-out")
#: Part one ends this far into the incident: the anomaly has opened (the detector needs seconds)
#: and is still open, so the alert fires until part two resolves it.
FIRING_FOR_S = 300.0
#: Once the worker has read what it was given, Alertmanager has this long to list the alert (or to
#: drop it): the notifier delivers in milliseconds, and retries an Alertmanager away for a moment.
SETTLE_S = 30.0
POLL_S = 0.5
#: The first run never calls a partition idle: the pause between the parts is not an end.
NEVER_IDLE_S = 86_400.0
ALERTNAME = "OTPDeliveryFailures"


class DemoError(Exception):
    """A failure the demo reports in one line."""


def say(text: str) -> None:
    print(f"demo: {text}", file=sys.stderr, flush=True)


class EventFollower:
    """The anomalies topic read from its beginning, as far as it has come at each ``poll``."""

    def __init__(self, kafka, topic: str) -> None:
        from kafka import TopicPartition

        self.consumer = make_consumer(kafka, None)
        partitions = sorted(self.consumer.partitions_for_topic(topic) or ())
        self.consumer.assign([TopicPartition(topic, p) for p in partitions])
        self.consumer.seek_to_beginning()
        self.events: list[dict] = []

    def poll(self, timeout_s: float = 0.2) -> int:
        """Wait up to ``timeout_s`` for events; how many came."""
        came = 0
        for records in self.consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
            self.events.extend(orjson.loads(r.value) for r in records)
            came += len(records)
        return came

    def close(self) -> None:
        self.consumer.close()


def read_events(kafka, topic: str, idle_s: float = 2.0) -> list[dict]:
    follower = EventFollower(kafka, topic)
    try:
        quiet = time.monotonic()
        while time.monotonic() - quiet < idle_s:
            if follower.poll():
                quiet = time.monotonic()
        return follower.events
    finally:
        follower.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m detector.demo", description=(
        "The seed incident through a local broker and the stream worker; with an Alertmanager, "
        "the alert shown firing in it, then resolved."))
    parser.add_argument("--alertmanager-url", dest="alertmanager_urls", action="append",
                        default=[], metavar="URL",
                        help="run the notifier too and show the alert in this Alertmanager "
                             "(default: DETECTOR_NOTIFY_ALERTMANAGER_URLS)")
    parser.add_argument("--with-alertmanager", action="store_true",
                        help="start Debian's prometheus-alertmanager on loopback and use it")
    parser.add_argument("--hold-firing", type=float, default=0.0, metavar="SECONDS",
                        help="keep the alert firing this long before part two (time to look)")
    parser.add_argument("--hours", type=_positive, default=None, metavar="H",
                        help="generate this many hours of logs (default: the scenario's 6; "
                             "the incident is 2.5 h in, so at least 3.5)")
    parser.add_argument("--out", type=Path, default=OUT, metavar="DIR",
                        help="where the scenario, logs and report go (default demo-out)")
    return parser.parse_args(argv)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of hours")
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("WARNING", "text")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    out: Path = args.out
    try:
        notify = notify_settings(args.alertmanager_urls)
    except ConfigError as err:
        say(f"error: {err}")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        if args.with_alertmanager:
            try:
                local = stack.enter_context(LocalAlertmanager(out / "alertmanager"))
            except DemoError as err:
                say(f"error: {err}")
                return 2
            notify = dataclasses.replace(notify, alertmanager_urls=(local.url,))
        context = tls_context(notify.tls_verify, notify.ca_file)
        views = [view for url in notify.alertmanager_urls
                 if (view := AlertmanagerView.reachable(url, context)) is not None]
        try:
            events = run(out, notify, views, args.hold_firing, args.hours)
        except KeyboardInterrupt:
            say("interrupted")
            return 130
    print(events_table(events))
    truth = orjson.loads((out / "truth.json").read_bytes())
    print()
    print(format_table(evaluate(events, truth)))
    say(f"report: {write_report(events, out).resolve()}")
    return 0


def run(out: Path, notify: NotifySettings, views: list["AlertmanagerView"], hold_s: float,
        hours: float | None = None) -> list[dict]:
    """Generate, produce, detect (and show the alert when ``views``); the events on the topic."""
    say("generating the seed-incident scenario (SPF lookups SERVFAIL for one OTP sender)")
    summary = generate("seed-incident", out, seed=7, hours=hours).to_dict()
    say(f"{summary['mail_records']} mail and {summary['dns_records']} DNS records, "
        f"{summary['start']} to {summary['end']}")
    truth = orjson.loads((out / "truth.json").read_bytes())
    if views and not truth["incidents"]:
        say(f"no incident in {summary['start']} to {summary['end']}: nothing to show in "
            "Alertmanager")
        views = []
    with LocalBroker(log_path=out / "broker.log") as broker:
        say(f"local broker on {broker.bootstrap}")
        settings = demo_settings(broker.bootstrap)
        files = [(settings.topics.dns, out / "dns.jsonl.gz"),
                 (settings.topics.mail, out / "mail.jsonl.gz")]
        if views:
            Showing(out, settings, notify, views).run(files, truth, hold_s)
        else:
            started = time.monotonic()
            sent = produce(settings, files)
            say(f"produced {sent} records in {time.monotonic() - started:.1f} s; "
                "running the worker")
            worker = run_worker(settings)
            say(f"worker consumed {worker.counts['consumed']} records in "
                f"{time.monotonic() - started:.1f} s (including the idle wait before it exits)")
        return read_events(settings.kafka, settings.topics.anomalies)


def demo_settings(bootstrap: str, **worker) -> Settings:
    """The demo's settings, never the caller's ``DETECTOR_*`` environment: short group timeouts
    for the local broker, a batch run that exits when its input is idle."""
    return load_settings(environ={}, overrides={
        ("kafka", "bootstrap_servers"): bootstrap,
        ("kafka", "session_timeout_ms"): 6000, ("kafka", "heartbeat_interval_ms"): 1000,
        ("worker", "exit_when_idle_s"): 5.0, ("worker", "idle_timeout_s"): 3.0,
        ("worker", "log_format"): "text", ("worker", "log_level"): "WARNING",
        **{("worker", key): value for key, value in worker.items()}})


def notify_settings(urls: list[str]) -> NotifySettings:
    """The notifier's configuration: its ``DETECTOR_NOTIFY_*`` environment, ``--alertmanager-url``
    over it. Alertmanager only: a webhook configured there is not sent the demo's events."""
    from .notify.settings import load_notify_settings

    environ = {name: value for name, value in os.environ.items()
               if name.upper().startswith("DETECTOR_NOTIFY_")}
    notify = load_notify_settings(None, environ, {"alertmanager_urls": tuple(urls)})
    return dataclasses.replace(notify, webhook_urls=(), log_format="text", log_level="WARNING")


def produce(settings: Settings, files: list[tuple[str, Path]]) -> int:
    return sum(produce_files(settings.kafka, topic, [str(path)]) for topic, path in files)


def start_worker(settings: Settings) -> tuple[Worker, threading.Thread]:
    worker = Worker(settings)
    runner = threading.Thread(target=worker.run, name="worker", daemon=True)
    runner.start()
    return worker, runner


def run_worker(settings: Settings) -> Worker:
    """One worker run until it exits when its input is idle."""
    worker, runner = start_worker(settings)
    while runner.is_alive():
        runner.join(0.5)
    return worker


def split_files(files: list[tuple[str, Path]], cut: float,
                directory: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """Each file in two at its first line stamped in ``[cut, cut + 60 s]`` (a line with a clock
    far ahead does not move the cut): the lines before it, then the rest, in file order."""
    directory.mkdir(parents=True, exist_ok=True)
    first, second = [], []
    for topic, path in files:
        name = path.name.removesuffix(".gz")
        head, tail = directory / f"1-{name}", directory / f"2-{name}"
        source = LineSource(str(path), "any")
        with open(head, "wb") as before, open(tail, "wb") as after:
            target = before
            for lines, _ in source.chunks():
                if target is after:
                    after.write(b"\n".join(lines) + b"\n")
                    continue
                for line in lines:
                    if target is before and _stamped_at_cut(line, cut):
                        target = after
                    target.write(line + b"\n")
        source.close()
        first.append((topic, head))
        second.append((topic, tail))
    return first, second


def _stamped_at_cut(line: bytes, cut: float) -> bool:
    try:
        ts = parse_ts(orjson.loads(line).get("ts"))
    except (orjson.JSONDecodeError, AttributeError, Rejected):
        return False
    return cut <= ts <= cut + 60.0


class Showing:
    """The two-part run with the notifier, showing the alert in every Alertmanager of ``views``.

    The demo's alerts are told from anything else in an Alertmanager by their ``anomaly_id``
    annotation: the ids of the events on the demo's anomalies topic, which it follows."""

    def __init__(self, out: Path, settings: Settings, notify: NotifySettings,
                 views: list["AlertmanagerView"]) -> None:
        self.out, self.settings, self.notify, self.views = out, settings, notify, views
        self.consumed = 0

    def run(self, files: list[tuple[str, Path]], truth: dict, hold_s: float) -> None:
        from .notify.metrics import NotifierMetrics
        from .notify.notifier import Notifier

        settings = self.settings
        cut = parse_ts(truth["incidents"][0]["start"]) + FIRING_FOR_S
        first, second = split_files(files, cut, self.out / "parts")
        # The notifier and the follower subscribe before the worker would create the topic.
        ensure_topics(settings.kafka, {settings.topics.anomalies: {}})
        self.follower = EventFollower(settings.kafka, settings.topics.anomalies)
        self.metrics = NotifierMetrics()
        self.notifier = Notifier(self.notify, settings, self.metrics)
        self.notifier_error: BaseException | None = None
        notifying = threading.Thread(target=self._notify, name="notifier", daemon=True)
        notifying.start()
        try:
            started = time.monotonic()
            sent = produce(settings, first)
            say(f"part one: produced {sent} records (up to {FIRING_FOR_S / 60:g} minutes into "
                f"the incident) in {time.monotonic() - started:.1f} s; running the worker and "
                "the notifier")
            worker, runner = start_worker(demo_settings(
                settings.kafka.bootstrap_servers, exit_when_idle_s=0.0,
                idle_timeout_s=NEVER_IDLE_S))
            firing = self.wait_firing(lambda: worker.counts["consumed"] >= sent
                                      or not runner.is_alive())
            if firing and hold_s > 0:
                say(f"holding the alert firing for {hold_s:g} s before part two")
                time.sleep(hold_s)
            worker.stop()
            runner.join()
            self.consumed += worker.counts["consumed"]
            started = time.monotonic()
            sent = produce(settings, second)
            say(f"part two: produced the other {sent} records in "
                f"{time.monotonic() - started:.1f} s; the worker restores its checkpoint and "
                "reads on")
            worker, runner = start_worker(settings)
            if firing:
                self.wait_resolved(firing, lambda: not runner.is_alive())
            runner.join()
            self.consumed += worker.counts["consumed"]
            say(f"worker consumed {self.consumed} records in two runs")
        finally:
            self.notifier.stop()
            notifying.join(timeout=30)
            self.follower.close()
            shutil.rmtree(self.out / "parts", ignore_errors=True)

    def _notify(self) -> None:
        try:
            self.notifier.run()
        except Exception as err:             # noqa: BLE001 - said in one line when it matters
            self.notifier_error = err

    def _settled(self, done: Callable[[], bool]) -> Callable[[], bool]:
        """True ``SETTLE_S`` after ``done()`` first held."""
        since: list[float] = []

        def settled() -> bool:
            if not since and done():
                since.append(time.monotonic())
            return bool(since) and time.monotonic() - since[0] > SETTLE_S
        return settled

    def _ids(self, *states: str) -> set[str]:
        return {event["id"] for event in self.follower.events if event.get("state") in states}

    def wait_firing(self, read_all: Callable[[], bool]) -> dict[str, list[dict]]:
        """Once the worker has read part one, each Alertmanager's alerts of the anomalies open
        on the topic, printed; ``{}`` when none listed them in time (said in one line)."""
        settled = self._settled(read_all)
        while not read_all():
            self.follower.poll(POLL_S)
        firing: dict[str, list[dict]] = {}
        waiting = list(self.views)
        while waiting:
            self.follower.poll(POLL_S)
            opened = self._ids("open", "update") - self._ids("resolved")
            for view in list(waiting):
                alerts = view.alerts(opened) if opened else []
                if alerts:
                    firing[view.url] = alerts
                    waiting.remove(view)
                    view.show_firing(alerts)
            if waiting and settled():
                if not opened:
                    say(f"no anomaly open on the topic {SETTLE_S:g} s after the worker read part "
                        "one: nothing to show in Alertmanager")
                    break
                for view in waiting:
                    say(f"Alertmanager at {view.url} did not list the alert within "
                        f"{SETTLE_S:g} s of the worker reading part one ({self._delivery()}"
                        f"{view.last_error()}); going on without it")
                break
        return firing

    def wait_resolved(self, firing: dict[str, list[dict]], exited: Callable[[], bool]) -> None:
        """Until no Alertmanager lists the alerts it showed firing; each resolution printed."""
        settled = self._settled(exited)
        waiting = [view for view in self.views if view.url in firing]
        while waiting:
            self.follower.poll(POLL_S)
            for view in list(waiting):
                shown = {alert["annotations"]["anomaly_id"] for alert in firing[view.url]}
                if view.alerts(shown, on_error=None) == []:
                    waiting.remove(view)
                    self.show_resolved(view, sorted(shown))
            if waiting and settled():
                for view in waiting:
                    state = "does not answer" if view.error else "still lists the alert"
                    say(f"Alertmanager at {view.url} {state} {SETTLE_S:g} s after the worker "
                        f"read everything ({self._delivery()}{view.last_error()})")
                break

    def show_resolved(self, view: "AlertmanagerView", anomaly_ids: list[str]) -> None:
        ends = {event["id"]: event.get("detected_at") for event in self.follower.events
                if event.get("state") == "resolved"}
        for anomaly_id in anomaly_ids:
            say(f"Alertmanager at {view.url} no longer lists {anomaly_id}: resolved, "
                f"endsAt {ends.get(anomaly_id, '?')} (the resolved event's detected_at)")

    def _delivery(self) -> str:
        """What the notifier got done, for a message saying the alert did not show."""
        if self.notifier_error is not None:
            return f"the notifier failed: {self.notifier_error!r}"
        read = self.notifier.counts["delivered_from_topic"]
        accepted = sum(self.metrics.registry.get_sample_value(
            "otp_notifier_sent_total", {"receiver": lane.receiver.name}) or 0
            for lane in self.notifier.alertmanagers)
        return (f"the notifier read {read} anomaly events, Alertmanager accepted "
                f"{accepted:.0f} of them")


class AlertmanagerView:
    """Alertmanager's API v2 as the demo reads it: the active alerts of given anomalies."""

    def __init__(self, url: str, context: ssl.SSLContext | None) -> None:
        self.url = url.rstrip("/")
        self.context = context
        self.error = ""

    @classmethod
    def reachable(cls, url: str, context: ssl.SSLContext | None) -> "AlertmanagerView | None":
        view = cls(url, context)
        try:
            status = view.get("/api/v2/status")
        except Exception as err:             # noqa: BLE001 - any failure is one line
            say(f"Alertmanager at {url} is not reachable ({_reason(err)}); the demo goes on "
                "without it")
            return None
        version = (status.get("versionInfo") or {}).get("version", "?")
        say(f"Alertmanager {version} at {view.url}: the notifier will send it the alerts")
        return view

    def get(self, path: str):
        # Credentials in the URL as the notifier sends them: basic authentication.
        url, headers = split_credentials(self.url + path, {"Accept": "application/json"})
        request = urllib.request.Request(url, headers=headers)
        with urllib.request.urlopen(request, timeout=5, context=self.context) as response:
            return orjson.loads(response.read())

    def alerts(self, anomaly_ids: set[str], on_error=()) -> list[dict] | None:
        """The active alerts of these anomalies (resolved ones are not listed by the API);
        ``on_error`` when the API fails (``error`` says how, until it answers again)."""
        try:
            listed = self.get("/api/v2/alerts?active=true")
        except Exception as err:             # noqa: BLE001 - remembered, said when giving up
            self.error = _reason(err)
            return list(on_error) if on_error is not None else None
        self.error = ""
        return [alert for alert in listed
                if alert.get("labels", {}).get("alertname") == ALERTNAME
                and (alert.get("annotations") or {}).get("anomaly_id") in anomaly_ids]

    def last_error(self) -> str:
        return f"; last answer: {self.error}" if self.error else ""

    def show_firing(self, alerts: list[dict]) -> None:
        say(f"Alertmanager at {self.url} lists the alert, firing:")
        for alert in alerts:
            labels = ", ".join(f'{k}="{v}"' for k, v in alert["labels"].items())
            annotations = alert.get("annotations", {})
            say(f"  labels      {{{labels}}}")
            say(f"  summary     {annotations.get('summary', '')}")
            say(f"  anomaly_id  {annotations.get('anomaly_id', '')}")
            say(f"  startsAt    {alert.get('startsAt')} (the anomaly's onset, in the logs' time)"
                f"; endsAt {alert.get('endsAt')} (moved on by every re-send while open)")
        say(f"  see it at   {self.url}/#/alerts or `amtool --alertmanager.url={self.url} alert "
            f"query alertname={ALERTNAME}` (Debian's package has no web UI)")


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err
    return f"{type(reason).__name__}: {reason}"


class LocalAlertmanager:
    """Debian's Alertmanager on a free loopback port (clustering off, its files in ``workdir``),
    every alert routed to a receiver that notifies nobody: the demo reads its API."""

    CONFIG = "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.version = "?"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LocalAlertmanager":
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise DemoError("prometheus-alertmanager not found: `make demo-alertmanager` installs "
                            "Debian's (as root), or give --alertmanager-url URL")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "alertmanager.yml"
        config.write_text(self.CONFIG)
        log_path = self.workdir / "alertmanager.log"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                 "--log.level=warn"], stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while True:
            try:
                status = AlertmanagerView(self.url, None).get("/api/v2/status")
                self.version = (status.get("versionInfo") or {}).get("version", "?")
                return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                last = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise DemoError(f"Alertmanager did not start on {self.url}"
                                + (f": {last[0]}" if last else f" (see {log_path})"))
            time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        stop_process(self.process, timeout_s=10)


def write_report(events: list[dict], out: Path = OUT) -> Path:
    """The HTML report of the worker's events over the series of a replay of the same files."""
    from .htmlreport import render

    series: list[dict] = []
    sink = JsonLinesSink(out / "replayed.jsonl")
    try:
        summary = replay([str(out / "mail.jsonl.gz")], [str(out / "dns.jsonl.gz")], sink,
                         series=series.extend)
    finally:
        sink.close()
    path = out / "report.html"
    path.write_text(render(events, series, summary))
    return path


if __name__ == "__main__":
    sys.exit(main())
