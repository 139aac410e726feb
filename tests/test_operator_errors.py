"""An operator's mistake gets one clear line and loses nothing (issue 11).

Every case runs the ``detector`` command as an operator does (a subprocess, real files, the real
local broker where one is needed) and checks three things: the exit status (0 done, 2 a usage,
configuration or input error, 3 an input that broke off part-way; see the README's "Command
line"), the one line on stderr that names the problem, and that no file was lost, truncated or
overwritten. The table at the end holds further bad inputs found on the way.
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from detector.core.pipeline import STATE_VERSION

DETECTOR = [sys.executable, "-m", "detector.cli"]
T0 = 1_795_766_400          # 2026-11-27T06:00:00Z


def detector(*args, stdin: bytes | None = None, env: dict | None = None, cwd=None,
             timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DETECTOR_")}
    return subprocess.run([*DETECTOR, *map(str, args)], input=stdin, capture_output=True,
                          env={**environment, **(env or {})}, cwd=cwd, timeout=timeout)


def error_line(done: subprocess.CompletedProcess, status: int = 2) -> str:
    """The one stderr line of a failed command (and no traceback), after checking its status."""
    err = done.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert done.returncode == status, err
    assert len(lines) == 1 and lines[0].startswith("detector: error: "), err
    return lines[0]


def stderr_of(done: subprocess.CompletedProcess) -> str:
    err = done.stderr.decode(errors="replace")
    assert "Traceback" not in err, err
    return err


def mail_line(second: int, message_id: str, status: str = "delivered") -> bytes:
    return orjson.dumps({"ts": T0 + second, "message_id": message_id, "status": status,
                         "sender": "verify@bank.example", "category": "otp"})


def dns_line(second: int, qname: str = "bank.example", rcode: str = "NOERROR") -> bytes:
    return orjson.dumps({"ts": T0 + second, "qname": qname, "qtype": "TXT", "rcode": rcode,
                         "answers": 1})


@pytest.fixture
def logs(tmp_path):
    """A small healthy pair of inputs: 600 mail and 600 DNS lines, one per second."""
    mail, dns = tmp_path / "mail.jsonl", tmp_path / "dns.jsonl"
    mail.write_bytes(b"".join(mail_line(i, f"m{i}") + b"\n" for i in range(600)))
    dns.write_bytes(b"".join(dns_line(i) + b"\n" for i in range(600)))
    return mail, dns


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes: to show nothing was lost or changed."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file()}


def replay(mail, dns, *extra, **kwargs):
    return detector("replay", "--mail", mail, "--dns", dns, *extra, **kwargs)


# ---------------------------------------------------------------- output paths and files

@pytest.mark.parametrize("option", ["--out", "--dead-letter", "--state"])
@pytest.mark.parametrize("where,words", [
    ("missing/dir/x.jsonl", "no such directory"),
    ("a-directory", "is a directory"),
])
def test_an_output_path_that_cannot_be_written_is_one_line_before_anything_is_read(
        tmp_path, logs, option, where, words):
    (tmp_path / "a-directory").mkdir()
    target = tmp_path / where
    extra = ["--out", tmp_path / "out.jsonl"] if option != "--out" else []
    before = snapshot(tmp_path)
    done = replay(*logs, option, target, *extra)
    line = error_line(done)
    assert option in line and str(target) in line and words in line
    assert snapshot(tmp_path) == before              # nothing written, not even a temporary file


def test_a_read_only_directory_is_refused_before_the_replay(tmp_path, logs):
    if os.geteuid() == 0:
        # root writes through file modes: a read-only mount is what stops root, and /proc is one
        # that exists everywhere.
        target = Path("/proc/otp-detector-out.jsonl")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "out.jsonl"
    line = error_line(replay(*logs, "--out", target))
    assert f"--out {target}: cannot write in {target.parent}" in line


def test_an_output_on_a_full_device_is_one_line(tmp_path, logs):
    mail, dns = logs
    mail.write_bytes(mail.read_bytes() + b"not json\n" * 10)      # dead letters to write
    line = error_line(replay(mail, dns, "--out", tmp_path / "out.jsonl",
                             "--dead-letter", "/dev/full"))
    assert line == "detector: error: --dead-letter /dev/full: No space left on device"
    assert not (tmp_path / "out.jsonl").exists()          # the run failed: no output committed


@pytest.mark.parametrize("option", ["--out", "--dead-letter", "--state"])
@pytest.mark.parametrize("which", ["mail", "dns"])
def test_an_output_that_is_an_input_is_refused_and_the_input_kept(tmp_path, logs, option, which):
    target = logs[0] if which == "mail" else logs[1]
    extra = ["--out", tmp_path / "out.jsonl"] if option != "--out" else []
    before = snapshot(tmp_path)
    line = error_line(replay(*logs, option, target, *extra))
    assert f"{option} {target} is the input --{which} {target}: refusing to overwrite it" in line
    assert snapshot(tmp_path) == before


def test_an_output_that_is_an_input_by_another_name_is_refused(tmp_path, logs):
    mail, dns = logs
    (tmp_path / "link.jsonl").symlink_to(mail)
    os.link(dns, tmp_path / "hard.jsonl")
    (tmp_path / "sub").mkdir()
    before = snapshot(tmp_path)
    assert "is the input --mail" in error_line(replay(mail, dns, "--out", tmp_path / "link.jsonl"))
    assert "is the input --dns" in error_line(replay(mail, dns, "--out", tmp_path / "hard.jsonl"))
    assert "is the input --mail" in error_line(replay(mail, dns, "--out",
                                                      tmp_path / "sub" / ".." / "mail.jsonl"))
    assert snapshot(tmp_path) == before


def test_two_outputs_on_one_file_are_refused(tmp_path, logs):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b'{"previous": "run"}\n')
    for other in ("--dead-letter", "--state"):
        line = error_line(replay(*logs, "--out", out, other, out))
        assert line == (f"detector: error: {other} {out} is the same file as --out {out}: "
                        "give each output its own file")
    assert out.read_bytes() == b'{"previous": "run"}\n'


def test_the_config_file_is_an_input_too(tmp_path, logs):
    config = tmp_path / "detector.toml"
    config.write_text("[alerts]\nopen_score = 7.0\n")
    line = error_line(replay(*logs, "--config", config, "--out", config))
    assert "is the input --config" in line
    assert config.read_text() == "[alerts]\nopen_score = 7.0\n"


def test_a_failed_run_leaves_the_previous_output_whole(tmp_path, logs):
    mail, dns = logs
    out, dead = tmp_path / "out.jsonl", tmp_path / "dead.jsonl"
    done = replay(mail, dns, "--out", out, "--dead-letter", dead)
    assert done.returncode == 0
    previous = out.read_bytes(), dead.read_bytes()
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(mail.read_bytes())[:-200])
    done = replay(broken, dns, "--out", out, "--dead-letter", dead)
    assert done.returncode == 3
    assert (out.read_bytes(), dead.read_bytes()) == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "broken.jsonl.gz", "dead.jsonl", "dns.jsonl", "mail.jsonl", "out.jsonl"]  # no temp left


def test_an_output_keeps_its_mode_when_replaced(tmp_path, logs):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"old\n")
    out.chmod(0o640)
    assert replay(*logs, "--out", out).returncode == 0
    assert out.stat().st_mode & 0o777 == 0o640 and out.read_bytes() != b"old\n"


@pytest.mark.parametrize("content,words", [
    (b"garbage\x00\xff", "not a detector state file (not JSON)"),
    (b'{"not": "a state"}', "not a detector state file (no 'detector' object in it)"),
    (b'{"detector": {"version": 1}}', f"state version 1, this detector reads version {STATE_VERSION}"),
    (b'{"detector": {"version": %d, "clock": {}}}' % STATE_VERSION, "damaged detector state"),
    (b'[1, 2, 3]', "not a detector state file"),
])
def test_a_bad_state_file_is_one_line_and_is_not_overwritten(tmp_path, logs, content, words):
    state, out = tmp_path / "replay.state", tmp_path / "out.jsonl"
    state.write_bytes(content)
    out.write_bytes(b"previous\n")
    started = time.monotonic()
    line = error_line(replay(*logs, "--out", out, "--state", state))
    assert line.startswith(f"detector: error: --state {state}: ") and words in line
    assert state.read_bytes() == content and out.read_bytes() == b"previous\n"
    assert time.monotonic() - started < 30


def test_a_state_file_carries_a_replay_over_and_is_replaced_whole(tmp_path, logs):
    state = tmp_path / "replay.state"
    assert replay(*logs, "--out", tmp_path / "a.jsonl", "--state", state).returncode == 0
    saved = orjson.loads(state.read_bytes())
    assert saved["detector"]["version"] == STATE_VERSION
    again = replay(*logs, "--out", tmp_path / "b.jsonl", "--state", state)
    # The same lines again: all behind the saved watermark (late) or seen (duplicates).
    assert b"600 lines read: 0 accepted" in again.stderr


# ---------------------------------------------------------------- compressed and odd input

def big_mail(lines: int = 20_000) -> bytes:
    return b"".join(mail_line(i // 10, f"m{i}") + b"\n" for i in range(lines))


def test_a_truncated_gzip_names_the_file_and_how_far_it_got(tmp_path, logs):
    _, dns = logs
    whole = big_mail()
    cut = tmp_path / "mail.jsonl.gz"
    packed = gzip.compress(whole)
    cut.write_bytes(packed[: len(packed) // 2])
    decompressor = __import__("zlib").decompressobj(31)
    readable = decompressor.decompress(cut.read_bytes())
    lines = readable.count(b"\n")
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"previous\n")
    done = replay(cut, dns, "--out", out)
    err = stderr_of(done)
    assert done.returncode == 3
    assert err.strip().splitlines()[-1] == (
        f"detector: error: {cut}: truncated gzip after {lines:,} lines; the summary above is of "
        "what was read, and no output file was replaced")
    assert f"mail: {lines:,} lines read" in err                       # the summary, first
    assert out.read_bytes() == b"previous\n"


def test_trailing_garbage_after_a_gzip_file_is_reported_after_every_line_was_read(tmp_path, logs):
    _, dns = logs
    path = tmp_path / "mail.jsonl.gz"
    path.write_bytes(gzip.compress(big_mail(3000)) + b"this is not gzip")
    done = replay(path, dns, "--out", tmp_path / "out.jsonl")
    err = stderr_of(done)
    assert done.returncode == 3
    assert f"{path}: trailing garbage (not gzip data) after 3,000 lines" in err
    assert "mail: 3,000 lines read: 3,000 accepted" in err


def test_corrupt_gzip_data_is_named_as_such_after_the_lines_before_it(tmp_path, logs):
    # A second gzip member whose first deflate block has the reserved block type (the inflater
    # refuses it), and one whose data was damaged (its CRC check fails at its end).
    _, dns = logs
    broken = bytearray(gzip.compress(big_mail(100)))
    broken[10] = 0xFF
    damaged = bytearray(gzip.compress(big_mail(20_000)))
    middle = len(damaged) // 2
    damaged[middle:middle + 8] = bytes(b ^ 0xFF for b in damaged[middle:middle + 8])
    for second, what in ((broken, "corrupt gzip data"),
                         (damaged, "corrupt gzip data (a CRC or length check failed)")):
        path = tmp_path / "mail.jsonl.gz"
        path.write_bytes(gzip.compress(big_mail(3000)) + bytes(second))
        done = replay(path, dns, "--out", tmp_path / "out.jsonl")
        err = stderr_of(done)
        assert done.returncode == 3
        assert f"detector: error: {path}: {what} after " in err
        assert "trailing garbage" not in err


def test_gzip_on_standard_input_is_recognised_by_its_magic_bytes(tmp_path, logs):
    mail, dns = logs
    plain = replay(mail, dns, "--out", tmp_path / "plain.jsonl")
    piped = replay("-", dns, "--out", tmp_path / "piped.jsonl", stdin=gzip.compress(mail.read_bytes()))
    assert plain.returncode == piped.returncode == 0
    assert b"mail: 600 lines read: 600 accepted, 0 rejected" in piped.stderr
    renamed = tmp_path / "mail.log"                       # no .gz suffix: the bytes decide
    renamed.write_bytes(gzip.compress(mail.read_bytes()))
    assert b"600 accepted" in replay(renamed, dns, "--out", tmp_path / "r.jsonl").stderr


def test_a_byte_order_mark_is_dropped(tmp_path, logs):
    mail, dns = logs
    mail.write_bytes(b"\xef\xbb\xbf" + mail.read_bytes())
    done = replay(mail, dns, "--out", tmp_path / "out.jsonl")
    assert b"mail: 600 lines read: 600 accepted, 0 rejected" in stderr_of(done).encode()


def test_the_summary_adds_up_per_stream_with_blank_lines_counted_and_late_once(tmp_path):
    mail, dns = tmp_path / "mail.jsonl", tmp_path / "dns.jsonl"
    mail.write_bytes(b"\n".join([
        *(mail_line(i, f"m{i}") for i in range(100)),        # 100 accepted
        b"", b"   ",                                          # 2 blank
        mail_line(5, "m5"),                                  # 1 duplicate
        mail_line(50, "p1", "pending"),                      # 1 not final
        orjson.dumps({"ts": T0 + 60, "message_id": "n1", "status": "delivered",
                      "category": "newsletter"}),             # 1 not OTP
        b"{oops", b"[1]",                                     # 2 rejected: not_json, not_object
        *(mail_line(200 + i, f"x{i}") for i in range(5000)),  # 5000 accepted, moves time on
        mail_line(10, "old"),                                 # 1 late
    ]) + b"\n")
    dns.write_bytes(b"\n".join([*(dns_line(i) for i in range(6000)), b"", b"{no",
                                orjson.dumps({"ts": T0, "qname": 7, "rcode": "NOERROR"})]) + b"\n")
    done = replay(mail, dns, "--out", tmp_path / "out.jsonl")
    err = stderr_of(done)
    assert done.returncode == 0
    assert ("mail: 5,108 lines read: 5,100 accepted, 3 rejected (late 1, not_json 1, not_object 1),"
            " 1 duplicates, 1 not final, 1 not OTP, 2 blank") in err
    assert ("dns: 6,003 lines read: 6,000 accepted, 2 rejected (not_json 1, wrong_type:qname 1),"
            " 1 blank") in err
    assert err.count("late") == 1


@pytest.mark.parametrize("case", ["all_rejected", "empty", "same_file", "swapped"])
def test_suspicious_inputs_exit_0_with_a_warning(tmp_path, logs, case):
    mail, dns = logs
    if case == "all_rejected":
        mail.write_bytes(b"not json\n" * 50)
        args, words = (mail, dns), f"{mail} (mail): every line was rejected (not_json 50)"
    elif case == "empty":
        mail.write_bytes(b"")
        args, words = (mail, dns), f"{mail} (mail): no records, the input is empty"
    elif case == "same_file":
        args, words = (mail, mail), f"{mail} is given as both the mail and the DNS input"
    else:
        args, words = (dns, mail), f"--mail {dns} holds dns records (qname, rcode): are --mail and --dns swapped?"
    done = replay(*args, "--out", tmp_path / "out.jsonl")
    assert done.returncode == 0
    assert f"detector: warning: {words}" in stderr_of(done)


@pytest.mark.parametrize("server,client,warned", [
    ("192.0.2.25", "10.1.2.3", True),              # a public address against an internal one
    ("mx1.example.net", "mx1.example.net", False),
    ("mx1", "10.1.2.3", False),                    # a name against an address: not compared
], ids=["named-differently", "named-alike", "name-and-address"])
def test_a_join_that_finds_answers_only_for_other_clients_says_how_to_fix_it(
        tmp_path, server, client, warned):
    mail, dns = tmp_path / "mail.jsonl", tmp_path / "dns.jsonl"
    mail.write_bytes(b"".join(orjson.dumps({**orjson.loads(mail_line(i, f"m{i}")),
                                            "server": server}) + b"\n"
                              for i in range(600)))
    dns.write_bytes(b"".join(orjson.dumps({**orjson.loads(dns_line(i)), "client": client})
                             + b"\n" for i in range(600)))
    done = replay(mail, dns, "--out", tmp_path / "out.jsonl")
    assert done.returncode == 0
    err = stderr_of(done)
    if warned:
        assert ("detector: warning: join: 600 lookups of 600 OTP deliveries found answers for"
                " their name in the join window, but only from other clients") in err
        assert "set join.match_client = false" in err
        fixed = replay(mail, dns, "--out", tmp_path / "out.jsonl",
                       env={"DETECTOR_JOIN_MATCH_CLIENT": "false"})
        assert fixed.returncode == 0 and "join.match_client" not in stderr_of(fixed)
    else:
        assert "join.match_client" not in err


# ---------------------------------------------------------------- generate, evaluate, convert

@pytest.mark.parametrize("hours", ["0", "-1", "nan"])
def test_generate_refuses_a_non_positive_length_before_creating_outdir(tmp_path, hours):
    outdir = tmp_path / "out"
    line = error_line(detector("generate", "seed-incident", outdir, "--hours", hours))
    assert line.startswith("detector: error: --hours must be a positive number of hours")
    assert not outdir.exists()


def test_generate_into_a_place_it_cannot_write_is_one_line():
    line = error_line(detector("generate", "seed-incident", "/proc/otp-detector-gen", "--hours",
                               "0.1"))
    assert "OUTDIR /proc/otp-detector-gen" in line


@pytest.fixture
def scored(tmp_path):
    """A truth file and an anomalies file that scores against it."""
    truth, anomalies = tmp_path / "truth.json", tmp_path / "anomalies.jsonl"
    truth.write_bytes(orjson.dumps({"incidents": [{"outcome": "SERVFAIL",
                                                   "start": "2026-11-27T10:00:00Z",
                                                   "end": "2026-11-27T10:40:00Z"}],
                                    "decoys": []}, option=orjson.OPT_INDENT_2))
    anomalies.write_bytes(orjson.dumps({"id": "servfail-1", "state": "open",
                                        "key": {"outcome": "SERVFAIL"},
                                        "detected_at": "2026-11-27T10:00:25Z"}) + b"\n")
    return anomalies, truth


def test_evaluate_scores_a_good_pair(scored):
    done = detector("evaluate", *scored)
    assert done.returncode == 0 and b"recall 100%" in done.stdout


@pytest.mark.parametrize("case,words", [
    ("swapped", "ANOMALIES {truth} is a truth file (it has 'incidents'): are ANOMALIES and TRUTH "
                "swapped?"),
    ("empty_truth", "TRUTH {empty}: the file is empty"),
    ("garbage_anomalies", "ANOMALIES {garbage}: line 2 is not JSON"),
    ("records_as_anomalies", "ANOMALIES {records}: line 1 is not an anomaly event (no 'state' "
                             "and 'detected_at')"),
    ("garbage_truth", "TRUTH {junk}: not JSON"),
    ("bad_time", "TRUTH {bad_truth}: incident 1: 'start' 'yesterday' is not an RFC 3339 time"),
    ("anomalies_as_truth", "TRUTH {anomalies} holds anomaly events: are ANOMALIES and TRUTH "
                           "swapped?"),
])
def test_evaluate_with_files_it_cannot_score_is_one_line(tmp_path, scored, case, words):
    anomalies, truth = scored
    files = {"truth": truth, "anomalies": anomalies, "empty": tmp_path / "empty.json",
             "garbage": tmp_path / "garbage.jsonl", "records": tmp_path / "records.jsonl",
             "bad_truth": tmp_path / "bad_truth.json", "junk": tmp_path / "junk.bin"}
    files["empty"].write_bytes(b"")
    files["junk"].write_bytes(bytes(range(256)))
    files["garbage"].write_bytes(b'{"state": "open", "detected_at": "2026-11-27T10:00:00Z"}\n'
                                 b"\x00\x01garbage\n")
    files["records"].write_bytes(mail_line(0, "m1") + b"\n")
    files["bad_truth"].write_bytes(b'{"incidents": [{"outcome": "SERVFAIL", "start": '
                                   b'"yesterday", "end": "2026-11-27T10:40:00Z"}]}')
    args = {"swapped": (truth, anomalies), "empty_truth": (anomalies, files["empty"]),
            "garbage_anomalies": (files["garbage"], truth),
            "records_as_anomalies": (files["records"], truth),
            "garbage_truth": (anomalies, files["junk"]),
            "bad_time": (anomalies, files["bad_truth"]),
            "anomalies_as_truth": (anomalies, anomalies)}[case]
    line = error_line(detector("evaluate", *args))
    assert line == "detector: error: " + words.format(**files)


def test_convert_summarises_rejections_by_reason_with_a_few_examples(tmp_path, logs):
    mail, _ = logs
    done = detector("convert", "--format", "postfix", mail)
    lines = stderr_of(done).strip().splitlines()
    assert done.returncode == 0 and done.stdout == b""
    assert lines == ["0 records, 0 lines skipped, rejected 600: not_postfix 600; first: "
                     "line 1 (not_postfix), line 2 (not_postfix), line 3 (not_postfix), "
                     "line 4 (not_postfix), line 5 (not_postfix)"]


def test_convert_auto_says_when_no_format_was_recognised(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("shopping list\neggs\nflour\n")
    line = error_line(detector("convert", "--format", "auto-dns", path))
    assert line.startswith(f"detector: error: {path}: no dns log format recognised (best scores: ")


def test_convert_auto_says_when_the_file_is_already_contract_json(logs):
    mail, _ = logs
    line = error_line(detector("convert", "--format", "auto-mail", mail))
    assert "is already in the contract's JSON form (scores: json 1.00" in line


# ---------------------------------------------------------------- click's own usage errors

@pytest.mark.parametrize("args,words", [
    (["replay", "--dns", "x", "--out", "y"], "detector replay: Missing option '--mail'"),
    (["nonsense"], "No such command 'nonsense'"),
    (["broker", "--port", "many"], "'many' is not a valid integer"),
    (["evaluate", "/", "/"], "detector evaluate: Invalid value for 'ANOMALIES': File '/' is a "
                            "directory"),
])
def test_a_usage_error_is_one_line(args, words):
    line = error_line(detector(*args))
    assert words in line


# ---------------------------------------------------------------- the broker, produce, the worker

def listening_socket() -> socket.socket:
    """A loopback port something already listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def a_closed_port() -> int:
    from detector.io.broker import free_port

    return free_port()


def test_broker_on_a_port_in_use_says_so():
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        line = error_line(detector("broker", "--port", port))
    assert line == (f"detector: error: --port: port {port} on 127.0.0.1 is already in use "
                    "(another broker?)")


@pytest.mark.parametrize("port", ["70000", "0", "-5"])
def test_broker_on_a_port_out_of_range_says_so(port):
    assert error_line(detector("broker", "--port", port)) == (
        f"detector: error: --port: port {port} is out of range (1 to 65535)")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_broker_command_takes_the_broker_process_with_it():
    port = a_closed_port()
    command = subprocess.Popen([*DETECTOR, "broker", "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    try:
        assert command.stdout.readline().strip() == f"127.0.0.1:{port}".encode()
        children = children_of(command.pid)
        assert children, "the broker runs as a child process"
        command.kill()
        command.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(alive(child) for child in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(child) for child in children)
        with socket.socket() as probe:                      # and the port is free again
            probe.bind(("127.0.0.1", port))
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()


def test_produce_with_no_broker_says_so_at_once_and_sends_nothing(logs):
    mail, _ = logs
    port = a_closed_port()
    started = time.monotonic()
    line = error_line(detector("produce", "--bootstrap-servers", f"127.0.0.1:{port}", "--topic",
                               "mail-flow", mail))
    assert line == (f"detector: error: cannot reach the broker at 127.0.0.1:{port} "
                    f"(127.0.0.1:{port}: Connection refused); nothing was sent")
    assert time.monotonic() - started < 15


@pytest.mark.parametrize("args,words", [
    (["--topic", "bad topic"], "--topic 'bad topic' is not a valid topic name"),
    (["--topic", "."], "--topic '.' is not a valid topic name"),
    (["--topic", "t", "--speed", "0"], "--speed must be a positive multiple of real time, got 0"),
    (["--topic", "t", "--speed", "-2"], "--speed must be a positive multiple of real time, got -2"),
    (["--topic", "t", "--bootstrap-servers", "kafka"], "bootstrap server 'kafka' is not HOST:PORT"),
])
def test_produce_refuses_bad_arguments_before_connecting(logs, args, words):
    line = error_line(detector("produce", *args, logs[0]))
    assert words in line


@pytest.mark.kafka
def test_produce_in_a_format_that_does_not_fit_reports_what_it_rejected(broker, logs):
    from conftest import read_topic

    mail, _ = logs
    topic = f"wrong-format-{os.getpid()}-{time.monotonic_ns()}"
    done = detector("produce", "--bootstrap-servers", broker.bootstrap, "--topic", topic,
                    "--format", "postfix", mail)
    err = stderr_of(done).strip().splitlines()
    assert done.returncode == 0
    assert err[0].startswith(f"produced 0 records to {topic} (postfix); rejected 600: "
                             "not_postfix 600; first: line 1 (not_postfix)")
    assert err[1] == f"detector: warning: no line of {mail} was postfix: nothing was sent"
    assert read_topic(broker.bootstrap, topic, idle_s=1.0, timeout=5) == []


@pytest.mark.kafka
def test_produce_of_a_truncated_gzip_says_how_many_records_it_sent(broker, tmp_path):
    from conftest import read_topic

    cut = tmp_path / "mail.jsonl.gz"
    packed = gzip.compress(big_mail(8000))
    cut.write_bytes(packed[: len(packed) // 2])
    sent = __import__("zlib").decompressobj(31).decompress(cut.read_bytes()).count(b"\n")
    topic = f"truncated-{os.getpid()}-{time.monotonic_ns()}"
    done = detector("produce", "--bootstrap-servers", broker.bootstrap, "--topic", topic, cut)
    line = error_line(done, status=3)
    assert line == (f"detector: error: {cut}: truncated gzip after {sent:,} lines; {sent:,} records "
                    f"were sent to {topic} before that (a re-run sends them again)")
    assert len(read_topic(broker.bootstrap, topic, idle_s=1.5, timeout=30)) == sent


def test_the_worker_with_a_metrics_port_in_use_is_one_line(tmp_path):
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        line = error_line(detector("run", "--bootstrap-servers", f"127.0.0.1:{a_closed_port()}",
                                   "--metrics-port", port))
    assert line == (f"detector: error: --metrics-port {port}: cannot serve metrics on "
                    f"127.0.0.1:{port}: Address already in use")


@pytest.mark.parametrize("port,words", [
    ("70000", "worker.metrics_port: input should be less than or equal to 65535, got 70000"),
    ("-1", "worker.metrics_port: input should be greater than or equal to 0, got -1"),
])
def test_the_worker_with_a_metrics_port_out_of_range_is_one_line(port, words):
    line = error_line(detector("run", "--bootstrap-servers", "127.0.0.1:9", "--metrics-port", port))
    assert words in line


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_worker_says_at_once_that_the_broker_is_unreachable_and_a_signal_ends_it(tmp_path,
                                                                                    sig):
    port = a_closed_port()
    log = tmp_path / "worker.log"
    with open(log, "wb") as output:
        worker = subprocess.Popen([*DETECTOR, "run", "--bootstrap-servers", f"127.0.0.1:{port}"],
                                  stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 20
        while b"broker unreachable" not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        first = [orjson.loads(line) for line in log.read_bytes().splitlines()
                 if b"broker unreachable" in line]
        assert first and first[0]["error"] == f"127.0.0.1:{port}: Connection refused"
        assert first[0]["level"] == "WARNING"
        worker.send_signal(sig)
        sent = time.monotonic()
        assert worker.wait(timeout=10) == 0
        assert time.monotonic() - sent < 2.5
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


# ---------------------------------------------------------------- one configuration for every command

def test_replay_accepts_the_readme_sample_configuration(tmp_path, logs):
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    config = tmp_path / "detector.toml"
    config.write_text(readme.split("```toml\n", 1)[1].split("```", 1)[0])
    done = replay(*logs, "--config", config, "--out", tmp_path / "out.jsonl")
    assert done.returncode == 0, done.stderr


def late_input(tmp_path) -> tuple[Path, Path]:
    mail, dns = tmp_path / "mail.jsonl", tmp_path / "dns.jsonl"
    mail.write_bytes(b"".join(mail_line(i, f"m{i}") + b"\n" for i in range(0, 3000, 3))
                     + mail_line(10, "old") + b"\n")
    dns.write_bytes(b"".join(dns_line(i) + b"\n" for i in range(0, 3000, 3)))
    return mail, dns


def test_replay_reads_the_environment_as_the_worker_does(tmp_path):
    mail, dns = late_input(tmp_path)
    out = tmp_path / "out.jsonl"
    plain = replay(mail, dns, "--out", out)
    assert b"1,001 lines read: 1,000 accepted, 1 rejected (late 1)" in plain.stderr
    lenient = replay(mail, dns, "--out", out, env={"DETECTOR_CLOCK_ALLOWED_LATENESS_S": "5000"})
    assert b"1,001 lines read: 1,001 accepted, 0 rejected" in lenient.stderr
    config = tmp_path / "lenient.toml"
    config.write_text("[clock]\nallowed_lateness_s = 5000\n")
    from_file = replay(mail, dns, "--out", out, "--config", config)
    assert b"1,001 accepted, 0 rejected" in from_file.stderr
    overridden = replay(mail, dns, "--out", out, "--config", config,
                        env={"DETECTOR_CLOCK_ALLOWED_LATENESS_S": "10"})   # env beats the file
    assert b"1,000 accepted, 1 rejected (late 1)" in overridden.stderr


def test_a_misspelt_environment_variable_is_a_warning(tmp_path, logs):
    done = replay(*logs, "--out", tmp_path / "out.jsonl", env={"DETECTOR_MODEL_BUCKETS": "30"})
    assert done.returncode == 0
    assert stderr_of(done).splitlines()[0] == (
        "detector: warning: unknown environment variable DETECTOR_MODEL_BUCKETS: ignored "
        "(did you mean DETECTOR_MODEL_BUCKET_S?)")


BAD_VALUES = [
    ("[model]\nbucket_s = 0\n", "model.bucket_s: must be greater than 0, got 0"),
    ("[model]\nhalf_life_s = 0\n", "model.half_life_s: must be greater than 0, got 0.0"),
    ('[alerts]\nopen_score = "inf"\n', "alerts.open_score: input should be a finite number, "
                                       "got 'inf'"),
    ("[alerts]\nopen_score = nan\n", "alerts.open_score: input should be a finite number"),
    ("[model]\nbucket_s = 61\n", "model.bucket_s (61) must be a multiple of model.step_s (10)"),
    ("[kafak]\n", "unknown table [kafak] (known: kafka, topics, worker, clock, join, otp, model, "
                  "alerts"),
    ("[model]\nbuckets = 3\n", "unknown key model.buckets (known: "),
    ("[clock]\nallowed_lateness_s = -5\n", "clock.allowed_lateness_s: input should be greater "
                                           "than or equal to 0, got -5"),

]


@pytest.mark.parametrize("command,text,words", [
    *(("replay", text, words) for text, words in BAD_VALUES),      # every value with replay,
    *(("run", text, words) for text, words in BAD_VALUES[::4]),    # and the same checks in the
    *(("produce", text, words) for text, words in BAD_VALUES[1::4]),  # other commands
])
def test_a_bad_value_is_one_line_naming_the_key_and_the_rule_in_every_command(
        tmp_path, logs, command, text, words):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    args = {"replay": ["replay", "--mail", logs[0], "--dns", logs[1], "--out", tmp_path / "o"],
            "run": ["run", "--bootstrap-servers", "127.0.0.1:9"],
            "produce": ["produce", "--topic", "t", logs[0]]}[command]
    line = error_line(detector(*args, "--config", config))
    assert words in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("variable,value,words", [
    ("DETECTOR_ALERTS_OPEN_SCORE", "inf", "alerts.open_score: input should be a finite number, "
                                          "got 'inf' (from DETECTOR_ALERTS_OPEN_SCORE)"),
    ("DETECTOR_MODEL_BUCKET_S", "0", "model.bucket_s: must be greater than 0"),
    ("DETECTOR_KAFKA_TRANSPORT", "librdkafka", "kafka.transport: input should be 'confluent' or "
                                               "'kafka-python'"),
])
def test_a_bad_environment_value_is_one_line_naming_the_variable(tmp_path, logs, variable, value,
                                                                 words):
    line = error_line(replay(*logs, "--out", tmp_path / "o", env={variable: value}))
    assert words in line


@pytest.mark.parametrize("content,words", [
    (bytes(range(256)) * 4, "is not UTF-8 text (a binary file?)"),
    (b"[model\nbucket_s = 60\n", "Expected ']'"),
    (None, "is a directory"),
])
def test_a_config_file_that_is_not_toml_is_one_line(tmp_path, logs, content, words):
    config = tmp_path / "detector.toml"
    if content is None:
        config.mkdir()
    else:
        config.write_bytes(content)
    line = error_line(replay(*logs, "--config", config, "--out", tmp_path / "o"))
    assert words in line and str(config) in line


# ---------------------------------------------------------------- replay and worker agree

def test_replay_rejects_records_ahead_of_the_wall_clock_as_the_worker_does(tmp_path, logs):
    """The worker rejects a record more than max_future_skew_s ahead of its clock (future_ts);
    a replay of the same lines does the same, even when no record is ahead of its batch."""
    _, dns = logs
    mail = tmp_path / "ahead.jsonl"
    start = time.time() + 3600
    mail.write_bytes(b"".join(orjson.dumps({"ts": start + i, "message_id": f"a{i}",
                                            "status": "delivered", "category": "otp"}) + b"\n"
                              for i in range(100)))
    dead = tmp_path / "dead.jsonl"
    done = replay(mail, dns, "--out", tmp_path / "out.jsonl", "--dead-letter", dead)
    assert b"100 lines read: 0 accepted, 100 rejected (future_ts 100)" in done.stderr
    assert len(dead.read_bytes().splitlines()) == 100


# ---------------------------------------------------------------- further bad inputs found

def _bzip2(data: bytes) -> bytes:
    import bz2

    return bz2.compress(data)


def _xz(data: bytes) -> bytes:
    import lzma

    return lzma.compress(data)


#: (what, how to make the bad file from a good mail file, the command's arguments with {bad},
#: {mail}, {dns}, {out}, {tmp}, the exit status, the words of the one stderr line, or of the
#: warning when the status is 0)
FURTHER = [
    ("bzip2 input", _bzip2, ["replay", "--mail", "{bad}", "--dns", "{dns}", "--out", "{out}"], 2,
     "{bad} is bzip2-compressed, which the detector does not read"),
    ("xz input", _xz, ["replay", "--mail", "{bad}", "--dns", "{dns}", "--out", "{out}"], 2,
     "{bad} is xz-compressed, which the detector does not read"),
    ("UTF-16 input", lambda d: d.decode().encode("utf-16"),
     ["replay", "--mail", "{bad}", "--dns", "{dns}", "--out", "{out}"], 2, "{bad} is UTF-16 text"),
    ("gzip magic, then garbage", lambda d: b"\x1f\x8b" + b"garbage" * 10,
     ["replay", "--mail", "{bad}", "--dns", "{dns}", "--out", "{out}"], 2,
     "{bad} starts like gzip but is not readable gzip data"),
    ("an input that is a directory", None,
     ["replay", "--mail", "{tmp}", "--dns", "{dns}", "--out", "{out}"], 2,
     "is a directory, not a file: {tmp}"),
    ("standard input twice", None, ["replay", "--mail", "-", "--dns", "-", "--out", "{out}"], 2,
     "standard input (-) can be given only once"),
    ("--out and --dead-letter both standard output", None,
     ["replay", "--mail", "{mail}", "--dns", "{dns}", "--out", "-", "--dead-letter", "-"], 2,
     "--dead-letter - is the same file as --out -"),
    ("a missing config file", None,
     ["replay", "--mail", "{mail}", "--dns", "{dns}", "--out", "{out}", "--config",
      "{tmp}/none.toml"], 2, "config file not found: {tmp}/none.toml"),
    ("--state is the config file", None,
     ["replay", "--mail", "{mail}", "--dns", "{dns}", "--out", "{out}", "--config", "{bad}",
      "--state", "{bad}"], 2, "--state {bad} is the input --config {bad}"),
    ("binary garbage as mail", lambda d: bytes(range(1, 256)) * 40,
     ["replay", "--mail", "{bad}", "--dns", "{dns}", "--out", "{out}"], 0,
     "{bad} (mail): every line was rejected"),
    ("blank lines only", lambda d: b"\n \n\t\n",
     ["replay", "--mail", "{bad}", "--dns", "{dns}", "--out", "{out}"], 0,
     "{bad} (mail): no records, the input is empty (3 blank lines)"),
    ("a format auto cannot recognise", lambda d: b"shopping list\neggs\n",
     ["replay", "--mail", "{bad}", "--dns", "{dns}", "--out", "{out}", "--mail-format", "auto"],
     0, "{bad}: no mail log format recognised; read as the contract's JSON"),
    ("convert of bzip2", _bzip2, ["convert", "--format", "postfix", "{bad}"], 2,
     "{bad} is bzip2-compressed"),
    ("produce of UTF-16", lambda d: d.decode().encode("utf-16"),
     ["produce", "--topic", "t", "--bootstrap-servers", "127.0.0.1:9", "{bad}"], 2,
     "{bad} is UTF-16 text"),
    ("evaluate of a truncated gzip", lambda d: gzip.compress(d)[:-30],
     ["evaluate", "{bad}", "{mail}"], 2, "ANOMALIES {bad}: cannot read"),
    ("an unknown scenario", None, ["generate", "no-such", "{tmp}/gen"], 2,
     "unknown scenario 'no-such'"),
    ("run --from a bad time", None,
     ["run", "--bootstrap-servers", "127.0.0.1:9", "--from", "yesterday"], 2,
     "worker.start_from: must be earliest, latest, committed or an RFC 3339 time"),
    ("run --log-format xml", None,
     ["run", "--bootstrap-servers", "127.0.0.1:9", "--log-format", "xml"], 2,
     "Invalid value for '--log-format'"),
    ("an output under a file", None,
     ["replay", "--mail", "{mail}", "--dns", "{dns}", "--out", "{mail}/out.jsonl"], 2,
     "--out {mail}/out.jsonl: Not a directory"),
]


@pytest.mark.parametrize("what,make,args,status,words", FURTHER, ids=[row[0] for row in FURTHER])
def test_further_bad_inputs(tmp_path, logs, what, make, args, status, words):
    mail, dns = logs
    bad = tmp_path / "bad.input"
    bad.write_bytes(make(mail.read_bytes()) if make else b"[alerts]\nopen_score = 7.0\n")
    names = {"bad": bad, "mail": mail, "dns": dns, "out": tmp_path / "out.jsonl", "tmp": tmp_path}
    before = snapshot(tmp_path)
    done = detector(*(arg.format(**names) for arg in args))
    if status == 0:
        assert done.returncode == 0, done.stderr
        assert f"detector: warning: {words.format(**names)}" in stderr_of(done)
    else:
        assert words.format(**names) in error_line(done, status)
        assert snapshot(tmp_path) == before                # nothing written, nothing changed
