"""Native log formats end to end: a Postfix maillog and a Zeek dns.log of a small incident give
the expected anomaly; ``auto`` recognises every sample file; the CLI knows every format."""

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from detector import cli
from detector.formats import ADAPTERS, FORMATS, SNIFF_LINES, detect
from detector.io.files import LineSource

FIXTURES = Path(__file__).parent / "fixtures" / "formats"
T0 = 1795737600.0   # 2026-11-27T00:00:00Z
ZEEK_HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tdns\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\ttrans_id\trtt\tquery\t"
    "qclass\tqclass_name\tqtype\tqtype_name\trcode\trcode_name\tAA\tTC\tRD\tRA\tZ\tanswers\tTTLs\t"
    "rejected\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tcount\tinterval\tstring\tcount\tstring\t"
    "count\tstring\tcount\tstring\tbool\tbool\tbool\tbool\tcount\tvector[string]\t"
    "vector[interval]\tbool\n")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="microseconds")


def spf_lookups_servfail_for_ten_minutes(directory: Path) -> tuple[Path, Path]:
    """110 minutes of OTP mail from verify@bank.example into mx1 (rsyslog timestamps), each
    after its SPF (TXT) lookup of bank.example in Zeek's dns.log. From minute 90 to 100 every
    third lookup SERVFAILs and Postfix refuses that mail with 450 "Domain not found"."""
    maillog, dnslog = [], [ZEEK_HEADER]
    n = 0
    for minute in range(110):
        for i in range(40):
            n += 1
            ts = T0 + minute * 60 + i * 1.5
            failing = 90 <= minute < 100 and n % 3 == 0
            rcode = (2, "SERVFAIL") if failing else (0, "NOERROR")
            answers = "-" if failing else "v=spf1 -all"
            dnslog.append(f"{ts - 0.6:.6f}\tC{n}\t10.0.0.5\t40000\t10.0.0.53\t53\tudp\t{n}\t0.1\t"
                          f"bank.example\t1\tC_INTERNET\t16\tTXT\t{rcode[0]}\t{rcode[1]}\tF\tF\tT\tT\t"
                          f"0\t{answers}\t-\tF\n")
            header = f"{iso(ts)} mx1 postfix"
            if failing:
                maillog.append(
                    f"{header}/smtpd[77]: NOQUEUE: reject: RCPT from app.bank.example[198.51.100.9]: "
                    f"450 4.1.8 <verify@bank.example>: Sender address rejected: Domain not found; "
                    f"from=<verify@bank.example> to=<u{n}@t1.example> proto=ESMTP "
                    f"helo=<app.bank.example>\n")
                continue
            qid = f"{n:010X}"
            maillog += [f"{header}/cleanup[78]: {qid}: message-id=<otp{n}@bank.example>\n",
                        f"{header}/qmgr[79]: {qid}: from=<verify@bank.example>, size=900, nrcpt=1 "
                        f"(queue active)\n",
                        f"{header}/lmtp[80]: {qid}: to=<u{n}@t1.example>, relay=store[10.0.0.9]:24, "
                        f"delay=0.2, dsn=2.0.0, status=sent (250 2.0.0 Ok)\n",
                        f"{header}/qmgr[79]: {qid}: removed\n"]
    mail, dns = directory / "maillog", directory / "dns.log"
    mail.write_text("".join(maillog))
    dns.write_text("".join(dnslog))
    return mail, dns


def test_a_postfix_maillog_and_a_zeek_dns_log_of_an_incident_give_the_expected_anomaly(tmp_path):
    mail, dns = spf_lookups_servfail_for_ten_minutes(tmp_path)
    # Postfix names the server by its syslog host (mx1), Zeek by its address: the default join
    # does not compare the two, so no configuration is needed.
    out = tmp_path / "anomalies.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "detector.cli", "replay", "--mail", str(mail), "--dns", str(dns),
         "--mail-format", "auto", "--dns-format", "auto", "--out", str(out)],
        capture_output=True, text=True, check=True, timeout=120)
    assert "join.match_client" not in done.stderr
    assert "mail format postfix" in done.stderr and "dns format zeek-dns" in done.stderr
    events = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [(e["state"], e["key"]["outcome"]) for e in events][0] == ("open", "SERVFAIL")
    assert events[-1]["state"] == "resolved"
    opened = datetime.fromisoformat(events[0]["detected_at"]).timestamp()
    assert T0 + 90 * 60 < opened <= T0 + 91 * 60
    assert events[0]["evidence"]["resolvers"][0]["value"] == "10.0.0.53"
    assert events[0]["evidence"]["sender_domains"][0]["value"] == "bank.example"


@pytest.mark.parametrize("path", sorted(p for p in FIXTURES.iterdir() if p.is_file()),
                         ids=lambda p: p.name)
def test_auto_recognises_the_format_of_every_sample_file(path):
    expected = next(name for name in ADAPTERS if path.name.startswith(name.replace("-", "_")))
    stream = ADAPTERS[expected].stream
    source = LineSource(str(path), stream)
    try:
        found, score = detect(source.peek(SNIFF_LINES), stream)
    finally:
        source.close()
    assert (found, score > 0.5) == (expected, True)


def test_contract_json_lines_are_recognised_as_json(tmp_path):
    lines = [orjson.dumps({"ts": T0, "qname": "a.example", "rcode": "NOERROR"})] * 5
    assert detect(lines, "dns")[0] == "json"


def test_the_command_line_offers_every_format():
    assert cli.MAIL_FORMATS == FORMATS["mail"]
    assert cli.DNS_FORMATS == FORMATS["dns"]
