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
    (b'{"detector": {"version": 1}}', "state version 1, this detector reads version 2"),
    (b'{"detector": {"version": 2, "clock": {}}}', "damaged detector state"),
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
    assert saved["detector"]["version"] == 2
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
        "what was read, and no output was written")
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
